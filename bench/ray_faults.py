"""Node loss on a two-node Ray cluster: does the run survive, with the same output?

    python -m bench.ray_faults [--trials 10] [--shards 16] [--seed 0]

Each trial starts a fresh two-node Ray cluster (one CPU each) inside a network
namespace that holds only ``lo`` (tests/raycluster.py; needs root), runs
``curate --executor ray --address 127.0.0.1:6379`` on a pool of real captions,
and SIGKILLs node 2 at a random moment of a random pass: once that pass has a
random number of shards done, after a random fraction of a shard's time more; half the trials kill
the raylet alone, half the raylet with every process of the node. A trial is
"ok" when the run exits 0 with output identical to the local executor's
(entry_counts.parquet and every curated part, byte for byte); "resumed" when
it failed cleanly (exit 2, gpucurate's message) and the same command, rerun
on the surviving cluster, then finished with identical output; anything else is
"bad". The goal: at least 9 of 10 ok, none bad. Writes
bench/results/<date>-ray_faults-<commit>.json.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from bench.ray_scaling import SHARED, _pool  # noqa: E402
from bench.workloads import cpu_model  # noqa: E402


def _numba_cache() -> str:
    """The tests' numba cache (conftest.py), so no worker recompiles."""
    src = hashlib.sha256(b"".join(open(p, "rb").read() for p in
                                  sorted(glob.glob(os.path.join(ROOT, "kernels", "*.py")))))
    return os.path.join(os.environ.get("NUMBA_CACHE_DIR", os.path.join(ROOT, ".numba_cache")),
                        src.hexdigest()[:16])


def _outputs(out: str) -> dict:
    rels = ["entry_counts.parquet"] + sorted(
        os.path.relpath(p, out) for p in glob.glob(os.path.join(out, "curated", "*")))
    h = {}
    for r in rels:
        p = os.path.join(out, r)
        h[r] = hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.exists(p) else None
    return h


def _args(metadata, pool, out, t=3):
    return ["curate", "--metadata", metadata, "--input", pool, "--out", out, "--t", str(t),
            "--key-column", "id", "--device", "cpu", "--threads", "1", "--no-report"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ray_faults", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--batch-bytes", type=int, default=2048,
                    help="small batches make a shard last long enough to be hit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--schedule-timeout", type=int, default=30,
                    help="$GPUCURATE_RAY_SCHEDULE_TIMEOUT of the runs")
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)

    from raycluster import NsCluster, is_loopback, skip_reason

    why = skip_reason()
    if why:
        print(f"bench.ray_faults: cannot run here: {why}", file=sys.stderr)
        return 2
    os.environ["NUMBA_CACHE_DIR"] = _numba_cache()
    rng = random.Random(a.seed)
    metadata = os.path.join(SHARED, "metaclip_metadata", "metadata_proxy.json")
    tmp = tempfile.mkdtemp(prefix="ray_faults-")
    pool = os.path.join(tmp, "pool")
    n_captions = _pool(pool, a.shards, a.rows)
    local = os.path.join(tmp, "local")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "gpucurate", *_args(metadata, pool, local),
                        "--quiet", "--batch-bytes", str(a.batch_bytes)],
                       env=env, capture_output=True, text=True)
    if r.returncode:
        print(r.stderr, file=sys.stderr)
        return 2
    want = _outputs(local)

    trials = []
    for k in range(a.trials):
        which = rng.choice([1, 2])
        after = rng.randint(1 if which == 1 else 0, a.shards - 2)
        # pass 1 shards take ~0.3 s here, pass 2 shards ~15 ms
        delay = round(rng.uniform(0, 0.3 if which == 1 else 0.012), 4)
        raylet_only = rng.random() < 0.5
        out = os.path.join(tmp, f"trial{k}")
        cmd = [sys.executable, "-m", "gpucurate", *_args(metadata, pool, out),
               "--batch-bytes", str(a.batch_bytes), "--executor", "ray",
               "--address", "127.0.0.1:6379"]
        rec = {"trial": k, "pass": which, "after_shards": after, "delay_s": delay,
               "kill": "raylet" if raylet_only else "raylet+workers"}
        t0 = time.perf_counter()
        with NsCluster(nodes=2, cpus=1) as c:
            denv = c.env(GPUCURATE_RAY_SCHEDULE_TIMEOUT=str(a.schedule_timeout))
            done, killed = threading.Event(), []
            mdir = os.path.join(out, "work/pass1" if which == 1 else "stats")
            gate = None if which == 1 else os.path.join(out, "work", "prob.npz")

            def killer():
                while not done.is_set() and gate and not os.path.exists(gate):
                    time.sleep(0.002)
                while not done.is_set() and len(glob.glob(os.path.join(mdir, "*.json"))) < after:
                    time.sleep(0.002)
                if done.wait(delay):
                    return
                n = len(glob.glob(os.path.join(mdir, "*.json")))
                killed.append({"markers_at_kill": n, "pids": c.kill_node(1, raylet_only)})

            th = threading.Thread(target=killer, daemon=True)
            th.start()
            p = c.run(cmd, env=denv, capture_output=True, text=True, timeout=600)
            done.set()
            th.join(10)
            rec["exit"] = p.returncode
            rec["killed"] = bool(killed)
            rec.update(killed[0] if killed else {})
            rec["mid_pass"] = bool(killed) and killed[0]["markers_at_kill"] < a.shards
            rec["workers_lost"] = p.stderr.count("a worker was lost")
            rec["loopback_only"] = all(is_loopback(x) for x, _, _ in c.listening())
            if p.returncode == 0:
                rec["identical"] = _outputs(out) == want
                rec["result"] = "ok" if rec["identical"] else "bad"
            else:
                rec["error"] = p.stderr.strip().splitlines()[-1][-400:] if p.stderr else ""
                clean = p.returncode == 2 and "gpucurate: error" in p.stderr
                p2 = c.run(cmd, env=denv, capture_output=True, text=True, timeout=600)
                rec["resume_exit"] = p2.returncode
                rec["identical"] = p2.returncode == 0 and _outputs(out) == want
                rec["result"] = "resumed" if clean and rec["identical"] else "bad"
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        trials.append(rec)
        print(json.dumps({k: v for k, v in rec.items() if k != "pids"}), flush=True)

    counts = {x: sum(t["result"] == x for t in trials) for x in ("ok", "resumed", "bad")}
    counts["killed_mid_pass"] = sum(bool(t.get("mid_pass")) for t in trials)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=ROOT, capture_output=True, text=True).stdout.strip())
    import ray

    res = {"bench": "ray_faults", "date": datetime.date.today().isoformat(),
           "commit": commit + ("-dirty" if dirty else ""),
           "command": "python -m bench.ray_faults " + " ".join(argv if argv is not None
                                                                else sys.argv[1:]),
           "device": f"cpu: {cpu_model()}, {os.cpu_count()} cores (2 Ray nodes x 1 CPU, "
                     "one network namespace, loopback only)",
           "ray": ray.__version__, "python": platform.python_version(),
           "pool": {"captions": n_captions, "shards": a.shards, "batch_bytes": a.batch_bytes},
           "seed": a.seed, "goal": ">= 9/10 ok, the rest resumed, none bad",
           "counts": counts, "met": counts["bad"] == 0 and counts["ok"] >= 0.9 * a.trials,
           "trials": trials}
    print(json.dumps({"counts": counts, "met": res["met"]}))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    if not a.no_write:
        os.makedirs(a.results, exist_ok=True)
        path = os.path.join(a.results, f"{res['date']}-ray_faults-{commit}.json")
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
        print(path)
    return 0 if res["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
