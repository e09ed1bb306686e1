"""The benchmark suite behind ``python -m bench``.

Implementations, all timed over the same in-memory captions after a warm-up,
excluding file reading, trie build and JIT compile (reported apart):

* ``reference``: MetaCLIP's loop as users run it (per Python str: ``spacing``,
  pyahocorasick ``automaton.iter``, set, sorted), each key mapped to all its ids;
* ``hyperscan``: the same rule through Hyperscan's literal matcher, when installed;
* ``cpu``: gpucurate's CPU engine, one thread and all threads;
* ``gpu``: gpucurate's CUDA path, kernels only (captions already on the device)
  and end to end (``curate --device gpu``: read, transfer, match, count, balance,
  write), when a GPU is usable.

Every result that two implementations both produce is checked to be identical
before its time is reported.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import workloads as W

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------- machine facts
def machine() -> dict:
    d = {"cpu": W.cpu_model(), "cores": len(os.sched_getaffinity(0)),
         "python": platform.python_version(), "platform": platform.platform()}
    from gpucurate.engine import gpu_status

    ok, why = gpu_status()
    d["gpu"] = why if ok else None
    d["gpu_status"] = why
    return d


def commit() -> str:
    """The checkout's short commit (+"-dirty"), or $GPUCURATE_COMMIT when set (a copy
    of the tree whose git metadata is not the code's, as on a lent GPU machine)."""
    if os.environ.get("GPUCURATE_COMMIT"):
        return os.environ["GPUCURATE_COMMIT"]
    try:
        c = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return c + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------- implementations
class Reference:
    name = "reference"

    def __init__(self, entries):
        from gpucurate.reference import AhoCorasickReference

        t0 = time.perf_counter()
        self.ref = AhoCorasickReference(entries)
        self.build_s = time.perf_counter() - t0

    def run(self, texts: list):
        return [self.ref.match(t) for t in texts]


class Hyperscan:
    """Hyperscan literal database of every " entry " (single match per pattern
    per scan, so each caption reports each entry once), over the spaced text."""

    name = "hyperscan"

    def __init__(self, entries):
        import hyperscan

        from gpucurate.reference import can_ever_match

        t0 = time.perf_counter()
        ids: dict[bytes, list[int]] = {}
        for i, e in enumerate(entries):
            if can_ever_match(e):
                ids.setdefault(f" {e} ".encode(), []).append(i)
        self.keys = list(ids)
        self.ids = [ids[k] for k in self.keys]
        self.db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self.db.compile(expressions=self.keys, ids=list(range(len(self.keys))),
                        flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(self.keys), literal=True)
        self.build_s = time.perf_counter() - t0

    def run(self, texts: list):
        from gpucurate.reference import spacing

        out = []
        for t in texts:
            found: list[int] = []
            if t is not None:
                def on(pid, start, end, flags, ctx):
                    found.extend(self.ids[pid])
                self.db.scan(spacing(t).encode(), match_event_handler=on)
            out.append(sorted(set(found)))
        return out


def to_lists(off, ids) -> list:
    return [ids[off[i]:off[i + 1]].tolist() for i in range(off.size - 1)]


def time_call(fn, reps: int = 1) -> tuple[float, object]:
    best, res = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return best, res


def row(impl, label, n, nbytes, seconds, pairs, **extra) -> dict:
    return {"impl": impl, "workload": label, "captions": n, "bytes": nbytes,
            "seconds": seconds, "captions_per_s": n / seconds, "mb_per_s": nbytes / seconds / 1e6,
            "pairs_per_s": pairs / seconds, "pairs": pairs, **extra}


# --------------------------------------------------------------------- runs
def bench_workload(label, arr: pa.Array, impls: dict, threads_all: int, reps: int,
                   ref_max: int, ref_reps: int = 1, rounds: int = 1) -> list[dict]:
    """Time every implementation on one in-memory caption array.

    Each implementation runs in blocks of back-to-back repetitions (``reps``
    for gpucurate, ``ref_reps`` for the reference and Hyperscan), so that each
    is timed with its own data warm in the caches; ``rounds`` > 1 alternates
    the blocks (gpucurate's, then the reference's, then again), so that a busy
    spell of a shared machine does not fall on one implementation's only block.
    Each keeps its best repetition.
    """
    from gpucurate.columns import buffers

    tb = buffers(arr)
    n, nbytes = len(arr), tb.nbytes_text
    texts = arr.to_pylist() if n <= ref_max and ("reference" in impls or "hyperscan" in impls) \
        else None
    blocks = []  # (key, repetitions per block, fn)
    for key in ("cpu1", "cpuN"):
        eng = impls.get(key)
        if eng is not None:
            eng.match(buffers(arr.slice(0, min(n, 1000))))  # warm-up (JIT already cached)
            blocks.append((key, reps, lambda eng=eng: eng.match(tb)))
    if texts is not None:
        for key in ("reference", "hyperscan"):
            impl = impls.get(key)
            if impl is not None:
                impl.run(texts[:200])
                blocks.append((key, ref_reps if n <= 1_000_000 else 1,
                               lambda impl=impl: impl.run(texts)))
    best, results = {}, {}
    for _ in range(rounds if n <= 1_000_000 else 1):
        for key, k, fn in blocks:
            s, res = time_call(fn, k)
            if s < best.get(key, float("inf")):
                best[key], results[key] = s, res
    rows = []
    for key in ("cpu1", "cpuN"):
        if key in results:
            rows.append(row("cpu", label, n, nbytes, best[key], int(results[key][1].size),
                            threads=impls[key].threads))
    cpu_result = results.get("cpu1") or results.get("cpuN")
    if "gpu" in impls:
        rows += bench_gpu_kernels(label, impls["gpu"], tb, reps, cpu_result)
    cpu_lists = to_lists(*cpu_result) if cpu_result is not None else None
    for key in ("reference", "hyperscan"):
        if key in results:
            lists = results[key]
            if cpu_lists is not None and lists != cpu_lists:
                bad = next(i for i in range(n) if lists[i] != cpu_lists[i])
                raise AssertionError(f"{key} and gpucurate differ on {label} row {bad}")
            rows.append(row(key, label, n, nbytes, best[key], sum(len(x) for x in lists)))
    ref = next((r for r in rows if r["impl"] == "reference"), None)
    for r in rows:
        r["speedup_vs_reference"] = (r["captions_per_s"] / ref["captions_per_s"]) if ref else None
    return rows


def bench_gpu_kernels(label, eng, tb, reps, cpu_result) -> list[dict]:
    """Kernel-only GPU time: captions already on the device; synchronized."""
    import cupy

    data, offsets, valid = eng.upload(tb)
    eng.match_device(data, offsets, valid)
    cupy.cuda.Device().synchronize()

    def once():
        r = eng.match_device(data, offsets, valid)
        cupy.cuda.Device().synchronize()
        return r

    s, (off, ids) = time_call(once, reps)
    if cpu_result is not None:
        assert np.array_equal(cupy.asnumpy(off), cpu_result[0]), label
        assert np.array_equal(cupy.asnumpy(ids), cpu_result[1]), label
    return [row("gpu-kernels", label, len(tb), tb.nbytes_text, s, int(ids.size))]


def bench_curate(label, pool_dir, metadata, device, t, threads=None) -> dict:
    from gpucurate.pipeline import curate

    out = tempfile.mkdtemp(prefix="gpucurate-bench-")
    t0 = time.perf_counter()
    s = curate(metadata, [pool_dir], out, t=t, device=device, threads=threads, report=False)
    wall = time.perf_counter() - t0
    return {"impl": f"curate-{device}", "workload": label, "captions": s["pool"],
            "seconds": wall, "captions_per_s": s["pool"] / wall,
            "pass_seconds": s["seconds"], "pass_captions_per_s": s["captions_per_s"],
            "curated": s["curated"], "matched": s["matched"]}


def write_pool(gen: W.PoolGenerator, n: int, root: str, shard_rows: int = 1_000_000) -> str:
    os.makedirs(root, exist_ok=True)
    for i, chunk in enumerate(gen.pool(n, shard_rows)):
        pq.write_table(pa.table({"text": chunk}), os.path.join(root, f"part-{i:05d}.parquet"))
    return root


# ------------------------------------------------------------------ outputs
def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# gpucurate benchmark, {res['date']}", "",
             f"- machine: {m['cpu']}, {m['cores']} cores; GPU: {m['gpu'] or 'none (' + m['gpu_status'] + ')'}",
             f"- commit: `{res['commit']}`; command: `{res['command']}`",
             f"- versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()), "",
             "## Trie build", "", "| entries | build s | MB |", "|---:|---:|---:|"]
    for t in res["trie"]:
        lines.append(f"| {t['entries']:,} | {t['build_s']:.2f} | {t['bytes'] / 1e6:.1f} |")
    for section in ("real", "scaling"):
        rows = res[section]
        if not rows:
            continue
        lines += ["", f"## {'Real caption files' if section == 'real' else 'Generated pools'}", "",
                  "| workload | entries | impl | threads | captions | captions/s | MB/s | pairs/s "
                  "| x reference |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            sp = f"{r['speedup_vs_reference']:.1f}" if r.get("speedup_vs_reference") else "-"
            lines.append(f"| {r['workload']} | {r.get('entries', 0):,} | {r['impl']} | "
                         f"{r.get('threads', '-')} | {r['captions']:,} | {r['captions_per_s']:,.0f} "
                         f"| {r['mb_per_s']:.1f} | {r['pairs_per_s']:,.0f} | {sp} |")
    if res["curate"]:
        lines += ["", "## Whole curation (read, match, count, balance, write)", "",
                  "| workload | impl | captions | seconds | captions/s | pass 1 s | pass 2 s |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in res["curate"]:
            ps = r["pass_seconds"]
            lines.append(f"| {r['workload']} | {r['impl']} | {r['captions']:,} | "
                         f"{r['seconds']:.2f} | {r['captions_per_s']:,.0f} | "
                         f"{ps.get('pass1', 0):.2f} | {ps.get('pass2', 0):.2f} |")
    lines += ["", f"Peak host RSS: {res['peak_rss_mb']:.0f} MB."]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict = {}
    for r in res["scaling"]:
        key = f"{r['impl']}" + (f" ({r['threads']} thr)" if r.get("threads") else "") + \
            f", {r.get('entries', 0) // 1000}k entries"
        series.setdefault(key, []).append((r["captions"], r["captions_per_s"]))
    for key, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pool size (captions)")
    ax.set_ylabel("captions / s")
    ax.set_title(f"gpucurate throughput ({res['machine']['cpu'][:40]})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------- main
def run(args) -> dict:
    from gpucurate.engine import CpuEngine, default_threads, gpu_status
    from gpucurate.tables import from_trie
    from gpucurate.trie import build_trie

    root = W.shared_data()
    all_entries = W.load_metadata(root) if root else None
    if all_entries is None:
        from gpucurate.cli.demo import metadata as demo_metadata

        all_entries = demo_metadata()
    impl_names = set(args.impls.split(","))
    gpu_ok = gpu_status()[0] and "gpu" in impl_names
    threads_all = args.threads or default_threads()
    res = {"date": datetime.date.today().isoformat(), "commit": commit(),
           "command": "python -m bench " + " ".join(sys.argv[1:] if args.argv is None
                                                     else args.argv),
           "machine": machine(), "versions": {}, "trie": [], "real": [], "scaling": [],
           "curate": []}
    from gpucurate.pipeline import versions as _versions

    res["versions"] = _versions()
    sizes = [int(x) for x in args.metadata_sizes.split(",")]
    pools = [int(x) for x in args.pools.split(",")] if args.pools else []
    gen = W.generator_from(root, all_entries, seed=0)
    for msize in sizes:
        entries = all_entries[:msize]
        build_trie(entries[:100])  # JIT warm-up
        t0 = time.perf_counter()
        trie = build_trie(entries)
        res["trie"].append({"entries": len(entries), "build_s": time.perf_counter() - t0,
                            "bytes": trie.nbytes, "nodes": trie.n_nodes})
        tables = from_trie(trie)
        impls: dict = {"cpu1": CpuEngine(tables, 1)}
        if threads_all > 1:
            impls["cpuN"] = CpuEngine(tables, threads_all)
        if "reference" in impl_names:
            impls["reference"] = Reference(entries)
            res["trie"][-1]["reference_build_s"] = impls["reference"].build_s
        if "hyperscan" in impl_names:
            try:
                impls["hyperscan"] = Hyperscan(entries)
                res["trie"][-1]["hyperscan_build_s"] = impls["hyperscan"].build_s
            except ImportError:
                pass
        if gpu_ok:
            from gpucurate.gpu import GpuEngine

            impls["gpu"] = GpuEngine(tables)
        if "cpu" not in impl_names:
            impls.pop("cpu1"), impls.pop("cpuN", None)
        if root and msize == max(sizes) and args.real:
            caps = W.real_captions(root)
            pooled = []
            for name, arr in caps.items():
                arr = arr.slice(0, args.real_rows) if args.real_rows else arr
                pooled.append(arr.cast(pa.large_string()))
                for r in bench_workload(name, arr, impls, threads_all, args.reps, 10**9,
                                        args.ref_reps, args.rounds):
                    r["entries"] = msize
                    res["real"].append(r)
            for r in bench_workload("pooled", pa.concat_arrays(pooled), impls, threads_all,
                                    args.reps, 10**9, args.ref_reps, args.rounds):
                r["entries"] = msize
                res["real"].append(r)
        for n in pools:
            arr = pa.concat_arrays(list(gen.pool(n)))
            sub = dict(impls)
            if n > args.reference_max:
                sub.pop("reference", None)
                sub.pop("hyperscan", None)
            if n > args.cpu_max:
                sub.pop("cpu1", None)
                sub.pop("cpuN", None)
            for r in bench_workload(f"generated {n:,}", arr, sub, threads_all, args.reps,
                                    args.reference_max):
                r["entries"] = msize
                res["scaling"].append(r)
    if args.curate_pool:
        with tempfile.TemporaryDirectory() as d:
            pool_dir = write_pool(gen, args.curate_pool, os.path.join(d, "pool"))
            meta = os.path.join(d, "meta.json")
            with open(meta, "w") as f:
                json.dump(all_entries[: max(sizes)], f)
            t = max(1, args.curate_pool // 20_000)
            res["curate"].append(bench_curate(f"generated {args.curate_pool:,}", pool_dir, meta,
                                              "cpu", t))
            if gpu_ok:
                res["curate"].append(bench_curate(f"generated {args.curate_pool:,}", pool_dir,
                                                  meta, "gpu", t))
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def write_results(stem: str, doc: dict, md: str) -> None:
    """``stem.json`` (every figure) and ``stem.md`` (the table people read)."""
    with open(stem + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(md)


def save(res: dict, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    dev = "gpu" if res["machine"]["gpu"] else "cpu"
    stem = os.path.join(out_dir, f"{res['date']}-{dev}-{res['commit']}")
    write_results(stem, res, markdown(res))
    if res["scaling"]:
        plot(res, stem + ".png")
    return stem
