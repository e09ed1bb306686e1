"""Pools as users keep them: img2dataset / DataComp download folders, the
caption column's name, WebDataset tars (plain and compressed)."""

import gzip
import io
import json
import logging
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpucurate.errors import InputError
from gpucurate.pipeline import curate


@pytest.fixture()
def meta(tmp_path):
    p = tmp_path / "meta.json"
    p.write_text(json.dumps(["dog", "cat", "hot dog", "car"]))
    return str(p)


CAPS = ["a dog on grass", "a cat", "hot dog stand", "a red car", "nothing here", "dog and cat"]


def _tar(path, rows, gz=False):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for key, cap, status in rows:
            if status != "success":
                continue
            for ext, data in (("jpg", os.urandom(300)), ("txt", cap.encode()),
                              ("json", json.dumps({"key": key, "caption": cap}).encode())):
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if gz else data)


def _download_folder(root, n_shards=2):
    """NNNNN.tar + NNNNN.parquet + NNNNN_stats.json, as img2dataset writes."""
    os.makedirs(root, exist_ok=True)
    rows_all = []
    for s in range(n_shards):
        rows = []
        for i, cap in enumerate(CAPS):
            key = f"{s:05d}{i:04d}"
            status = "success" if i != 4 else "failed_to_download"
            rows.append((key, cap, status))
        _tar(os.path.join(root, f"{s:05d}.tar"), rows)
        pq.write_table(pa.table({
            "key": [r[0] for r in rows], "caption": [r[1] if r[2] == "success" else None
                                                     for r in rows],
            "url": [f"http://x/{r[0]}.jpg" for r in rows], "status": [r[2] for r in rows],
            "width": [64] * len(rows), "height": [48] * len(rows)}),
            os.path.join(root, f"{s:05d}.parquet"))
        with open(os.path.join(root, f"{s:05d}_stats.json"), "w") as f:
            json.dump({"count": len(rows)}, f)
        rows_all += rows
    return rows_all


def test_download_folder_reads_each_sample_once_from_the_parquet(meta, tmp_path):
    rows = _download_folder(tmp_path / "dl")
    s = curate(meta, [str(tmp_path / "dl")], str(tmp_path / "o"), t=1000, key_column="key",
               device="cpu", report=False)
    ok = [r for r in rows if r[2] == "success"]
    assert s["pool"] == len(ok) and s["failed_downloads"] == len(rows) - len(ok)
    t = pq.read_table(tmp_path / "o" / "curated")
    assert "caption" in t.column_names and "url" in t.column_names  # the sidecar's columns
    assert sorted(t.column("key").to_pylist()) == sorted(r[0] for r in ok if r[1] != CAPS[4])
    # the same captions from the tars alone (.txt captions, keys from __key__) match alike
    tars = [str(p) for p in sorted((tmp_path / "dl").glob("*.tar"))]
    s2 = curate(meta, tars, str(tmp_path / "o2"), t=1000, device="cpu", report=False)
    assert s2["pool"] == len(ok) and s2["matched"] == s["matched"]


def test_caption_column_is_found_and_logged(meta, tmp_path, caplog):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"caption": CAPS}), p)
    log = logging.getLogger("gpucurate")  # may not propagate (the CLI's own handler)
    log.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="gpucurate"):
            s = curate(meta, [str(p)], str(tmp_path / "o"), t=1000, device="cpu", report=False)
    finally:
        log.removeHandler(caplog.handler)
    assert s["matched"] == 5 and "caption column: caption" in caplog.text
    q = tmp_path / "b.parquet"
    pq.write_table(pa.table({"alt": CAPS}), q)
    with pytest.raises(InputError, match=r"no column 'text' or 'caption' \(columns: alt\)"):
        curate(meta, [str(q)], str(tmp_path / "o2"), t=1000, device="cpu", report=False)


@pytest.mark.parametrize("gz,name", [(False, "x.tar"), (True, "x.tar.gz"), (True, "x.tgz"),
                                     (True, "y.tar")])
def test_tar_compression_by_magic_bytes(meta, tmp_path, gz, name):
    rows = [(f"k{i}", c, "success") for i, c in enumerate(CAPS)]
    _tar(tmp_path / name, rows, gz=gz)
    s = curate(meta, [str(tmp_path / name)], str(tmp_path / "o"), t=1000, device="cpu",
               report=False)
    assert s["pool"] == len(CAPS) and s["matched"] == 5
