"""The benchmark harness runs (smoke configuration) and records what it must."""

import glob
import json
import os
import subprocess
import sys

from conftest import ROOT


def test_bench_smoke(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--impls", "reference,cpu",
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    [js] = glob.glob(str(tmp_path / "*.json"))
    res = json.load(open(js))
    for key in ("date", "commit", "command", "machine", "versions", "trie", "scaling", "curate"):
        assert key in res
    assert res["command"].startswith("python -m bench --smoke")
    impls = {r["impl"] for r in res["scaling"]}
    assert {"cpu", "reference"} <= impls
    for r in res["scaling"] + res["real"]:
        assert r["captions_per_s"] > 0 and r["pairs"] >= 0
        if r["impl"] == "cpu":
            assert r["speedup_vs_reference"] is not None
    assert res["trie"][0]["build_s"] > 0 and res["trie"][0]["bytes"] > 0
    assert os.path.exists(js[:-5] + ".md") and os.path.getsize(js[:-5] + ".png") > 1000
