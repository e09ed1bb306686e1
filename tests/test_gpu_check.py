"""bench/gpu_check runs end to end in Numba's CUDA simulator (tiny sizes), so
the script that a GPU session runs once cannot rot unseen."""

import json
import os
import subprocess
import sys

from conftest import ROOT, SHARED, _need


def test_gpu_check_in_simulator(tmp_path):
    _need(SHARED)
    env = dict(os.environ, OUT=str(tmp_path), GPUCURATE_SHARED_DATA=str(SHARED))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check"), "--sim",
                        "--data", str(SHARED)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.load(open(tmp_path / "gpu_check.json"))
    assert res["identical"] is True
    assert all(v.get("identical", True) and v.get("curated_identical", True)
               for v in res["checks"].values())
    assert [t["captions"] for t in res["timings"]] == [300, 900]
    assert res["timings"][1]["tiled"] is True
    assert "identical (GPU == CPU): YES" in r.stdout
