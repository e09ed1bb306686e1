"""Ray executor scaling: shards/s and captions/s with 1, 2, ... workers.

    python -m bench.ray_scaling [--workers 1 2] [--shards 32] [--device cpu]

Builds a pool of real captions (``$GPUCURATE_SHARED_DATA``/captions, as the
tests do) split into ``--shards`` parquet shards, curates it once with the local
executor (the baseline, also the reference output) and once per worker count
with ``--executor ray`` on a private local Ray (``cfg.extra["ray_workers"]``
caps the number of worker processes; each CPU worker runs one engine thread).
Every Ray output is checked identical to the local one. Pass times come from
the run's summary (the executor's map calls), pass 1 less the time the Ray
executor spent starting its workers inside it (process start, imports, trie
fetch: reported as worker_startup_s); ``wall_s`` is the whole run, Ray's own
start included. Writes bench/results/ray_scaling-*.json
and .md.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.workloads import cpu_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("GPUCURATE_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
SOURCES = ["coco_captions_val2017", "flickr8k", "html_img_alttext", "redcaps_explore_samples"]


def _pool(dirpath: str, n_shards: int, rows: int | None) -> int:
    texts = []
    for name in SOURCES:
        texts += pq.read_table(os.path.join(SHARED, "captions", f"{name}.parquet"),
                               columns=["text"]).column("text").to_pylist()
    if rows:
        texts = texts[:rows]
    t = pa.table({"id": pa.array(np.arange(len(texts), dtype=np.int64)),
                  "text": pa.array(texts, pa.large_string())})
    os.makedirs(dirpath, exist_ok=True)
    step = -(-t.num_rows // n_shards)
    for i in range(n_shards):
        pq.write_table(t.slice(i * step, step), os.path.join(dirpath, f"shard-{i:03d}.parquet"))
    return t.num_rows


def _same(a: str, b: str) -> bool:
    rels = ["entry_counts.parquet"] + sorted(os.path.relpath(p, a) for p in
                                             glob.glob(os.path.join(a, "curated", "*")))
    return all(pq.read_table(os.path.join(a, r)).equals(pq.read_table(os.path.join(b, r)))
               for r in rels)


def _burn(_=None) -> float:
    t0 = time.perf_counter()
    x = 0
    for i in range(10_000_000):
        x += i
    return time.perf_counter() - t0


def _free_cores(n: int = 2) -> float:
    """How many cores n busy processes really get now (n on an idle machine):
    n x the time of one pure-Python loop alone / the wall time of n at once."""
    from multiprocessing import get_context

    one = _burn()
    with get_context("spawn").Pool(n) as pool:
        pool.map(_burn, range(n))  # start the processes
        t0 = time.perf_counter()
        pool.map(_burn, range(n))
        wall = time.perf_counter() - t0
    return round(n * one / wall, 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ray_scaling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shards", type=int, default=32)
    ap.add_argument("--rows", type=int, default=None, help="pool size (default: all captions)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "auto", "gpu"))
    ap.add_argument("--note", default=None, help="a remark recorded with the results")
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args(argv)

    import importlib

    gc = importlib.import_module("gpucurate.pipeline.run")
    from gpucurate.config import CurateConfig
    from gpucurate.pipeline import run
    from gpucurate.log import configure

    configure(quiet=True)
    metadata = os.path.join(SHARED, "metaclip_metadata", "metadata_proxy.json")
    tmp = tempfile.mkdtemp(prefix="ray_scaling-")
    pool = os.path.join(tmp, "pool")
    n_captions = _pool(pool, a.shards, a.rows)

    made = []
    make = gc.make_executor

    def spy(cfg):  # keep the executor, to read how long starting its workers took
        made.append(make(cfg))
        return made[-1]

    gc.make_executor = spy

    def curate(out, **kw):
        cfg = CurateConfig(metadata=metadata, inputs=(pool,), out=os.path.join(tmp, out), t=20,
                           key_column="id", device=a.device, threads=1, report=False, **kw)
        t0 = time.perf_counter()
        s = run(cfg)
        return s, time.perf_counter() - t0

    rows = []

    def record(label, s, wall, same):
        # starting the workers (and their metadata, trie and compiled code) is
        # booked in seconds["setup"], outside the passes' own seconds
        startup = s["seconds"].get("setup", getattr(made[-1], "startup_s", 0.0))
        r = {"executor": label, "wall_s": round(wall, 3), "identical_to_local": same,
             "worker_startup_s": round(startup, 3)}
        for p in ("pass1", "pass2"):
            sec = s["seconds"][p]
            r[f"{p}_s"] = round(sec, 3)
            r[f"{p}_shards_per_s"] = round(a.shards / sec, 2)
            r[f"{p}_captions_per_s"] = round(n_captions / sec)
        rows.append(r)
        print(json.dumps(r))

    free = _free_cores(max(a.workers))
    load_before = os.getloadavg()
    s, wall = curate("local")
    record("local (1 process, 1 thread)", s, wall, True)
    for w in a.workers:
        s, wall = curate(f"ray{w}", executor="ray", extra={"ray_workers": w})
        record(f"ray, {w} worker{'s' if w > 1 else ''}", s, wall,
               _same(os.path.join(tmp, "local"), os.path.join(tmp, f"ray{w}")))

    import ray

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "?"
    doc = {"benchmark": "ray_scaling", "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "commit": commit, "command": "python -m bench.ray_scaling " + " ".join(
               f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
               for k, v in vars(a).items() if k not in ("results", "note") and v is not None),
           "note": a.note,
           "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                       "platform": platform.platform(), "python": platform.python_version(),
                       "ray": ray.__version__,
                       "free_cores_for_%d_processes" % max(a.workers): free,
                       "load_average_1m_before_after": [round(load_before[0], 2),
                                                        round(os.getloadavg()[0], 2)]},
           "pool": {"captions": n_captions, "shards": a.shards, "sources": SOURCES,
                    "metadata": "metadata_proxy.json (500k entries)", "device": a.device,
                    "threads_per_worker": 1},
           "results": rows}
    os.makedirs(a.results, exist_ok=True)
    stem = os.path.join(a.results, f"ray_scaling-{datetime.date.today().isoformat()}")
    lines = [f"# Ray executor scaling ({doc['date']}, commit {commit})", "",
             f"Command: `{doc['command']}`", "",
             f"Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, "
             f"{doc['machine']['platform']}, Python {doc['machine']['python']}, "
             f"Ray {doc['machine']['ray']}. Load average (1 min) before/after: "
             f"{doc['machine']['load_average_1m_before_after']} (other jobs share "
             "the machine when above 0). A pure-Python loop in "
             f"{max(a.workers)} processes at once got {free} cores' worth of CPU just before "
             "the runs.", "",
             f"Pool: {n_captions:,} real captions in {a.shards} parquet shards, 500k-entry "
             f"metadata, device {a.device}, one engine thread per worker.", "",
             "The passes exclude starting the workers, local or Ray (column startup: "
             "the processes, metadata, trie and compiled code); wall is the whole run, "
             "Ray's own start included.", "",
             "| executor | pass 1 shards/s | pass 1 captions/s | pass 2 shards/s | "
             "pass 2 captions/s | startup s | wall s | identical |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['executor']} | {r['pass1_shards_per_s']} | "
                     f"{r['pass1_captions_per_s']:,} | {r['pass2_shards_per_s']} | "
                     f"{r['pass2_captions_per_s']:,} | {r['worker_startup_s']} | {r['wall_s']} | "
                     f"{'yes' if r['identical_to_local'] else 'NO'} |")
    if a.note:
        lines += ["", f"Note: {a.note}"]
    from .suite import write_results

    write_results(stem, doc, "\n".join(lines) + "\n")
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
