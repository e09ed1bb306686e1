"""CUDA kernels in Numba's simulator, in a process of their own."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import ROOT, caption_file

HERE = os.path.dirname(__file__)


def test_kernels_in_simulator_equal_cpu_engine(tmp_path, metadata_entries, real_matcher):
    # A few hundred real captions; as metadata, every entry they match plus
    # every 50th entry (the simulator is slow; building 500k entries is not the point).
    rows = []
    for name in ("coco_captions_val2017", "html_img_alttext", "multi30k"):
        t = pq.read_table(caption_file(name), columns=["text"]).column("text").to_pylist()
        rows += t[:: max(1, len(t) // 100)][:100]
    hit = {e for ids in real_matcher.match(rows).to_pylist() for e in ids}
    keep = sorted(hit | set(range(0, len(metadata_entries), 50)))
    entries = [metadata_entries[i] for i in keep]
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(entries))
    caps = tmp_path / "caps.parquet"
    pq.write_table(pa.table({"text": rows}), caps)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=HERE)
    r = subprocess.run([sys.executable, os.path.join(HERE, "sim_match.py"), str(meta), str(caps),
                        str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SIM OK" in r.stdout
