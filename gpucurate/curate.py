"""The curation pipeline: pass 1 (match and count), merge, pass 2 (balance).

Stages are plain functions of (config, shard, ...) that a worker runs after a
once-per-process ``setup`` (metadata, trie, engine). Executors only schedule
them: :class:`LocalExecutor` here, the Ray executor in ``gpucurate.ray_executor``.
Every file is written atomically (temporary file, then rename) and every shard
leaves a completion marker, so a rerun skips finished work and gives identical
outputs.

Layout of an output directory ``DIR``::

    config.json                      fingerprint of what decides the outputs
    work/pass1/shard-NNNNN.json      pass-1 marker and stats of shard NNNNN
    work/pass1/shard-NNNNN.parquet   its sparse entry counts (entry_id, count)
    matches/shard-NNNNN.parquet      with --save-matches: (entry_id, text_id) uint32
    entry_counts.parquet             entry_id, entry, count (uint64), prob
    curated/part-NNNNN.parquet       kept rows of shard NNNNN, plus entry_ids
    stats/shard-NNNNN.json           per-shard stats (the pass-2 marker)
    summary.json                     the funnel, t, timings, versions
"""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .columns import buffers, chunks_of
from .config import CurateConfig
from .errors import ConfigError, InputError
from .io import Shard, atomic_write_json, atomic_write_parquet, read_batches, resolve_inputs
from .keys import key_hashes, probabilities, row_key_hashes
from .log import Progress, logger
from .metadata import load_metadata

# ------------------------------------------------------------------ t rules


def p_to_t(counts, p: float) -> int:
    """MetaCLIP 2's ``p_to_t``: sort the counts ascending (zeros included), take
    the cumulative share of the total at each position; t is the count at the
    position whose share is nearest ``p`` (the first such position on ties)."""
    c = np.sort(np.asarray(counts, dtype=np.float64))
    total = c.sum()
    if total <= 0:
        raise ConfigError("--tail-fraction: the pool matched no entry, so no t can be derived")
    share = np.cumsum(c) / total
    return int(c[int(np.argmin(np.abs(share - p)))])


def t_to_p(counts, t: float) -> float:
    """MetaCLIP 2's ``t_to_p``: the share of all matches held by entries with count < t."""
    c = np.asarray(counts, dtype=np.float64)
    return float(c[c < t].sum() / c.sum())


# -------------------------------------------------------------- the worker

_WORKER: dict = {}


def setup(cfg: CurateConfig):
    """Once per process: metadata, trie and engine (cached across shards)."""
    from .engine import make_engine, resolve_device
    from .trie import load_trie

    key = (cfg.metadata, cfg.device, cfg.threads)
    if _WORKER.get("key") != key:
        device = resolve_device(cfg.device)  # fail fast, before building anything
        md = load_metadata(cfg.metadata)
        trie = load_trie(md)
        _WORKER.clear()
        _WORKER.update(key=key, metadata=md, trie=trie, engine=make_engine(trie, device,
                                                                           cfg.threads))
    return _WORKER


def install_worker(cfg: CurateConfig, metadata, trie) -> dict:
    """Like :func:`setup`, with a metadata list and trie built elsewhere (the Ray
    driver ships them through its object store) instead of loaded from disk.
    Stages then find this process set up for ``cfg``; a no-op when it already is."""
    from .engine import make_engine, resolve_device

    key = (cfg.metadata, cfg.device, cfg.threads)
    if _WORKER.get("key") != key:
        device = resolve_device(cfg.device)
        _WORKER.clear()
        _WORKER.update(key=key, metadata=metadata, trie=trie,
                       engine=make_engine(trie, device, cfg.threads))
    return _WORKER


def _name(i: int, stem: str, ext: str) -> str:
    return f"{stem}-{i:05d}.{ext}"


def _keys(cfg: CurateConfig, shard: Shard, table: pa.Table, first_row: int) -> np.ndarray:
    if cfg.key_column is None:
        return row_key_hashes(shard.name, first_row, table.num_rows)
    if cfg.key_column not in table.column_names:
        raise InputError(f"{shard.path}: no key column {cfg.key_column!r} (columns: "
                         f"{', '.join(table.column_names)})")
    return key_hashes(table.column(cfg.key_column), where=shard.path, first_row=first_row)


def _batches(cfg: CurateConfig, shard: Shard, max_rows: int | None):
    """(table, first_row) of the shard, stopping after max_rows rows."""
    row = 0
    for table in read_batches(shard, cfg.text_column, cfg.batch_bytes):
        if max_rows is not None and row + table.num_rows > max_rows:
            table = table.slice(0, max_rows - row)
        if table.num_rows:
            if "entry_ids" in table.column_names:
                raise InputError(f"{shard.path}: already has a column 'entry_ids', which "
                                 "curation adds; rename or drop it")
            yield table, row
        row += table.num_rows
        if max_rows is not None and row >= max_rows:
            return


def _text(table: pa.Table, cfg: CurateConfig, shard: Shard, first_row: int):
    col = table.column(cfg.text_column)
    if pa.types.is_null(col.type):
        col = col.cast(pa.large_string())
    chunks = chunks_of(col)
    arr = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
    return buffers(arr, where=f"{shard.path} (rows from {first_row})"), arr


def pass1_shard(cfg: CurateConfig, out: str, shard: Shard, max_rows: int | None) -> dict:
    """Match and count one shard; write its sparse counts and marker."""
    marker = os.path.join(out, "work", "pass1", _name(shard.index, "shard", "json"))
    if os.path.exists(marker):
        with open(marker) as f:
            return json.load(f)
    w = setup(cfg)
    eng, n_entries = w["engine"], len(w["metadata"])
    t0 = time.perf_counter()
    counts = eng.zeros(n_entries, np.uint64)
    captions = nulls = matched = 0
    inv_e, inv_t = [], []
    prog = Progress(f"pass 1 {shard.name}")
    for table, first in _batches(cfg, shard, max_rows):
        tb, arr = _text(table, cfg, shard, first)
        if cfg.key_column is not None:
            _keys(cfg, shard, table, first)  # validate keys in pass 1, before any output
        off, ids = eng.match_native(tb)
        eng.count_into(ids, counts)
        h_off = eng.to_host(off)
        lens = np.diff(h_off)
        captions += len(tb)
        nulls += int(len(tb) - int(tb.valid.sum()))
        matched += int(np.count_nonzero(lens))
        if cfg.save_matches:
            h_ids = eng.to_host(ids)
            inv_e.append(h_ids.astype(np.uint32))
            inv_t.append((np.repeat(np.arange(len(tb), dtype=np.int64), lens) + first)
                         .astype(np.uint32))
        prog.update(len(tb))
    seconds = prog.close() if captions else time.perf_counter() - t0
    c = eng.to_host(counts)
    nz = np.nonzero(c)[0]
    atomic_write_parquet(marker[:-5] + ".parquet", pa.table({
        "entry_id": pa.array(nz.astype(np.int32)), "count": pa.array(c[nz], pa.uint64())}))
    if cfg.save_matches:
        os.makedirs(os.path.join(out, "matches"), exist_ok=True)
        e = np.concatenate(inv_e) if inv_e else np.zeros(0, np.uint32)
        t = np.concatenate(inv_t) if inv_t else np.zeros(0, np.uint32)
        atomic_write_parquet(os.path.join(out, "matches", _name(shard.index, "shard", "parquet")),
                             pa.table({"entry_id": pa.array(e), "text_id": pa.array(t)}))
    stats = {"shard": shard.name, "path": shard.path, "captions": captions,
             "null_captions": nulls, "matched": matched, "seconds_pass1": seconds}
    atomic_write_json(marker, stats)
    return stats


def _saved_matches(out: str, shard: Shard, first: int, n: int):
    """CSR of rows first..first+n from the shard's saved inverted index."""
    path = os.path.join(out, "matches", _name(shard.index, "shard", "parquet"))
    t = pq.read_table(path)
    text_id = t.column("text_id").to_numpy().astype(np.int64)
    entry = t.column("entry_id").to_numpy().astype(np.int32)
    sel = (text_id >= first) & (text_id < first + n)
    text_id, entry = text_id[sel], entry[sel]
    order = np.lexsort((entry, text_id))
    text_id, entry = text_id[order], entry[order]
    off = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(text_id - first, minlength=n), out=off[1:])
    return off, entry


def pass2_shard(cfg: CurateConfig, out: str, shard: Shard, max_rows: int | None,
                prob: np.ndarray) -> dict:
    """Balance one shard: write its kept rows and its stats (the marker)."""
    marker = os.path.join(out, "stats", _name(shard.index, "shard", "json"))
    if os.path.exists(marker):
        with open(marker) as f:
            return json.load(f)
    w = setup(cfg)
    eng = w["engine"]
    if w.get("prob_src") is not prob:
        w["prob_src"], w["prob"] = prob, eng.to_device(prob)
    d_prob = w["prob"]
    use_saved = cfg.save_matches and os.path.exists(
        os.path.join(out, "matches", _name(shard.index, "shard", "parquet")))
    t0 = time.perf_counter()
    parts = []
    captions = nulls = matched = kept = 0
    prog = Progress(f"pass 2 {shard.name}")
    for table, first in _batches(cfg, shard, max_rows):
        keys = _keys(cfg, shard, table, first)
        if use_saved:
            h_off, h_ids = _saved_matches(out, shard, first, table.num_rows)
            off, ids = eng.to_device(h_off), eng.to_device(h_ids)
            valid = table.column(cfg.text_column).is_valid().to_numpy(zero_copy_only=False)
            n_valid = int(valid.sum())
        else:
            tb, _ = _text(table, cfg, shard, first)
            off, ids = eng.match_native(tb)
            h_off, h_ids = eng.to_host(off), eng.to_host(ids)
            n_valid = int(tb.valid.sum())
        keep = eng.to_host(eng.keep(ids, off, eng.to_device(keys), d_prob, cfg.seed)).astype(bool)
        captions += table.num_rows
        nulls += table.num_rows - n_valid
        matched += int(np.count_nonzero(np.diff(h_off)))
        idx = np.nonzero(keep)[0]
        kept += int(idx.size)
        if idx.size:
            lists = pa.ListArray.from_arrays(pa.array(h_off.astype(np.int64).astype(np.int32)
                                                      if h_off[-1] < 2**31 else h_off),
                                             pa.array(h_ids, pa.int32()))
            sub = table.take(pa.array(idx))
            parts.append(sub.append_column("entry_ids", lists.take(pa.array(idx))))
        prog.update(table.num_rows)
    seconds = prog.close() if captions else time.perf_counter() - t0
    os.makedirs(os.path.join(out, "curated"), exist_ok=True)
    if parts:
        table = pa.concat_tables(parts, promote_options="permissive")
    else:
        table = _empty_schema(cfg, shard)
    atomic_write_parquet(os.path.join(out, "curated", _name(shard.index, "part", "parquet")), table)
    p1 = os.path.join(out, "work", "pass1", _name(shard.index, "shard", "json"))
    stats = {"shard": shard.name, "path": shard.path, "captions": captions,
             "null_captions": nulls, "matched": matched, "kept": kept,
             "seconds_pass2": seconds}
    if os.path.exists(p1):
        with open(p1) as f:
            stats["seconds_pass1"] = json.load(f)["seconds_pass1"]
    atomic_write_json(marker, stats)
    return stats


def _empty_schema(cfg: CurateConfig, shard: Shard) -> pa.Table:
    if shard.fmt == "parquet":
        schema = pq.read_schema(shard.path)
    else:
        schema = pa.schema([(cfg.text_column, pa.large_string())])
    return schema.empty_table().append_column("entry_ids", pa.array([], pa.list_(pa.int32())))


# ------------------------------------------------------------- executors


class LocalExecutor:
    """Runs stage calls one after another in this process (the engine itself
    is parallel: CPU threads, or the GPU)."""

    name = "local"

    def map(self, fn, cfg: CurateConfig, out: str, calls: list[tuple]) -> list:
        return [fn(cfg, out, *args) for args in calls]

    def close(self) -> None:
        pass


def make_executor(cfg: CurateConfig):
    if cfg.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(cfg)
    return LocalExecutor()


# ------------------------------------------------------------ the runs


def _versions() -> dict:
    import numba

    v = {"gpucurate": __version__, "python": platform.python_version(),
         "numpy": np.__version__, "pyarrow": pa.__version__, "numba": numba.__version__}
    for mod in ("cupy", "cudf", "rmm", "numba_cuda", "ray"):
        try:
            m = __import__(mod)
            v[mod] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001 - absent or broken optional package
            pass
    return v


_OUTPUTS = ("config.json", "work", "matches", "entry_counts.parquet", "curated", "stats",
            "summary.json", "report")


def _prepare_out(cfg: CurateConfig, out: str, fingerprint: str, stage: str) -> None:
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        done = [p for d in ("work/pass1", "stats") for p in
                glob.glob(os.path.join(out, d, "*.json"))]
        if old.get("config_fingerprint") != fingerprint and (done or os.path.exists(
                os.path.join(out, "summary.json"))):
            if not cfg.overwrite:
                raise ConfigError(f"{out} holds a run with another configuration "
                                  f"(fingerprint {old.get('config_fingerprint', '?')[:12]} != "
                                  f"{fingerprint[:12]}); pass --overwrite to replace it, or "
                                  "choose another --out")
            for name in _OUTPUTS:
                p = os.path.join(out, name)
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.remove(p)
    for tmp in glob.glob(os.path.join(out, "**", "*.tmp-*"), recursive=True):
        os.remove(tmp)  # leftovers of an interrupted run
    for d in ("work/pass1", "stats"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    atomic_write_json(path, {"config_fingerprint": fingerprint, "stage": stage,
                             "config": cfg.as_dict()})


def _plan(cfg: CurateConfig, shards: list[Shard]) -> list[tuple[Shard, int | None]]:
    """Shards with their row budget under --limit (shards past it are dropped)."""
    if cfg.limit is None:
        return [(s, None) for s in shards]
    plan, left = [], cfg.limit
    for s in shards:
        if left <= 0:
            break
        n = _count_rows(s)
        plan.append((s, min(n, left)))
        left -= n
    return plan


def _count_rows(shard: Shard) -> int:
    from .io import _open_text

    if shard.fmt == "parquet":
        return pq.ParquetFile(shard.path).metadata.num_rows
    if shard.fmt == "jsonl":
        with _open_text(shard.path) as f:
            return sum(1 for _ in f)
    return sum(1 for _ in _tar_keys(shard))


def _tar_keys(shard: Shard):
    import tarfile

    last = None
    with tarfile.open(shard.path, "r|*") as tf:
        for m in tf:
            if not m.isfile() or "." not in os.path.basename(m.name):
                continue
            key = os.path.join(os.path.dirname(m.name), os.path.basename(m.name).split(".", 1)[0])
            if key != last:
                last = key
                yield key


def write_entry_counts(out: str, entries, counts: np.ndarray, prob: np.ndarray | None) -> None:
    cols = {"entry_id": pa.array(np.arange(len(entries), dtype=np.int32)),
            "entry": pa.array(list(entries), pa.string()),
            "count": pa.array(counts, pa.uint64())}
    if prob is not None:
        cols["prob"] = pa.array(prob, pa.float64())
    atomic_write_parquet(os.path.join(out, "entry_counts.parquet"), pa.table(cols))


def read_counts(path: str, metadata) -> np.ndarray:
    """Pool counts from an ``entry_counts.parquet`` (aligned by entry_id) or a
    MetaCLIP ``entry_counts_*.json`` (a mapping entry -> count)."""
    md = load_metadata(metadata)
    n = len(md)
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                mapping = json.load(f)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read counts ({exc})") from None
        if not isinstance(mapping, dict):
            raise InputError(f"{path}: a counts .json maps entry -> count; this holds a "
                             f"{type(mapping).__name__}")
        counts = np.zeros(n, np.uint64)
        for i, e in enumerate(md.entries):
            v = mapping.get(e, 0)
            if not isinstance(v, int) or v < 0:
                raise InputError(f"{path}: count of entry {e!r} is {v!r}, not an integer >= 0")
            counts[i] = v
        return counts
    try:
        t = pq.read_table(path, columns=["entry_id", "count"])
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise InputError(f"{path}: cannot read entry counts ({exc}); expected an "
                         "entry_counts.parquet with entry_id and count columns") from None
    ids = t.column("entry_id").to_numpy()
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise InputError(f"{path}: entry ids run to {ids.max()}, but the metadata has {n} "
                         "entries; use the counts made with this metadata")
    counts = np.zeros(n, np.uint64)
    np.add.at(counts, ids, t.column("count").to_numpy().astype(np.uint64))
    return counts


def merge_count_files(paths, metadata, out_path: str) -> np.ndarray:
    """Sum count files from independent jobs into one entry_counts.parquet."""
    md = load_metadata(metadata)
    total = np.zeros(len(md), np.uint64)
    for p in paths:
        total += read_counts(p, md)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    atomic_write_parquet(out_path, pa.table({
        "entry_id": pa.array(np.arange(len(md), dtype=np.int32)),
        "entry": pa.array(list(md.entries), pa.string()),
        "count": pa.array(total, pa.uint64())}))
    return total


def _pool_counts(out: str, n_entries: int, plan) -> np.ndarray:
    counts = np.zeros(n_entries, np.uint64)
    for shard, _ in plan:
        t = pq.read_table(os.path.join(out, "work", "pass1",
                                       _name(shard.index, "shard", "parquet")))
        ids = t.column("entry_id").to_numpy()
        counts[ids] += t.column("count").to_numpy().astype(np.uint64)
    return counts


def run(cfg: CurateConfig, stage: str = "curate") -> dict:
    """Run ``curate`` (pass 1 + pass 2), ``count`` (pass 1) or ``balance``
    (pass 2 from ``cfg.counts_file``) into ``cfg.out``; return the summary."""
    if stage in ("curate", "balance"):
        cfg.require_t()
    if stage == "balance" and not cfg.counts_file:
        raise ConfigError("balance needs --counts FILE (an entry_counts.parquet or a MetaCLIP "
                          "entry_counts_*.json)")
    md = load_metadata(cfg.metadata)
    shards = resolve_inputs(cfg.inputs, need_unique_names=cfg.key_column is None)
    counts_sha = None
    if stage == "balance":
        import hashlib

        counts_sha = hashlib.sha256(open(cfg.counts_file, "rb").read()).hexdigest()
    fp = cfg.fingerprint(md.sha256, [s.path for s in shards], stage, counts_sha)
    out = cfg.out
    _prepare_out(cfg, out, fp, stage)
    plan = _plan(cfg, shards)
    ex = make_executor(cfg)
    seconds = {}
    try:
        if stage in ("curate", "count"):
            t0 = time.perf_counter()
            p1 = ex.map(pass1_shard, cfg, out, [(s, m) for s, m in plan])
            seconds["pass1"] = time.perf_counter() - t0
            counts = _pool_counts(out, len(md), plan)
        else:
            p1 = None
            counts = read_counts(cfg.counts_file, md)
        if stage == "count":
            write_entry_counts(out, md.entries, counts, None)
            summary = _summary(cfg, stage, fp, p1, None, counts, None, seconds, ex)
            atomic_write_json(os.path.join(out, "summary.json"), summary)
            return summary
        t = cfg.t if cfg.t is not None else p_to_t(counts, cfg.tail_fraction)
        if t < 1:
            raise ConfigError(f"--tail-fraction {cfg.tail_fraction} gives t = {t}, below 1; "
                              "choose a larger fraction or give --t")
        logger.info("t = %s%s", f"{t:,}", f" (tail fraction {cfg.tail_fraction})"
                    if cfg.tail_fraction is not None else "")
        prob = probabilities(counts, t)
        write_entry_counts(out, md.entries, counts, prob)
        t0 = time.perf_counter()
        p2 = ex.map(pass2_shard, cfg, out, [(s, m, prob) for s, m in plan])
        seconds["pass2"] = time.perf_counter() - t0
        summary = _summary(cfg, stage, fp, p1, p2, counts, t, seconds, ex)
        atomic_write_json(os.path.join(out, "summary.json"), summary)
    finally:
        ex.close()
    if cfg.report and stage in ("curate", "balance"):
        try:
            from .report import write_report
        except ImportError:
            write_report = None
        if write_report is not None:
            write_report(out)
    return summary


def _summary(cfg, stage, fp, p1, p2, counts, t, seconds, ex) -> dict:
    src = p2 if p2 is not None else p1
    pool = sum(s["captions"] for s in src)
    s = {"stage": stage, "pool": pool, "null_captions": sum(x["null_captions"] for x in src),
         "matched": sum(x["matched"] for x in src), "t": t,
         "tail_fraction": cfg.tail_fraction, "seed": int(cfg.seed),
         "device": _WORKER["engine"].name if "engine" in _WORKER else cfg.device,
         "executor": ex.name, "shards": len(src), "seconds": seconds,
         "captions_per_s": {k: (pool / v if v > 0 else None) for k, v in seconds.items()},
         "entries": int(counts.size), "entries_matched": int(np.count_nonzero(counts)),
         "matches": int(counts.sum()), "versions": _versions(), "config_fingerprint": fp,
         "inputs": list(cfg.inputs), "metadata": str(cfg.metadata)}
    if p2 is not None:
        s["curated"] = sum(x["kept"] for x in p2)
    return s


def curate(metadata, inputs, out, *, t=None, tail_fraction=None, **kw) -> dict:
    """Python API of ``python -m gpucurate curate`` (same keywords as the flags)."""
    cfg = CurateConfig(metadata=os.fspath(metadata) if isinstance(metadata, os.PathLike)
                       else metadata, inputs=inputs, out=os.fspath(out), t=t,
                       tail_fraction=tail_fraction, **kw)
    return run(cfg, "curate")


__all__ = ["curate", "run", "p_to_t", "t_to_p", "pass1_shard", "pass2_shard", "setup",
           "LocalExecutor", "merge_count_files", "read_counts"]
