"""Benchmarks of the training-ready outputs: ``python -m bench.outputs``.

* ``wds``: a WebDataset pool (4 tar shards of real captions, image members of
  random bytes, 30-90 KB) is curated with ``--outputs parquet,webdataset``;
  the seconds of the webdataset step (``summary.json``: seconds.webdataset)
  are set against reading the kept samples' bytes from the input tars (their
  member offsets known, each sample's bytes read with one seek and read). Both
  run with the tars in the page cache (read whole before each run; the
  baseline is timed after the runs, best of 3). Goal: at most 1.5x. The same
  pair with the tars evicted from the page cache (``cold_*``), in-process.
* ``wds-folder``: the same, with the same tars as an img2dataset download
  folder (each beside a parquet of key, caption and status).
* ``plan``: saved matches of N generated captions (default 100M; 1-4 entries
  per caption, Zipf-distributed entry ids over 500k entries, as ``count
  --save-matches`` writes them: one row group per 1M captions), then
  ``taskset -c 0 python -m gpucurate plan DIR --target-size ...`` timed from
  outside (second run: numba's cache warm). Goal: at most 10 s.

Writes ``bench/results/<date>-outputs-<commit>.json`` with the machine, the
date, the commit and the commands.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.suite import commit as git_commit  # noqa: E402
from bench.workloads import cpu_model  # noqa: E402
SHARED = os.environ.get("GPUCURATE_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ---------------------------------------------------------------- webdataset
def make_wds_pool(root: str, shards: int, per_shard: int) -> list:
    caps = pq.read_table(os.path.join(SHARED, "captions", "coco_captions_val2017.parquet"))
    texts = caps.column("text").to_pylist()
    rng = np.random.default_rng(0)
    paths = []
    os.makedirs(root, exist_ok=True)
    for k in range(shards):
        p = os.path.join(root, f"{k:05d}.tar")
        paths.append(p)
        if os.path.exists(p):
            continue
        with tarfile.open(p + ".part", "w") as tf:
            for j in range(per_shard):
                i = k * per_shard + j
                key = f"{i:09d}"
                img = rng.integers(0, 256, int(rng.integers(30_000, 90_000)), np.uint8).tobytes()
                for ext, blob in (("jpg", img), ("txt", texts[i % len(texts)].encode()),
                                  ("json", json.dumps({"key": key, "w": 256, "h": 256}).encode())):
                    ti = tarfile.TarInfo(f"{key}.{ext}")
                    ti.size = len(blob)
                    tf.addfile(ti, io.BytesIO(blob))
        os.replace(p + ".part", p)
    return paths


def read_kept_bytes(out: str, tars: list, reps: int = 3, copy_to: str | None = None,
                    flush: bool = False, key_column: str = "__key__") -> tuple:
    """(seconds, bytes): every kept sample's bytes read from its input tar;
    with ``copy_to``, also written to a new file there per tar (``flush``:
    each flushed to disk before it is closed), the floor of any writer that
    copies those bytes."""
    index = {}
    for p in tars:
        with tarfile.open(p) as tf:
            for ti in tf:
                key = ti.name.split(".", 1)[0]
                a, b = index.get((p, key), (ti.offset, 0))
                index[(p, key)] = (min(a, ti.offset), ti.offset_data + ti.size)
    ranges = []
    for k, p in enumerate(tars):
        kept = pq.read_table(os.path.join(out, "curated", f"part-{k:05d}.parquet"),
                             columns=[key_column]).column(0).to_pylist()
        ranges.append((p, [index[(p, key)] for key in kept]))
    best = None
    for _ in range(reps):
        if copy_to:
            shutil.rmtree(copy_to, ignore_errors=True)
            os.makedirs(copy_to)
        t0 = time.perf_counter()
        n = 0
        for k, (p, rs) in enumerate(ranges):
            with open(p, "rb") as f:
                dest = open(os.path.join(copy_to, f"{k:05d}.tar"), "wb") if copy_to else None
                for a, b in rs:
                    f.seek(a)
                    data = f.read(b - a)
                    n += len(data)
                    if dest is not None:
                        dest.write(data)
                if dest is not None:
                    if flush:
                        dest.flush()
                        os.fsync(dest.fileno())
                    dest.close()
        s = time.perf_counter() - t0
        best = s if best is None else min(best, s)
    return best, n


def download_folder(root: str, tars: list) -> str:
    """The pool's tars as an img2dataset download folder: each tar linked
    beside a parquet of its samples' key, caption and status."""
    os.makedirs(root, exist_ok=True)
    for p in tars:
        dest = os.path.join(root, os.path.basename(p))
        if not os.path.exists(dest):
            os.link(p, dest)
        meta = dest[:-4] + ".parquet"
        if os.path.exists(meta):
            continue
        keys, caps = [], []
        with tarfile.open(p) as tf:
            for ti in tf:
                if ti.name.endswith(".txt"):
                    keys.append(ti.name[:-4])
                    caps.append(tf.extractfile(ti).read().decode())
        pq.write_table(pa.table({"key": keys, "caption": caps,
                                 "status": ["success"] * len(keys)}), meta + ".part")
        os.replace(meta + ".part", meta)
    return root


def bench_wds(work: str, shards: int, per_shard: int, t: int, folder: bool = False) -> dict:
    """The webdataset step against the read of the kept bytes; ``folder``:
    the same tars as a download folder (the captions from its parquet)."""
    # the pools are kept between runs, so named by their size (a pool of another
    # --per-shard was reused, its sample count misreported)
    size = f"s{shards}-n{per_shard}"
    tars = make_wds_pool(os.path.join(work, f"wds-pool-{size}"), shards, per_shard)
    inputs, key = tars, "__key__"
    if folder:
        inputs, key = [download_folder(os.path.join(work, f"dl-pool-{size}"), tars)], "key"
        tars = sorted(glob.glob(os.path.join(inputs[0], "*.tar")))
    os.sync()  # a pool just made is still being written back: not this step's work
    meta = os.path.join(SHARED, "metaclip_metadata", "metadata_proxy.json")
    runs = []
    for rep in range(2):
        out = os.path.join(work, f"wds-out-{rep}")
        shutil.rmtree(out, ignore_errors=True)
        _warm(tars)  # the run's step in the page cache's state the baseline is read in
        cmd = [sys.executable, "-m", "gpucurate", "curate", "--metadata", meta, "--input",
               *inputs, "--out", out, "--t", str(t), "--key-column", key, "--device", "cpu",
               "--outputs", "parquet,webdataset", "--no-report", "--quiet"]
        subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL)
        s = json.load(open(os.path.join(out, "summary.json")))
        runs.append(s["seconds"]["webdataset"])
    base, nbytes = read_kept_bytes(out, tars, key_column=key)
    # floors of any writer copying the kept bytes: the same reads written to
    # new files, into the page cache only, and flushed to disk as the tars are
    copy_s, _ = read_kept_bytes(out, tars, copy_to=os.path.join(work, "copy-floor"),
                                key_column=key)
    flushed_s, _ = read_kept_bytes(out, tars, copy_to=os.path.join(work, "copy-floor"),
                                   flush=True, key_column=key)
    shutil.rmtree(os.path.join(work, "copy-floor"), ignore_errors=True)
    cold_w, cold_r = cold_pair(out, inputs, tars, key)
    wds_s = min(runs)
    written = sum(os.path.getsize(os.path.join(out, "curated-wds", f))
                  for f in os.listdir(os.path.join(out, "curated-wds")) if f.endswith(".tar"))
    return {"command": shlex.join(cmd), "input_bytes": sum(os.path.getsize(p) for p in tars),
            "samples": shards * per_shard, "kept": s["curated"], "kept_bytes_read": nbytes,
            "written_bytes": written, "webdataset_s": wds_s, "webdataset_runs_s": runs,
            "read_kept_bytes_s": base, "ratio": wds_s / base,
            "copy_kept_bytes_s": copy_s, "copy_floor_ratio": copy_s / base,
            "copy_kept_bytes_flushed_s": flushed_s, "flushed_copy_floor_ratio": flushed_s / base,
            "cold_webdataset_s": cold_w, "cold_read_kept_bytes_s": cold_r,
            "cold_ratio": cold_w / cold_r,
            "goal": "<= 1.5", "met": wds_s / base <= 1.5, "met_cold": cold_w / cold_r <= 1.5}


def _warm(paths) -> None:
    """Read these files whole, so that their pages are in the page cache (the
    pass-1 reader reads only headers and captions, and a run before this one
    may have evicted them: the step was then timed cold against a warm read)."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


def _evict(paths) -> None:
    """Drop these files' pages from the page cache (posix_fadvise, these files only)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cold_pair(out: str, inputs: list, tars: list, key: str) -> tuple:
    """The webdataset step and the baseline read, each with the input tars out
    of the page cache (best of 3 each), in this process."""
    sys.path.insert(0, ROOT)
    from gpucurate.io import resolve_inputs
    from gpucurate.pipeline.layout import OutputLayout
    from gpucurate.pipeline.wds_out import write_webdataset

    lay = OutputLayout(out)
    shards = resolve_inputs(inputs)
    kept = [json.load(open(lay.stats(s.index)))["kept"] for s in shards]
    w, r = [], []
    for rep in range(4):
        shutil.rmtree(lay.curated_wds_dir, ignore_errors=True)
        os.remove(lay.wds_plan)
        _evict(tars)
        t0 = time.perf_counter()
        write_webdataset(lay, shards, kept, 10000)
        if rep:  # the first loads numba's cache
            w.append(time.perf_counter() - t0)
        _evict(tars)
        r.append(read_kept_bytes(out, tars, reps=1, key_column=key)[0])
    return min(w), min(r)


# ---------------------------------------------------------------- plan
def make_matches(root: str, captions: int, entries: int = 500_000,
                 per_group: int = 1_000_000) -> None:
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "matches"))
    os.makedirs(os.path.join(root, "work", "pass1"))
    rng = np.random.default_rng(0)
    counts = np.zeros(entries, np.uint64)
    shard_caps = 10 * per_group
    n_shards = (captions + shard_caps - 1) // shard_caps
    schema = pa.schema([("entry_id", pa.uint32()), ("text_id", pa.uint32())])
    for s in range(n_shards):
        n_s = min(shard_caps, captions - s * shard_caps)
        with pq.ParquetWriter(os.path.join(root, "matches", f"shard-{s:05d}.parquet"), schema,
                              compression="zstd") as w:
            for first in range(0, n_s, per_group):
                n = min(per_group, n_s - first)
                k = np.minimum(1 + rng.poisson(1.0, n), 4)
                tid = np.repeat(np.arange(first, first + n, dtype=np.uint32), k)
                e = ((rng.zipf(1.3, tid.size) - 1) % entries).astype(np.uint32)
                counts += np.bincount(e, minlength=entries).astype(np.uint64)
                w.write_table(pa.Table.from_arrays([pa.array(e), pa.array(tid)], schema=schema))
        with open(os.path.join(root, "work", "pass1", f"shard-{s:05d}.json"), "w") as f:
            json.dump({"captions": n_s}, f)
    pq.write_table(pa.table({"entry_id": np.arange(entries, dtype=np.int32),
                             "entry": [f"e{i}" for i in range(entries)],
                             "count": pa.array(counts, pa.uint64())}),
                   os.path.join(root, "entry_counts.parquet"))
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump({"stage": "count", "generated": True, "captions": captions}, f)
    open(done, "w").close()


def bench_plan(work: str, captions: int) -> dict:
    root = os.path.join(work, f"plan-{captions}")
    t0 = time.perf_counter()
    make_matches(root, captions)
    gen = time.perf_counter() - t0
    pairs = sum(pq.ParquetFile(os.path.join(root, "matches", f)).metadata.num_rows
                for f in os.listdir(os.path.join(root, "matches")))
    target = captions // 4
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "gpucurate", "plan", root,
           "--target-size", str(target), "--json"]
    walls = []
    for _ in range(2):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, check=True, env=_env(), capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
    last = json.loads(r.stdout.strip().splitlines()[-1])
    return {"command": shlex.join(cmd), "captions": captions, "pairs": pairs,
            "generate_s": gen, "wall_s": walls[-1], "walls_s": walls, "result": last,
            "goal": "<= 10 s on one core", "met": walls[-1] <= 10.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.outputs")
    ap.add_argument("--what", default="wds,plan",
                    help="a comma list of wds (tar shards), wds-folder (the same tars as a "
                         "download folder) and plan")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "gpucurate-bench-out"))
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=2000)
    ap.add_argument("--t", type=int, default=3)
    ap.add_argument("--captions", type=int, default=100_000_000)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args(argv)
    os.makedirs(a.work, exist_ok=True)
    res = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(),
           "machine": {"node": platform.node(), "cpus": os.cpu_count(),
                       "affinity": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                       "processor": platform.processor() or platform.machine(),
                       "cpu": cpu_model()},
           "command": "python -m bench.outputs " + " ".join(argv if argv is not None
                                                             else sys.argv[1:])}
    what = a.what.split(",")
    if "wds" in what:
        res["webdataset"] = bench_wds(a.work, a.shards, a.per_shard, a.t)
        print(json.dumps(res["webdataset"], indent=1))
    if "wds-folder" in what:
        res["webdataset_download_folder"] = bench_wds(a.work, a.shards, a.per_shard, a.t,
                                                      folder=True)
        print(json.dumps(res["webdataset_download_folder"], indent=1))
    if "plan" in what:
        res["plan"] = bench_plan(a.work, a.captions)
        print(json.dumps(res["plan"], indent=1))
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"{datetime.date.today()}-outputs-{res['commit']}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
