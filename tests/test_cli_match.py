"""``python -m gpucurate match``: the output contract, on real captions."""

import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import ROOT, caption_file
from pool import real_rows, write_jsonl


def test_match_command_contract(tmp_path, metadata_path, ac_reference):
    table = real_rows("html_img_alttext", 3000, step=17).select(["text"])
    texts = table.column("text").to_pylist()
    texts[5] = None
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"caption": texts}), src)
    out = tmp_path / "m.parquet"
    r = subprocess.run([sys.executable, "-m", "gpucurate", "match", "--metadata",
                        str(metadata_path), "--input", str(src), "--out", str(out),
                        "--text-column", "caption", "--device", "auto"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "falling back to CPU" in r.stderr
    got = pq.read_table(out)
    assert got.column_names == ["entry_ids"]
    assert got.schema.field("entry_ids").type == pa.list_(pa.int32())
    assert got.column("entry_ids").to_pylist() == [ac_reference.match(t) for t in texts]


def test_match_jsonl_in_process(tmp_path, metadata_path, ac_reference):
    from gpucurate import cli

    table = real_rows("redcaps_explore_samples", 500, step=101).select(["text"])
    src = write_jsonl(table, str(tmp_path / "in.jsonl.gz"))
    out = str(tmp_path / "m.parquet")
    assert cli.main(["match", "--metadata", str(metadata_path), "--input", src, "--out", out,
                     "--device", "cpu", "--quiet"]) == 0
    assert pq.read_table(out).column("entry_ids").to_pylist() == \
        [ac_reference.match(t) for t in table.column("text").to_pylist()]
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
    assert caption_file("redcaps_explore_samples")
