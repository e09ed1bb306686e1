"""Inputs at URLs (s3://, http://; hf:// routing), outputs on s3://, brace
patterns. S3 is a real S3-compatible server on 127.0.0.1 (moto's server
mode, ``tests/s3server.py``) reached over HTTP through AWS_ENDPOINT_URL, and
http:// a ``http.server`` on 127.0.0.1: no client is mocked."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT
from pool import real_rows, write_jsonl, write_parquet_shards, write_tar
from s3server import list_keys, s3_server, upload_tree

pytest.importorskip("moto.server")
pytest.importorskip("boto3")

from gpucurate import curate  # noqa: E402
from gpucurate.errors import ConfigError, InputError  # noqa: E402
from gpucurate.io.fs import expand_braces, filesystem  # noqa: E402

BUCKET = "gpucurate-test"
KW = dict(t=3, device="cpu", threads=1, report=False, seed=5)


# ------------------------------------------------------------------ braces
def test_expand_braces():
    assert expand_braces("a/{00..03}.tar") == [f"a/{i:02d}.tar" for i in range(4)]
    assert expand_braces("{00000..00002}") == ["00000", "00001", "00002"]
    assert expand_braces("{8..11}") == ["8", "9", "10", "11"]
    assert expand_braces("{08..11}") == ["08", "09", "10", "11"]
    assert expand_braces("x{a,b{1..2}}y") == ["xay", "xb1y", "xb2y"]
    assert expand_braces("{a,b}{c,d}") == ["ac", "ad", "bc", "bd"]
    assert expand_braces("{0..6..3}") == ["0", "3", "6"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("{a}/{}/x{") == ["{a}/{}/x{"]
    assert expand_braces("s3://b/p/{0..1}-{x,y}.parquet") == [
        "s3://b/p/0-x.parquet", "s3://b/p/0-y.parquet", "s3://b/p/1-x.parquet",
        "s3://b/p/1-y.parquet"]
    assert expand_braces("plain/path") == ["plain/path"]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A pool of every format: two parquet shards, jsonl (gzip, zstd, plain), a tar."""
    root = tmp_path_factory.mktemp("pool")
    t = real_rows("coco_captions_val2017", 3000)
    write_parquet_shards(t.slice(0, 1600), root / "in", 2)
    os.makedirs(root / "in" / "sub")
    write_jsonl(t.slice(1600, 400), str(root / "in" / "sub" / "j.jsonl.gz"))
    write_jsonl(t.slice(2000, 300), str(root / "in" / "sub" / "p.jsonl"))
    write_jsonl(t.slice(2300, 300), str(root / "in" / "z.jsonl.zst"))
    write_tar(t.slice(2600, 400), str(root / "in" / "w.tar"))
    return root / "in"


@pytest.fixture(scope="module")
def s3(pool):
    with s3_server() as (endpoint, client):
        client.create_bucket(Bucket=BUCKET)
        upload_tree(client, str(pool), BUCKET, "pool")
        yield endpoint, client


def _rows(out):
    """Every curated row of a run, in part order, and the entry counts."""
    parts = sorted(os.listdir(os.path.join(out, "curated")))
    rows = [r for p in parts for r in pq.read_table(os.path.join(out, "curated", p)).to_pylist()]
    counts = pq.read_table(os.path.join(out, "entry_counts.parquet")).column("count").to_pylist()
    names = [json.load(open(os.path.join(out, "stats", f)))["shard"]
             for f in sorted(os.listdir(os.path.join(out, "stats")))]
    return rows, counts, names


def _download(client, prefix, dest):
    for key in list_keys(client, BUCKET, prefix):
        p = os.path.join(dest, *key[len(prefix):].split("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        client.download_file(BUCKET, key, p)
    return dest


# ------------------------------------------------------------------ s3 inputs
@pytest.mark.parametrize("key_column", [None, "id"])
def test_s3_pool_curates_as_on_disk(tmp_path, pool, s3, metadata_path, key_column):
    local = curate(str(metadata_path), [str(pool)], str(tmp_path / "local"),
                   key_column=key_column, **KW)
    remote = curate(str(metadata_path), [f"s3://{BUCKET}/pool/"], str(tmp_path / "s3"),
                    key_column=key_column, **KW)
    assert local["curated"] == remote["curated"] and 0 < local["curated"] < local["pool"]
    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "s3")
    assert a == b
    assert b[2] == ["part-00.parquet", "part-01.parquet", "sub/j.jsonl.gz", "sub/p.jsonl",
                    "w.tar", "z.jsonl.zst"]
    cfg = json.load(open(tmp_path / "s3" / "config.json"))
    ins = cfg["fingerprint_doc"]["inputs"]
    assert ins[0]["path"] == f"s3://{BUCKET}/pool/part-00.parquet" and ins[0]["size"] > 0


def test_s3_glob_and_braces(tmp_path, pool, s3, metadata_path):
    whole = curate(str(metadata_path), [f"s3://{BUCKET}/pool/part-*.parquet"],
                   str(tmp_path / "glob"), **KW)
    braces = curate(str(metadata_path), [f"s3://{BUCKET}/pool/part-{{00..01}}.parquet"],
                    str(tmp_path / "braces"), verify_inputs=True, **KW)
    ins = json.load(open(tmp_path / "braces" / "config.json"))["fingerprint_doc"]["inputs"]
    assert [len(d["sha256"]) for d in ins] == [64, 64]
    local = curate(str(metadata_path), [str(pool / "part-{00..01}.parquet")],
                   str(tmp_path / "local"), **KW)
    assert whole["shards"] == braces["shards"] == local["shards"] == 2
    assert _rows(tmp_path / "glob") == _rows(tmp_path / "braces") == _rows(tmp_path / "local")
    deep = curate(str(metadata_path), [f"s3://{BUCKET}/pool/**/*.jsonl.gz"],
                  str(tmp_path / "deep"), **KW)
    assert deep["shards"] == 1 and _rows(tmp_path / "deep")[2] == ["sub/j.jsonl.gz"]


def test_local_braces(tmp_path, pool, metadata_path):
    a = curate(str(metadata_path), [str(pool / "{part-00.parquet,part-01.parquet,w.tar}")],
               str(tmp_path / "a"), **KW)
    b = curate(str(metadata_path), [str(pool / "part-00.parquet"), str(pool / "part-01.parquet"),
                                    str(pool / "w.tar")], str(tmp_path / "b"), **KW)
    assert a["shards"] == 3 and _rows(tmp_path / "a") == _rows(tmp_path / "b")
    lit = tmp_path / "lit"
    os.makedirs(lit)
    shutil.copy(pool / "w.tar", lit / "{a,b}.tar")  # exists as written: no expansion
    assert curate(str(metadata_path), [str(lit / "{a,b}.tar")], str(tmp_path / "l"),
                  **KW)["shards"] == 1
    with pytest.raises(InputError, match="part-02.parquet does not exist"):
        curate(str(metadata_path), [str(pool / "part-{00..07}.parquet")], str(tmp_path / "c"),
               **KW)


def test_missing_object_and_bucket(tmp_path, s3, metadata_path):
    url = f"s3://{BUCKET}/pool/nothere.parquet"
    with pytest.raises(InputError, match=f"input {url} does not exist"):
        curate(str(metadata_path), [url], str(tmp_path / "o"), **KW)
    with pytest.raises(InputError, match="no-such-bucket"):
        curate(str(metadata_path), ["s3://no-such-bucket/pool/"], str(tmp_path / "o"), **KW)
    with pytest.raises(InputError, match=f"s3://{BUCKET}/empty holds no"):
        s3[1].put_object(Bucket=BUCKET, Key="empty/readme.txt", Body=b"x")
        curate(str(metadata_path), [f"s3://{BUCKET}/empty"], str(tmp_path / "o"), **KW)


# ------------------------------------------------------------------ s3 outputs
def test_s3_out_whole_and_same(tmp_path, pool, s3, metadata_path):
    """A run into s3:// in a process of its own while the test reads every
    object the moment it is listed: each is whole (parses), and a marker is
    never there without its data."""
    client = s3[1]
    out = f"s3://{BUCKET}/runs/a"
    cmd = [sys.executable, "-m", "gpucurate", "curate", "--metadata", str(metadata_path),
           "--input", str(pool), "--out", out, "--t", "3", "--device", "cpu", "--threads", "1",
           "--seed", "5", "--batch-bytes", "4000", "--quiet", "--no-report"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    seen: set = set()
    while True:
        running = p.poll() is None
        keys = list_keys(client, BUCKET, "runs/a/")
        for k in sorted(set(keys) - seen):
            body = client.get_object(Bucket=BUCKET, Key=k)["Body"].read()
            assert ".tmp-" not in k
            if k.endswith(".parquet"):
                pq.read_table(io.BytesIO(body))  # whole
            elif k.endswith(".json"):
                json.loads(body)
                rel = k[len("runs/a/"):]
                n = rel.rsplit("-", 1)[-1][:5] if "shard-" in rel else None
                if rel.startswith("stats/"):
                    assert f"runs/a/curated/part-{n}.parquet" in keys, k
                if rel.startswith("work/pass1/"):
                    assert f"runs/a/work/pass1/shard-{n}.parquet" in keys, k
            seen.add(k)
        if not running:
            break
        time.sleep(0.02)
    assert p.returncode == 0, p.stderr.read()
    keys = list_keys(client, BUCKET, "runs/")
    assert "runs/a/.lock" not in keys and "runs/a/summary.json" in keys
    assert not [k for k in keys if "/work/matches/" in k]  # removed after pass 2
    curate(str(metadata_path), [str(pool)], str(tmp_path / "local"), **KW)
    got = _download(client, "runs/a/", str(tmp_path / "got"))
    assert _rows(got) == _rows(tmp_path / "local")


def test_s3_out_resumes(tmp_path, pool, s3, metadata_path):
    client = s3[1]
    out = f"s3://{BUCKET}/runs/r"
    curate(str(metadata_path), [f"s3://{BUCKET}/pool"], out, **KW)
    before = {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read()
              for k in list_keys(client, BUCKET, "runs/r/stats/")}
    # as after a run stopped in pass 2 of shard 1: its part and marker are not there
    client.delete_object(Bucket=BUCKET, Key="runs/r/stats/shard-00001.json")
    client.delete_object(Bucket=BUCKET, Key="runs/r/curated/part-00001.parquet")
    client.put_object(Bucket=BUCKET, Key="runs/r/curated/part-00001.parquet.tmp-4242",
                      Body=b"half")
    client.put_object(Bucket=BUCKET, Key="runs/rest/keep.parquet.tmp-1", Body=b"not ours")
    s = curate(str(metadata_path), [f"s3://{BUCKET}/pool"], out, **KW)
    after = {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read()
             for k in list_keys(client, BUCKET, "runs/r/stats/")}
    assert set(after) == set(before)
    # the completed shards were skipped (their markers are the same bytes);
    # shard 1 ran again (its marker holds this run's timings)
    for k in before:
        if not k.endswith("shard-00001.json"):
            assert after[k] == before[k], k
    assert json.loads(after["runs/r/stats/shard-00001.json"])["kept"] == json.loads(
        before["runs/r/stats/shard-00001.json"])["kept"]
    keys = list_keys(client, BUCKET, "runs/")
    assert "runs/r/curated/part-00001.parquet.tmp-4242" not in keys  # swept
    assert "runs/rest/keep.parquet.tmp-1" in keys  # outside OUT: untouched
    assert s["curated"] > 0
    curate(str(metadata_path), [str(pool)], str(tmp_path / "local"), **KW)
    assert _rows(_download(client, "runs/r/", str(tmp_path / "got"))) == \
        _rows(tmp_path / "local")
    # another configuration is refused; --overwrite replaces the run's objects
    with pytest.raises(ConfigError, match=f"^{out} holds another run"):  # the URL, not the stage
        curate(str(metadata_path), [f"s3://{BUCKET}/pool"], out, **dict(KW, t=5))
    client.put_object(Bucket=BUCKET, Key="runs/r/curated/part-00009.parquet", Body=b"stale")
    curate(str(metadata_path), [f"s3://{BUCKET}/pool"], out, overwrite=True, **dict(KW, t=5))
    keys = list_keys(client, BUCKET, "runs/")
    assert "runs/r/curated/part-00009.parquet" not in keys
    assert "runs/rest/keep.parquet.tmp-1" in keys


def test_s3_out_staged_in_a_dir_given_with_a_slash_and_no_parquet(tmp_path, pool, s3,
                                                                  metadata_path, monkeypatch):
    """$GPUCURATE_STAGE_DIR given with a trailing slash still publishes every
    output; --outputs uids alone leaves no curated part in the bucket."""
    client = s3[1]
    monkeypatch.setenv("GPUCURATE_STAGE_DIR", str(tmp_path / "stage") + "/")
    out = f"s3://{BUCKET}/runs/slash"
    s = curate(str(metadata_path), [f"s3://{BUCKET}/pool"], out, **KW)
    keys = list_keys(client, BUCKET, "runs/slash/")
    assert s["curated"] > 0 and "runs/slash/summary.json" in keys
    assert [k for k in keys if k.startswith("runs/slash/curated/part-")]
    out = f"s3://{BUCKET}/runs/wds-alone"
    curate(str(metadata_path), [f"s3://{BUCKET}/pool/w.tar"], out, outputs=("webdataset",),
           **KW)
    keys = list_keys(client, BUCKET, "runs/wds-alone/")
    assert "runs/wds-alone/summary.json" in keys and [k for k in keys if "/curated-wds/" in k]
    assert not [k for k in keys if "/curated/" in k]


def test_s3_lock_object(tmp_path, pool, s3, metadata_path):
    client = s3[1]
    out = f"s3://{BUCKET}/runs/locked"
    client.put_object(Bucket=BUCKET, Key="runs/locked/.lock",
                      Body=b"the run of pid 77 on node-7 since 2026-01-01T00:00:00\n")
    with pytest.raises(ConfigError, match="in use by the run of pid 77 on node-7"):
        curate(str(metadata_path), [str(pool / "w.tar")], out, **KW)
    assert list(list_keys(client, BUCKET, "runs/locked/")) == ["runs/locked/.lock"]
    client.delete_object(Bucket=BUCKET, Key="runs/locked/.lock")
    curate(str(metadata_path), [str(pool / "w.tar")], out, **KW)
    assert "runs/locked/.lock" not in list_keys(client, BUCKET, "runs/locked/")


def test_s3_lock_of_a_killed_run_of_this_machine_is_taken_over(tmp_path, pool, s3,
                                                                metadata_path):
    """A run killed on this machine left its lock object: the next run of this
    machine takes it over (its pid is gone); a live pid's is still an error."""
    import socket

    client = s3[1]
    out = f"s3://{BUCKET}/runs/killed"
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that has ended
    host = socket.gethostname()
    client.put_object(Bucket=BUCKET, Key="runs/killed/.lock",
                      Body=f"the run of pid {os.getppid()} on {host} since 2026-01-01T00:00:00\n"
                      .encode())
    with pytest.raises(ConfigError, match=f"in use by the run of pid {os.getppid()} on"):
        curate(str(metadata_path), [str(pool / "w.tar")], out, **KW)
    client.put_object(Bucket=BUCKET, Key="runs/killed/.lock",
                      Body=f"the run of pid {gone.pid} on {host} since 2026-01-01T00:00:00\n"
                      .encode())
    curate(str(metadata_path), [str(pool / "w.tar")], out, **KW)
    keys = list_keys(client, BUCKET, "runs/killed/")
    assert "runs/killed/.lock" not in keys and "runs/killed/summary.json" in keys


def test_counts_and_match_read_urls(tmp_path, pool, s3, metadata_path):
    """balance --counts, merge-counts' inputs and match --input take URLs:
    the same outputs as from the local files."""
    from gpucurate.cli import main

    client = s3[1]
    base = ["--metadata", str(metadata_path), "--device", "cpu", "--threads", "1", "--quiet"]
    assert main(["count", "--input", str(pool), "--out", str(tmp_path / "c"), *base]) == 0
    counts = tmp_path / "c" / "entry_counts.parquet"
    client.upload_file(str(counts), BUCKET, "counts/entry_counts.parquet")
    url = f"s3://{BUCKET}/counts/entry_counts.parquet"
    bal = ["balance", "--input", str(pool), "--t", "3", "--seed", "5", "--no-report", *base]
    assert main([*bal, "--counts", str(counts), "--out", str(tmp_path / "b1")]) == 0
    assert main([*bal, "--counts", url, "--out", str(tmp_path / "b2")]) == 0
    assert _rows(str(tmp_path / "b1")) == _rows(str(tmp_path / "b2"))
    assert len(_rows(str(tmp_path / "b1"))[0]) > 0
    twin = tmp_path / "twin.parquet"  # another job's counts (one file twice is refused)
    twin.write_bytes(counts.read_bytes())
    assert main(["merge-counts", str(counts), str(twin), "--out", str(tmp_path / "m1.parquet"),
                 "--metadata", str(metadata_path), "--quiet"]) == 0
    assert main(["merge-counts", url, str(counts), "--out", str(tmp_path / "m2.parquet"),
                 "--metadata", str(metadata_path), "--quiet"]) == 0
    m1, m2 = (pq.read_table(tmp_path / f) for f in ("m1.parquet", "m2.parquet"))
    assert m1.equals(m2) and sum(m1.column("count").to_pylist()) > 0
    assert main(["merge-counts", url, "--out", f"s3://{BUCKET}/merged.parquet", "--metadata",
                 str(metadata_path), "--quiet"]) == 2  # --out is a local file
    src = f"s3://{BUCKET}/pool/part-00.parquet"
    assert main(["match", "--input", src, "--out", str(tmp_path / "u.parquet"), *base]) == 0
    assert main(["match", "--input", str(pool / "part-00.parquet"), "--out",
                 str(tmp_path / "l.parquet"), *base]) == 0
    assert pq.read_table(tmp_path / "u.parquet").equals(pq.read_table(tmp_path / "l.parquet"))
    missing = f"s3://{BUCKET}/counts/none.parquet"
    assert main([*bal, "--counts", missing, "--out", str(tmp_path / "b3")]) == 2


def test_out_url_checks(tmp_path, pool, metadata_path):
    with pytest.raises(ConfigError, match="not http://"):
        curate(str(metadata_path), [str(pool)], "http://127.0.0.1:1/out", **KW)
    with pytest.raises(ConfigError, match="prefix inside the bucket"):
        curate(str(metadata_path), [str(pool)], "s3://just-a-bucket", **KW)


# ------------------------------------------------------------------ http, hf
@pytest.fixture(scope="module")
def http_pool(pool):
    handler = functools.partial(_Quiet, directory=str(pool))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def test_http_input(tmp_path, pool, http_pool, metadata_path):
    urls = [f"{http_pool}/part-{{00..01}}.parquet", f"{http_pool}/sub/{{j.jsonl.gz,p.jsonl}}",
            f"{http_pool}/w.tar", f"{http_pool}/z.jsonl.zst"]
    files = [str(pool / "part-00.parquet"), str(pool / "part-01.parquet"),
             str(pool / "sub" / "j.jsonl.gz"), str(pool / "sub" / "p.jsonl"),
             str(pool / "w.tar"), str(pool / "z.jsonl.zst")]
    a = curate(str(metadata_path), urls, str(tmp_path / "http"), key_column="id", **KW)
    b = curate(str(metadata_path), files, str(tmp_path / "local"), key_column="id", **KW)
    assert a["shards"] == 6 and _rows(tmp_path / "http") == _rows(tmp_path / "local")
    # a directory URL (ending in /): the files its index page links to, names below it
    d = curate(str(metadata_path), [f"{http_pool}/"], str(tmp_path / "hdir"), **KW)
    curate(str(metadata_path), [str(pool)], str(tmp_path / "ldir"), **KW)
    assert d["shards"] == 6 and _rows(tmp_path / "hdir") == _rows(tmp_path / "ldir")
    with pytest.raises(InputError, match="nothere.parquet"):
        curate(str(metadata_path), [f"{http_pool}/nothere.parquet"], str(tmp_path / "x"), **KW)


def test_hf_routes_to_huggingface_filesystem():
    pytest.importorskip("huggingface_hub")
    store, path = filesystem("hf://datasets/someone/pool/data/part-00000.parquet")
    assert type(store.fs).__name__ == "HfFileSystem"
    assert path == "datasets/someone/pool/data/part-00000.parquet"
    # reaching huggingface.co needs the network, which these tests never use


def test_s3_out_with_ray_workers_staging_apart(tmp_path, pool, s3, metadata_path,
                                               monkeypatch):
    """Ray workers whose staging directory is not the driver's, as on other
    nodes that share only the bucket: each publishes what it writes, reads
    what the driver or another worker wrote from its object, and the driver
    gathers the files it reads after each pass. The run's objects equal a
    local run's."""
    pytest.importorskip("ray")
    client = s3[1]
    driver, workers = tmp_path / "driver-stage", tmp_path / "worker-stage"
    monkeypatch.setenv("GPUCURATE_STAGE_DIR", str(driver))
    out = f"s3://{BUCKET}/runs/ray"
    ray_init = {"runtime_env": {"env_vars": {"GPUCURATE_STAGE_DIR": str(workers)}}}
    s = curate(str(metadata_path), [str(pool)], out, executor="ray",
               extra={"ray_init": ray_init, "ray_workers": 2}, **KW)
    assert s["executor"] == "ray"
    curate(str(metadata_path), [str(pool)], str(tmp_path / "local"), **KW)
    got = _download(client, "runs/ray/", str(tmp_path / "got"))
    assert _rows(got) == _rows(tmp_path / "local")
    staged = {d: {os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs}
              for d in (driver, workers)}
    parts = lambda d: {p for p in staged[d] if os.sep + "curated" + os.sep in p}  # noqa: E731
    assert parts(workers) and not parts(driver)  # the parts were written apart
    keys = list_keys(client, BUCKET, "runs/ray/")
    assert "runs/ray/.lock" not in keys and not [k for k in keys if "/work/matches/" in k]


def test_s3_tars_to_webdataset(tmp_path, s3, metadata_path, monkeypatch):
    """--outputs webdataset from tars on S3 (a plain tar, a gzipped one, a
    download folder): the tars written equal a local run's. The plain tar
    shard is read by ranges, its kept samples alone (pass 1 left where they
    lie): the writer's local copy of it is sparse."""
    import gzip
    import tarfile

    import numpy as np
    import pyarrow as pa

    _, client = s3
    src = tmp_path / "wds"
    os.makedirs(src / "dl")
    t = real_rows("flickr8k", 900)
    rng = np.random.default_rng(4)

    def tar_of(rows, path, prefix):
        with tarfile.open(path, "w") as tf:
            for i, r in enumerate(rows.to_pylist()):
                for ext, blob in (("jpg", rng.integers(0, 256, 3000 + i, np.uint8).tobytes()),
                                  ("txt", r["text"].encode())):
                    ti = tarfile.TarInfo(f"{prefix}{i:05d}.{ext}")
                    ti.size = len(blob)
                    tf.addfile(ti, io.BytesIO(blob))

    tar_of(t.slice(0, 300), src / "a.tar", "a")
    tar_of(t.slice(300, 300), src / "b.tar", "b")
    with open(src / "b.tar", "rb") as f:
        (src / "b.tar.gz").write_bytes(gzip.compress(f.read()))
    os.remove(src / "b.tar")
    tar_of(t.slice(600, 300), src / "dl" / "00000.tar", "d")
    pq.write_table(pa.table({"key": [f"d{i:05d}" for i in range(300)],
                             "caption": t.slice(600, 300).column("text"),
                             "status": ["success"] * 300}), src / "dl" / "00000.parquet")
    upload_tree(client, str(src), BUCKET, "wds")
    from gpucurate.pipeline import wds_out

    seen = {}
    real_copy = wds_out._copy_remote

    def spy(url, local, ranges):  # the real copy, its arguments recorded (a call per output tar)
        seen.setdefault(url.rsplit("/", 1)[1], []).append(ranges)
        return real_copy(url, local, ranges)

    monkeypatch.setattr(wds_out, "REMOTE_GAP", 0)  # every dropped sample skipped
    kw = dict(KW, threads=1, outputs=("parquet", "webdataset"), samples_per_shard=60)
    for name, inputs, key in (("tars", ["a.tar", "b.tar.gz"], "__key__"),
                              ("dl", ["dl"], "key")):
        local = curate(str(metadata_path), [str(src / i) for i in inputs],
                       str(tmp_path / f"local-{name}"), key_column=key, **kw)
        wds_copy, wds_out._copy_remote = wds_out._copy_remote, spy
        try:
            remote = curate(str(metadata_path), [f"s3://{BUCKET}/wds/{i}" for i in inputs],
                            str(tmp_path / f"s3-{name}"), key_column=key, **kw)
        finally:
            wds_out._copy_remote = wds_copy
        assert local["curated"] == remote["curated"] > 60
        a, b = (sorted(os.listdir(tmp_path / d / "curated-wds"))
                for d in (f"local-{name}", f"s3-{name}"))
        assert a == b and len(a) > 2
        for f in a:
            assert (tmp_path / f"local-{name}" / "curated-wds" / f).read_bytes() == \
                (tmp_path / f"s3-{name}" / "curated-wds" / f).read_bytes(), (name, f)
    calls = seen["a.tar"]
    assert len(calls) > 2 and all(r is not None and r[0][0] == 0 for r in calls)
    size = os.path.getsize(src / "a.tar")
    # each output tar fetched its own samples: the dropped samples and those of
    # the other output tars were not read
    assert sum(b - a for r in calls for a, b in r) < size
    assert seen["00000.tar"] == [None] * len(seen["00000.tar"])  # a download folder's: whole


def _tar_of_dogs(path, n):
    import tarfile

    with tarfile.open(path, "w") as tf:
        for i in range(n):
            for ext, blob in (("jpg", os.urandom(1000 + i)), ("txt", b"a dog %d" % i)):
                ti = tarfile.TarInfo(f"s{i:04d}.{ext}")
                ti.size = len(blob)
                tf.addfile(ti, io.BytesIO(blob))


def _tars(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


def test_s3_out_webdataset_rerun_writes_only_missing_tars(tmp_path, s3, monkeypatch):
    """--out on S3: a rerun finds the tars of the run before in the bucket
    (they are not staged again) and writes only those missing."""
    from gpucurate.pipeline import wds_out

    client = s3[1]
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(["dog"]))
    os.makedirs(tmp_path / "in")
    _tar_of_dogs(tmp_path / "in" / "a.tar", 60)
    written = []
    real = wds_out._write_tar
    monkeypatch.setattr(wds_out, "_write_tar",
                        lambda path, srcs: (written.append(os.path.basename(path)),
                                            real(path, srcs))[1])
    out = f"s3://{BUCKET}/runs/wds"
    kw = dict(KW, t=100, threads=1, outputs=("parquet", "webdataset"), samples_per_shard=20)
    s = curate(str(meta), [str(tmp_path / "in")], out, **kw)
    assert written == ["00000.tar", "00001.tar", "00002.tar"]
    assert s["outputs"]["parquet"]["dir"] == f"{out}/curated"  # the bucket's, not the stage's
    assert s["outputs"]["webdataset"]["dir"] == f"{out}/curated-wds"
    first = {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read()
             for k in list_keys(client, BUCKET, "runs/wds/curated-wds/")}
    written.clear()
    curate(str(meta), [str(tmp_path / "in")], out, **kw)
    assert written == []
    client.delete_object(Bucket=BUCKET, Key="runs/wds/curated-wds/00001.tar")
    curate(str(meta), [str(tmp_path / "in")], out, **kw)
    assert written == ["00001.tar"]
    assert {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read()
            for k in list_keys(client, BUCKET, "runs/wds/curated-wds/")} == first
    curate(str(meta), [str(tmp_path / "in")], str(tmp_path / "local"), **kw)
    assert {k.rsplit("/", 1)[1]: v for k, v in first.items()} == \
        _tars(tmp_path / "local" / "curated-wds")


class _NoLength(http.server.BaseHTTPRequestHandler):
    """A server that sends no Content-Length and ignores ranges (HTTP/1.0)."""
    protocol_version = "HTTP/1.0"
    root = None

    def log_message(self, *a):
        pass

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.end_headers()

    def do_GET(self):
        self.do_HEAD()
        with open(os.path.join(self.root, self.path.lstrip("/")), "rb") as f:
            self.wfile.write(f.read())


def test_http_tar_without_size_to_webdataset(tmp_path):
    """A tar from a server that does not say its size: the kept samples
    cannot be fetched by ranges, so the tar is copied whole; the curated
    tars equal a local run's."""
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(["dog"]))
    os.makedirs(tmp_path / "www")
    _tar_of_dogs(tmp_path / "www" / "a.tar", 50)
    handler = type("H", (_NoLength,), {"root": str(tmp_path / "www")})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/a.tar"
        kw = dict(KW, t=100, threads=1, outputs=("parquet", "webdataset"), samples_per_shard=20)
        a = curate(str(meta), [url], str(tmp_path / "http"), **kw)
    finally:
        srv.shutdown()
        srv.server_close()
    b = curate(str(meta), [str(tmp_path / "www" / "a.tar")], str(tmp_path / "local"), **kw)
    assert a["curated"] == b["curated"] == 50
    assert _tars(tmp_path / "http" / "curated-wds") == _tars(tmp_path / "local" / "curated-wds")


def test_http_listing_names_are_the_files_names(tmp_path):
    """A directory listed over http gives its links percent-encoded: the
    shards take the files' own names (the default key hashes the name), so
    the curated set equals that of the same files on disk."""
    meta = tmp_path / "m.json"
    meta.write_text(json.dumps(["dog", "cat"]))
    d = tmp_path / "www"
    os.makedirs(d)
    for name in ("a b.parquet", "é.parquet"):
        pq.write_table(pa.table({"text": [f"a dog {i}" if i % 2 else f"a cat {i}"
                                          for i in range(200)]}), d / name)
    handler = functools.partial(_Quiet, directory=str(d))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    kw = dict(KW, t=20)
    try:
        a = curate(str(meta), [f"http://127.0.0.1:{srv.server_address[1]}/"],
                   str(tmp_path / "http"), **kw)
    finally:
        srv.shutdown()
        srv.server_close()
    b = curate(str(meta), [str(d)], str(tmp_path / "local"), **kw)
    (ra, ca, na), (rb, cb, nb) = _rows(tmp_path / "http"), _rows(tmp_path / "local")
    assert sorted(na) == sorted(nb) == ["a b.parquet", "é.parquet"]  # (URLs sort otherwise)
    key = lambda r: (r["text"], r["entry_ids"])  # noqa: E731
    assert a["curated"] == b["curated"] and ca == cb and sorted(ra, key=key) == sorted(rb, key=key)


def test_http_queries_globs_versions_and_prefixes(tmp_path, metadata_path):
    """http(s): a URL with a query string is one object (a signed or download
    link), named without the query; globs are written as the names are (with
    spaces, non-ASCII); an object rewritten at the same size is seen as
    changed (Last-Modified); a directory URL read by ``local_path`` is a
    directory."""
    from gpucurate.io.fs import local_path, url_shards

    d = tmp_path / "www"
    os.makedirs(d / "counts")
    t = pa.table({"text": [f"a dog {i}" for i in range(50)]})
    for name in ("a b.parquet", "é.parquet", "c.parquet", "counts/en.parquet"):
        pq.write_table(t, d / name, compression="none")
    handler = functools.partial(_Quiet, directory=str(d))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    u = f"http://127.0.0.1:{srv.server_address[1]}"
    meta = tmp_path / "m.json"
    meta.write_text(json.dumps(["dog", "cat"]))
    try:
        assert [n for _, n in url_shards(f"{u}/a *.parquet")] == ["a b.parquet"]
        assert [n for _, n in url_shards(f"{u}/é*.parquet")] == ["é.parquet"]
        assert url_shards(f"{u}/c.parquet?download=1") == [(f"{u}/c.parquet?download=1",
                                                           "c.parquet")]
        with local_path(f"{u}/counts/") as p:
            assert os.path.isdir(p) and os.listdir(p) == ["en.parquet"]
        with local_path(f"{u}/c.parquet") as p:
            assert os.path.isfile(p) and pq.read_table(p).equals(t)
        out = str(tmp_path / "o")
        kw = dict(KW, t=20)
        s = curate(str(meta), [f"{u}/c.parquet?download=1"], out, **kw)
        assert s["matched"] == 50
        assert json.load(open(os.path.join(out, "stats", "shard-00000.json")))["shard"] == \
            "c.parquet"
        size = os.path.getsize(d / "c.parquet")
        pq.write_table(pa.table({"text": [f"a cow {i}" for i in range(50)]}), d / "c.parquet",
                       compression="none")
        assert os.path.getsize(d / "c.parquet") == size
        st = os.stat(d / "c.parquet")
        os.utime(d / "c.parquet", ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
        with pytest.raises(ConfigError, match="changed since that run"):
            curate(str(meta), [f"{u}/c.parquet?download=1"], out, **kw)
    finally:
        srv.shutdown()
        srv.server_close()


def test_gcs_prefix_spellings_and_single_objects(tmp_path, monkeypatch):
    """gs:// and gcs:// name one store: an output spelled either way is kept
    out of the inputs; a file key is listed as itself (a GCS listing of a
    selector skips the object of its own name). The bucket is stood in for
    by a local directory through pyarrow's filesystem API (no GCS server here)."""
    import pyarrow.fs as pf

    import gpucurate.io.fs as F

    for p in ("bkt/data/a.parquet", "bkt/data/out/curated/part-00000.parquet"):
        os.makedirs(os.path.dirname(tmp_path / p), exist_ok=True)
        (tmp_path / p).write_bytes(b"x")
    store = F._Arrow(pf.SubTreeFileSystem(str(tmp_path), pf.LocalFileSystem()), "gs")
    monkeypatch.setattr(F, "_store_for", lambda scheme, netloc, pid: store)
    for inp in ("gs://bkt/data", "gcs://bkt/data"):
        for out in ("gs://bkt/data/out", "gcs://bkt/data/out/"):
            assert F.url_shards(inp, exclude=out) == [("gs://bkt/data/a.parquet", "a.parquet")]
    g = F._GcsOut("gs://bkt/data/out")
    assert g.keys("data/out/curated/part-00000.parquet") == [
        ("data/out/curated/part-00000.parquet", 1)]
    assert g.keys("data/out/") == [("data/out/curated/part-00000.parquet", 1)]
    assert g.keys("data/out/curated/part-00001.parquet") == []


def test_object_versions_of_fsspec_infos():
    """What an fsspec ``info`` gives for an object's version, as each backend
    spells it (dicts shaped as HTTPFileSystem and HfFileSystem return them)."""
    from gpucurate.io.fs import _version_of

    assert _version_of({"name": "u", "size": 3, "ETag": '"a1"'}) == '"a1"'
    assert _version_of({"size": 3, "Last-Modified": "Tue, 08 Dec 2026 00:00:00 GMT"}) == \
        "Last-Modified=Tue, 08 Dec 2026 00:00:00 GMT"
    assert _version_of({"size": 3, "blob_id": "9f", "lfs": None}) == "blob_id=9f"
    assert _version_of({"size": 3, "blob_id": "9f", "lfs": {"sha256": "ab"}}) == \
        "blob_id=9f sha256=ab"
    assert _version_of({"size": 3, "mtime": 1.5}) == 1_500_000_000
    assert _version_of({"size": 3}) is None


def test_http_parquet_from_a_server_without_ranges_is_a_clear_error(tmp_path):
    """python -m http.server answers no range request: a parquet shard there,
    too large to come in one block, is an error naming the file and the fix."""
    import numpy as np

    d = tmp_path / "www"
    os.makedirs(d)
    rng = np.random.default_rng(0)
    words = np.array(["dog", "cat", "tree", "house", "car", "sky"])
    text = [" ".join(words[rng.integers(0, 6, 12)]) + f" {i} {rng.integers(1 << 62)}"
            for i in range(300_000)]
    pq.write_table(pa.table({"text": text}), d / "big.parquet", compression="none")
    assert os.path.getsize(d / "big.parquet") > 12 << 20
    meta = tmp_path / "m.json"
    meta.write_text(json.dumps(["dog"]))
    handler = functools.partial(_Quiet, directory=str(d))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(InputError, match=r"big\.parquet: the server does not answer range"):
            curate(str(meta), [f"http://127.0.0.1:{srv.server_address[1]}/big.parquet"],
                   str(tmp_path / "o"), **KW)
    finally:
        srv.shutdown()
        srv.server_close()
