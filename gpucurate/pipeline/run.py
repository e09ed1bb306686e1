"""A whole run: ``curate`` (pass 1 + pass 2), ``count`` (pass 1) or
``balance`` (pass 2 from given counts), scheduled by an executor.

The stages are plain functions of (worker, layout, shard, row budget); the
executor builds one :class:`~gpucurate.pipeline.worker.Worker` per process
with the :class:`~gpucurate.pipeline.worker.WorkerSetup` it is handed, and only
schedules. Every file is written atomically (temporary file, then rename) and
every shard leaves a completion marker, so a rerun skips finished work and
gives identical outputs.
"""

from __future__ import annotations

import io
import json
import os
import platform
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa

from .. import __version__
from ..config import CurateConfig
from ..errors import ConfigError
from ..io import (Shard, atomic_write_bytes, atomic_write_json, choose_text_column, count_rows,
                  resolve_inputs)
from ..io.fs import is_url, local_path
from ..keys import probabilities
from ..log import RunProgress, configure, logger
from .counts import exact_sum, pool_counts, read_counts_all, write_entry_counts
from .groups import choose_groups
from .layout import ALL, OutputLayout
from .outputs import check_outputs, drop_unrequested, write_outputs
from .outdir import OutLock, gather, prepare_out, resolve_out, shard_identity, sweep_tmp
from .pass1 import pass1_shard
from .pass2 import drop_pass1_scratch, pass2_shard
from .stream import Aside
from .trules import check_t_lang, language_t
from .worker import WorkerSetup, metadata_of


def versions() -> dict:
    import numba

    v = {"gpucurate": __version__, "python": platform.python_version(),
         "numpy": np.__version__, "pyarrow": pa.__version__, "numba": numba.__version__}
    from importlib import metadata

    # From the installed distributions' metadata: importing them (Ray above
    # all) would cost a run a quarter of a second.
    for mod, dists in (("cupy", ("cupy-cuda13x", "cupy-cuda12x", "cupy")),
                       ("cudf", ("cudf-cu13", "cudf-cu12", "cudf")),
                       ("rmm", ("rmm-cu13", "rmm-cu12", "rmm")),
                       ("numba_cuda", ("numba-cuda",)), ("ray", ("ray",))):
        for d in dists:
            try:
                v[mod] = metadata.version(d)
                break
            except metadata.PackageNotFoundError:
                continue
    return v


def plan_shards(cfg: CurateConfig, shards: list[Shard]) -> list[tuple[Shard, int | None]]:
    """Shards with their row budget under --limit (shards past it are dropped)."""
    if cfg.limit is None:
        return [(s, None) for s in shards]
    plan, left = [], cfg.limit
    for s in shards:
        if left <= 0:
            break
        if cfg.on_bad_row == "skip":  # the rows left out are no part of the pool: read
            from .batches import shard_batches  # the rows that pass, up to the budget

            n = sum(t.num_rows for t, _ in shard_batches(cfg, s, left, rejects=[]))
        else:
            n = count_rows(s)
        plan.append((s, min(n, left)))
        left -= n
    return plan


def make_executor(cfg: CurateConfig):
    from ..executors import make_executor as make

    return make(cfg)


def run(cfg: CurateConfig, stage: str = "curate") -> dict:
    """Run ``curate`` (pass 1 + pass 2), ``count`` (pass 1) or ``balance``
    (pass 2 from ``cfg.counts_file``) into ``cfg.out``; return the summary."""
    if stage in ("curate", "balance"):
        cfg.require_t()
    if stage == "balance" and not cfg.counts_file:
        raise ConfigError("balance needs --counts FILE (an entry_counts.parquet or a MetaCLIP "
                          "entry_counts_*.json; worldwide: an entry_counts/ directory)")
    if stage == "balance" and cfg.group_column:
        raise ConfigError("--group-column needs the whole pool's pass 1 to choose one caption "
                          "per group: run curate (or count and balance without it)")
    mds, md_sha = metadata_of(cfg)
    layout = OutputLayout(resolve_out(cfg.out))
    shards = resolve_inputs(cfg.inputs, need_unique_names=cfg.key_column is None,
                            exclude=cfg.out if is_url(cfg.out) else layout.root)
    if cfg.text_column is None:
        cfg = replace(cfg, text_column=choose_text_column(shards, None))
        logger.info("caption column: %s", cfg.text_column)
    if stage in ("curate", "balance"):
        check_outputs(cfg, shards)  # --outputs: what they need, before any work
    pairs = sum(1 for s in shards if s.tar)
    if pairs:
        logger.info("%d download-folder shards: captions from each .parquet beside its .tar "
                    "(rows with status 'success')", pairs)
    if stage != "balance":
        return _run_checked(cfg, stage, mds, md_sha, layout, shards, None)
    if cfg.save_matches:
        raise ConfigError("--save-matches keeps pass 1's matches, and balance has no pass 1: "
                          "save them with count --save-matches (or curate --save-matches)")
    with local_path(cfg.counts_file) as counts_file:  # a URL: read from a local copy
        return _run_checked(cfg, stage, mds, md_sha, layout, shards, counts_file)


def _run_checked(cfg: CurateConfig, stage: str, mds, md_sha, layout, shards,
                 counts_file: str | None) -> dict:
    """``run`` from the fingerprint on; ``counts_file``: balance's counts, local."""
    counts_sha = given = None
    if stage == "balance":
        import hashlib

        if not os.path.exists(counts_file):
            raise ConfigError(f"--counts {cfg.counts_file} does not exist; give the "
                              "entry_counts.parquet (worldwide: the entry_counts/ directory) "
                              "of a count or curate run")
        # read before DIR is prepared (--counts DIR/entry_counts.parquet with
        # --overwrite: the file is among what is cleared); known by the counts
        # themselves, not the file's bytes (balance rewrites DIR/entry_counts.parquet
        # with its probabilities; a merge stamps the metadata path it was given)
        given = read_counts_all(counts_file, mds)
        h = hashlib.sha256()
        for code in sorted(given):
            h.update(code.encode() + b"\0" + np.ascontiguousarray(given[code], "<u8").tobytes())
        counts_sha = h.hexdigest()
        # t from the counts, before DIR is touched: a t below 1 leaves it as it was
        language_t(cfg, given, kept="nothing was written")
    doc = cfg.fingerprint_doc(md_sha, [shard_identity(s, cfg.verify_inputs) for s in shards],
                              stage, counts_sha)
    with OutLock(layout):
        return _run_locked(cfg, stage, layout, mds, doc, shards, given)


def _run_locked(cfg: CurateConfig, stage: str, layout: OutputLayout, mds: dict, doc: dict,
                shards: list, given: dict | None) -> dict:
    if cfg.worldwide:
        check_t_lang(cfg, mds)
    from ..executors import check_executor

    check_executor(cfg)  # Ray missing: said before DIR is written to
    fp = prepare_out(cfg, layout, doc, stage)
    plan = plan_shards(cfg, shards)
    ex = make_executor(cfg)
    setup = WorkerSetup(cfg, sha=doc.get("metadata"))
    if ex.remote:  # the driver loads the tables once; the executor ships them
        setup = setup.with_tables()
    calls = [(layout, s, m) for s, m in plan]
    seconds: dict = {}
    done: dict = {}
    try:
        if stage in ("curate", "count"):
            spill = stage == "curate"  # pass 2 reuses pass 1's matches
            p1 = _run_pass(ex, pass1_shard, [c + (spill,) for c in calls], setup,
                           layout.pass1_marker, "pass1", seconds, done)
            counts = pool_counts(layout, mds, plan)
        else:
            p1 = None
            counts = given
        if stage == "count":
            write_entry_counts(layout, mds, counts, None)
            if cfg.group_column:  # each group's chosen caption, which plan sums over
                choose_groups(layout, plan)
            describe_workers(ex, setup, layout)
            summary = _summary(cfg, stage, fp, p1, None, counts, None, seconds, ex)
            _keep_timings(layout, summary, done)
            atomic_write_json(layout.summary, summary)
            return summary
        ts = language_t(cfg, counts)
        for code, t in ts.items():
            logger.info("t%s = %s", "" if code == ALL else f" ({code})",
                        "none (no match)" if t is None else f"{t:,}")
        probs = {c: probabilities(counts[c], ts[c]) if ts[c] else np.ones(counts[c].size)
                 for c in counts}
        # entry_counts (~0.5 s for 2.6M worldwide entries) is written beside pass 2
        aside = Aside(write_entry_counts, layout, mds, counts, probs,
                      name="gpucurate-entry-counts")
        try:
            buf = io.BytesIO()
            np.savez(buf, **probs)
            atomic_write_bytes(layout.prob, buf.getvalue())
            if cfg.group_column:
                choose_groups(layout, plan)
            p2 = _run_pass(ex, pass2_shard, calls, setup, layout.stats, "pass2", seconds, done)
            for c in calls:  # what a stop between a marker and its clean-up left here
                drop_pass1_scratch(layout, c[1])
        finally:
            aside.join()
        describe_workers(ex, setup, layout)
        summary = _summary(cfg, stage, fp, p1, p2, counts, ts, seconds, ex)
        write_outputs(cfg, layout, [s for s, _ in plan], p2, summary, ex, setup)  # --outputs
        if ex.remote:  # a worker lost while writing an output left its temporary files
            sweep_tmp(layout, keep_own=True)
        _keep_timings(layout, summary, done)
        atomic_write_json(layout.summary, summary)
    except BaseException:
        ex.close()
        if ex.remote:  # the workers (now stopped) of the shards in flight left their
            sweep_tmp(layout, keep_own=True)  # temporary files; this process's own are live
        raise
    else:
        ex.close()
    if cfg.report and stage in ("curate", "balance"):
        try:
            from .report import write_report
        except ImportError:
            write_report = None
        if write_report is not None:
            write_report(layout.root, mds)
    if stage in ("curate", "balance"):
        drop_unrequested(cfg, layout)  # --outputs without parquet: the parts go last
    return summary


def _run_pass(ex, fn, calls, setup, marker, name: str, seconds: dict, done: dict) -> list:
    """Run ``fn`` on the calls whose shard has no marker yet; the others'
    results are their markers. Times only the shards run here."""
    results: dict = {}
    todo = []
    for c in calls:
        path = marker(c[1].index)
        if os.path.exists(path):
            with open(path) as f:
                results[c[1].index] = json.load(f)
        else:
            todo.append(c)
    if todo:
        t0 = time.perf_counter()
        # tables, engines, a first compile: not the pass's time; the fleet for every
        # shard (a resumed run's next pass has more to do than this one)
        ex.prepare(setup, len(calls))
        seconds["setup"] = seconds.get("setup", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        prog = RunProgress({"pass1": "pass 1", "pass2": "pass 2"}.get(name, name), len(calls))
        prog.done = len(calls) - len(todo)
        try:
            ran = ex.map(fn, todo, setup, prog.shard_done,
                         names=[f"{c[1].path} ({name.replace('pass', 'pass ')})" for c in todo])
        finally:
            prog.close()
        for c, r in zip(todo, ran):
            results[c[1].index] = r
        seconds[name] = time.perf_counter() - t0
        if ex.remote:  # a worker that died mid-write left its temporary file
            sweep_tmp(calls[0][0], keep_own=True)  # entry_counts may be being written
            gather(calls[0][0])  # an output URL: what workers on other nodes published
        done[name] = sum(results[c[1].index]["captions"] for c in todo)
    return [results[c[1].index] for c in calls]


def describe_workers(ex, setup, layout: OutputLayout) -> None:
    """Start the workers when no pass ran and no summary says what ran the
    passes (a run stopped between its last marker and its summary): the
    summary's device and reader are then those of this run's workers, never
    the unresolved "auto"."""
    if not ex.workers and not os.path.exists(layout.summary):
        ex.prepare(setup, 1)


def _keep_timings(layout: OutputLayout, summary: dict, done: dict) -> None:
    """Seconds and captions/s of the work done by this run alone; for a pass
    this run found complete, the figures of the run that did it (or none)."""
    old = {}
    if os.path.exists(layout.summary):
        try:
            with open(layout.summary) as f:
                prev = json.load(f)
            if prev.get("config_fingerprint") == summary["config_fingerprint"]:
                old = prev
        except (OSError, ValueError):
            old = {}
    secs, rate = {}, {}
    for name in summary["seconds"]:
        secs[name] = summary["seconds"][name]
        if name in ("pass1", "pass2"):
            rate[name] = done[name] / secs[name] if secs[name] > 0 and done.get(name) else None
    ran = any(n in secs for n in ("pass1", "pass2"))
    for name in ("pass1", "pass2", "setup"):
        if name not in secs and name in (old.get("seconds") or {}) and \
                (name != "setup" or not ran):
            secs[name] = old["seconds"][name]
            if name != "setup":
                rate[name] = (old.get("captions_per_s") or {}).get(name)
    summary["seconds"], summary["captions_per_s"] = secs, rate
    if not ran and old:  # no worker started: the engine and reader of the run that did the work
        for k in ("device", "reader"):
            if k in old:
                summary[k] = old[k]


def _summary(cfg, stage, fp, p1, p2, counts: dict, ts: dict | None, seconds, ex) -> dict:
    src = p2 if p2 is not None else p1
    pool = sum(s["captions"] for s in src)
    allc = np.concatenate(list(counts.values()))
    w0 = (ex.workers or [{}])[0]
    s = {"stage": stage, "pool": pool, "null_captions": sum(x["null_captions"] for x in src),
         "matched": sum(x["matched"] for x in src),
         "t": (ts.get(ALL, ts.get("en")) if ts else None),
         "tail_fraction": cfg.tail_fraction, "seed": int(cfg.seed),
         "device": w0.get("engine", cfg.device), "reader": w0.get("reader", cfg.reader),
         "executor": ex.name, "shards": len(src), "seconds": seconds,
         "captions_per_s": {},
         "entries": int(allc.size), "entries_matched": int(np.count_nonzero(allc)),
         "matches": exact_sum(allc), "versions": versions(), "config_fingerprint": fp,
         "inputs": list(cfg.inputs),
         "metadata": str(cfg.worldwide or (cfg.metadata if isinstance(cfg.metadata, str)
                                           else "<list>"))}
    if p2 is not None:
        s["curated"] = sum(x["kept"] for x in p2)
    if p1 is not None:
        # the reader the shards were read by (cudf only where the on-device path applies)
        readers = sorted({x["reader"] for x in p1 if x.get("reader")})
        if readers:
            s["reader"] = "+".join(readers)
        s["failed_downloads"] = sum(x.get("failed_downloads", 0) for x in p1)
        s["rejected"] = sum(x.get("rejected", 0) for x in p1)
    elif cfg.on_bad_row == "skip" and p2 is not None:  # balance: pass 2 found them
        s["rejected"] = sum(x.get("rejected", 0) for x in p2)
    if cfg.worldwide:
        langs = {}
        for code, c in counts.items():
            d = {"entries": int(c.size), "matches": int(c.sum()),
                 "t": ts.get(code) if ts else None}
            for key in ("captions", "matched", "kept"):
                d[{"captions": "pool", "kept": "curated"}.get(key, key)] = sum(
                    x.get("languages", {}).get(code, {}).get(key, 0) for x in src)
            if p2 is None:
                d.pop("curated", None)
            langs[code] = d
        s["languages"] = langs
        # a language's pool holds the captions routed to it, null ones included;
        # unrouted: those whose language has no list (and no other.json takes them)
        s["unrouted"] = pool - sum(d["pool"] for d in langs.values())
        s["group_column"] = cfg.group_column
    return s


def curate(metadata, inputs, out, *, t=None, tail_fraction=None, progress: bool = False,
           **kw) -> dict:
    """Python API of ``python -m gpucurate curate``: the keywords are
    :class:`~gpucurate.config.CurateConfig`'s fields, named as the flags are
    (``--key-column`` is ``key_column``) but for ``inputs`` (``--input``) and
    ``report=False`` (``--no-report``).
    It logs through the ``gpucurate`` logger; ``progress=True`` also shows the
    log and the run's progress on stderr, as the command line does, for this
    call only (the logger's handlers, level and propagation are restored)."""
    cfg = CurateConfig(metadata=os.fspath(metadata) if isinstance(metadata, os.PathLike)
                       else metadata, inputs=inputs, out=os.fspath(out), t=t,
                       tail_fraction=tail_fraction, **kw)
    if not progress:
        return run(cfg, "curate")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    configure()
    try:
        return run(cfg, "curate")
    finally:
        logger.handlers[:] = saved[0]
        logger.propagate = saved[1]
        logger.setLevel(saved[2])
