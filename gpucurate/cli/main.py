"""Command line: ``python -m gpucurate SUBCOMMAND`` (or the ``gpucurate`` script).

A thin shell over the library: :func:`main` parses ``argv``, builds a
:class:`~gpucurate.config.CurateConfig` and returns an exit code, so tests
call it in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import __version__
from ..config import DEFAULT_BATCH_BYTES, CurateConfig
from ..errors import ConfigError, GpucurateError
from ..log import configure, logger


def _device(p):
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None,
                   help="where to match: auto (default; the GPU when one is usable, else the "
                        "CPU, logging why), cpu, or gpu (an error when no GPU is usable). "
                        "Default from $GPUCURATE_DEVICE, else auto")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU engine threads (default: $GPUCURATE_THREADS, else every core); "
                        "the local executor also works on this many shards at once (at most "
                        "4), and language ID runs on this many threads")


def _t_lang(v: str):
    code, _, t = v.partition("=")
    try:
        return code, int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--t-lang takes LANG=T (e.g. de=5000), not {v!r}")


def _pool_args(p, need_t: bool, pass1: bool = True):
    """The flags of curate, count and balance (``pass1``: those that act in
    pass 1, which balance has not: --group-column, --save-matches)."""
    p.add_argument("--metadata", default=None,
                   help="metadata list: MetaCLIP's .json (a list of strings, id = index), or "
                        "UTF-8 text with one entry per line (or give --worldwide)")
    p.add_argument("--worldwide", default=None, metavar="DIR",
                   help="MetaCLIP 2: a directory of <lang>.json metadata lists; captions are "
                        "routed by language and matched with MetaCLIP 2's padding rule")
    p.add_argument("--lang-column", default=None,
                   help="with --worldwide: the column holding each caption's language code "
                        "(default: fastText language ID, the worldwide extra)")
    p.add_argument("--t-lang", action="append", type=_t_lang, default=[], metavar="LANG=T",
                   help="with --worldwide: t of one language (repeatable); other languages get "
                        "p_to_t(counts, t_to_p(counts_en, --t))")
    if pass1:
        p.add_argument("--group-column", default=None,
                       help="keep at most one caption per group (e.g. an image id with several "
                            "alt-texts): one caption per group is picked by the pinned draw")
    p.add_argument("--input", nargs="+", action="extend", required=True, metavar="PATH",
                   help="caption shards: files, directories or globs of .parquet, .jsonl "
                        "(.gz, .zst) and WebDataset .tar (.tar.gz, .tgz); processed in sorted "
                        "order of their resolved paths (a symlink by its target's; repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    if need_t:
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--t", type=int, default=None,
                       help="the balancing threshold: entries matched by more than t captions "
                            "are sampled down to t in expectation (MetaCLIP: 20000 for a 400M "
                            "pool, 170000 for 2.5B)")
        g.add_argument("--tail-fraction", type=float, default=None, metavar="P",
                       help="derive t as MetaCLIP 2's p_to_t: the count at which the cumulative "
                            "share of all matches, counts sorted ascending, is nearest P")
    p.add_argument("--text-column", default=None,
                   help="caption column (parquet/jsonl) or .json field (tar; default: the .txt "
                        "member). Default: text, else caption (img2dataset's and DataComp's "
                        "name) when every shard has it; the choice is logged")
    p.add_argument("--key-column", default=None,
                   help="column of unique sample ids (integers or strings) that keys the "
                        "random draw, so the curated set does not depend on sharding. Default: "
                        "shard name and row")
    p.add_argument("--seed", type=int, default=0, help="seed of the pinned draw (default 0)")
    _device(p)
    p.add_argument("--reader", choices=("auto", "arrow", "cudf"), default="auto",
                   help="how pass 1 reads parquet shards on the GPU: cudf (onto the device, "
                        "matched in place; unverified, see README), arrow (pyarrow on the host, "
                        "then copied), or auto (default: cudf when the GPU engine runs and cuDF "
                        "is installed, else arrow). Outputs are identical either way" +
                        ("" if pass1 else ". balance has no pass 1: it changes "
                         "nothing here"))
    p.add_argument("--batch-bytes", type=int, default=DEFAULT_BATCH_BYTES,
                   help=f"bytes per batch of the columns read (and at most this much caption text), "
                        f"bounding memory with the shards at once (default {DEFAULT_BATCH_BYTES})")
    p.add_argument("--limit", type=int, default=None,
                   help="curate only the first N captions of the pool (in shard order)")
    if pass1:
        p.add_argument("--save-matches", action="store_true",
                       help="keep pass 1's matches (MetaCLIP's inverted index, (entry_id, "
                            "text_id) uint32, and lang with --worldwide) in DIR/matches, for "
                            "plan and rebalance")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="a malformed row (a bad jsonl line, a non-UTF-8 string, a null key): "
                        "error (default) stops the run naming it; skip leaves it out of the pool "
                        "and writes it (file, row, reason, raw bytes) to DIR/rejected/, counted "
                        "in summary.json and the report. Damaged files stay errors")
    p.add_argument("--verify-inputs", action="store_true",
                   help="fingerprint every input shard by a hash of its content (default: its "
                        "path, size and modification time), so that a rerun into DIR notices a "
                        "shard rewritten in place even with the same size and time")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run with another configuration found in DIR")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local (default) or ray (needs the ray extra)")
    p.add_argument("--address", default=None,
                   help="with --executor ray: the cluster to join (HOST:PORT or auto); "
                        "default: a private local Ray")
    p.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    if need_t:
        p.add_argument("--no-report", action="store_true",
                       help="do not write DIR/report (the HTML report of the run)")
        from .after import add_output_args

        add_output_args(p)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="gpucurate",
        description="Exact MetaCLIP curation of image-text pools on GPU and CPU.")
    ap.add_argument("--version", action="version", version=f"gpucurate {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("match", help="match captions against metadata; write entry ids per row",
                       description="Write OUT.parquet with one column entry_ids (list<int32>, "
                                   "sorted, distinct) per input row, in input order.")
    p.add_argument("--metadata", required=True, help="metadata list (.json or one per line)")
    p.add_argument("--input", required=True, metavar="FILE",
                   help="one caption file: .parquet, .jsonl[.gz|.zst] or .tar[.gz|.tgz] (a "
                        "path, or an s3://, gs://, hf:// or http(s):// object)")
    p.add_argument("--out", required=True, metavar="OUT.parquet", help="a local file")
    p.add_argument("--text-column", default="text", help="caption column (default: text)")
    _device(p)
    p.add_argument("--quiet", action="store_true", help="log warnings and errors only")

    p = sub.add_parser("curate", help="match, count and balance a pool (pass 1 + pass 2)",
                       description="Curate a caption pool the MetaCLIP way: count the captions "
                                   "per metadata entry over the pool, then keep each caption "
                                   "with probability 1 - prod(1 - min(1, t/count[e])).")
    _pool_args(p, need_t=True)

    p = sub.add_parser("count", help="pass 1 only: entry counts of a pool (or part of one)",
                       description="Match and count; writes DIR/entry_counts.parquet (entry_id, "
                                   "entry, count). Sum counts of independent jobs with "
                                   "merge-counts, then run balance.")
    _pool_args(p, need_t=False)

    p = sub.add_parser("merge-counts", help="sum entry-count files of independent jobs",
                       description="Sum entry_counts.parquet files (or MetaCLIP entry_counts "
                                   "JSON mappings) into one entry_counts.parquet.")
    p.add_argument("counts", nargs="+", help="count files (worldwide: entry_counts/ dirs) to add "
                   "up: paths or URLs (s3://, gs://, hf://, http(s)://)")
    p.add_argument("--metadata", default=None, help="the metadata list the counts refer to")
    p.add_argument("--worldwide", default=None, metavar="DIR",
                   help="the per-language metadata directory (then counts and --out are dirs)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="merged entry_counts.parquet (a local path)")
    p.add_argument("--quiet", action="store_true", help="log warnings and errors only")

    p = sub.add_parser("balance", help="pass 2 only: balance a pool with given pool counts",
                       description="Balance shards with pool counts from --counts (an "
                                   "entry_counts.parquet or MetaCLIP's entry_counts_*.json).")
    p.add_argument("--counts", required=True, metavar="FILE",
                   help="pool entry counts: an entry_counts.parquet (worldwide: an entry_counts/ "
                        "directory), a path or a URL (s3://, gs://, hf://, http(s)://)")
    _pool_args(p, need_t=True, pass1=False)

    p = sub.add_parser("demo", help="curate a built-in pool (no network, no data needed)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default: ./gpucurate-demo)")
    _device(p)
    p.add_argument("--quiet", action="store_true", help="log warnings and errors only")

    p = sub.add_parser("info", help="versions, the device found, and why a GPU is (not) usable")
    p.add_argument("--json", action="store_true", help="print JSON")

    from .after import add_after_commands

    add_after_commands(sub)

    p = sub.add_parser("report", help="write DIR/report/index.html for a curation output")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    return ap


def _config(a, **extra) -> CurateConfig:
    if (a.metadata is None) == (a.worldwide is None):
        raise ConfigError("give exactly one of --metadata FILE and --worldwide DIR")
    return CurateConfig(
        metadata=a.metadata, worldwide=a.worldwide, lang_column=a.lang_column,
        t_lang=tuple(a.t_lang), group_column=getattr(a, "group_column", None),
        inputs=tuple(a.input), out=a.out, t=getattr(a, "t", None),
        tail_fraction=getattr(a, "tail_fraction", None), text_column=a.text_column,
        key_column=a.key_column, seed=a.seed, device=a.device, reader=a.reader,
        batch_bytes=a.batch_bytes, threads=a.threads,
        limit=a.limit, save_matches=getattr(a, "save_matches", False), overwrite=a.overwrite,
        verify_inputs=a.verify_inputs, on_bad_row=a.on_bad_row,
        outputs=getattr(a, "outputs", "parquet"),
        samples_per_shard=getattr(a, "samples_per_shard", 10000),
        report=not getattr(a, "no_report", False), executor=a.executor, address=a.address,
        **extra)


def _funnel(s: dict) -> str:
    lines = [f"pool        {s['pool']:>12,}"]
    if s.get("rejected"):
        lines.append(f"rejected    {s['rejected']:>12,}  (bad rows left out of the pool: "
                     "rejected/)")
    lines += [f"null        {s['null_captions']:>12,}"]
    if s.get("unrouted"):
        lines.append(f"no list     {s['unrouted']:>12,}  (in a language without a metadata "
                     "list)")
    lines += [f"matched     {s['matched']:>12,}"]
    if "curated" in s:
        pct = 100.0 * s["curated"] / s["pool"] if s["pool"] else 0.0
        t = f", t = {s['t']:,}" if s.get("t") else ""
        lines.append(f"curated     {s['curated']:>12,}  ({pct:.1f}% of the pool{t})")
    for code, d in (s.get("languages") or {}).items():
        if d["pool"]:
            lines.append(f"  {code:<8} pool {d['pool']:>10,}  matched {d['matched']:>10,}"
                         + (f"  curated {d['curated']:>10,}  t = {d['t']}" if "curated" in d
                            else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    configure(quiet=getattr(a, "quiet", False))
    try:
        return _dispatch(a)
    except GpucurateError as exc:
        logger.error("error: %s", " ".join(str(exc).split("\n")).strip())
        return 2
    except BaseException as exc:  # noqa: BLE001 - Ctrl-C or SIGTERM, maybe wrapped by a library
        stop = _stop_in(exc)
        if stop is None:
            raise
        if isinstance(stop, Terminated):
            logger.error("terminated (SIGTERM); rerun the same command to resume")
            return 143
        logger.error("interrupted; rerun the same command to resume")
        return 130


def _stop_in(exc: BaseException):
    """The KeyboardInterrupt (Ctrl-C, or :class:`Terminated`) behind ``exc``:
    itself, or the cause or context of an error a library raised while
    handling it (the signal lands wherever the main thread is), or None."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, ``kill``): unwound as Ctrl-C is, so that
    the run stops its workers, says so and can be resumed."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _dispatch(a) -> int:
    if a.cmd == "info":
        from .info import info

        d = info()
        print(json.dumps(d, indent=1) if a.json else "\n".join(f"{k}: {v}" for k, v in d.items()))
        return 0
    if a.cmd == "match":
        from .match import match_file

        n = match_file(a.metadata, a.input, a.out, a.text_column, a.device, a.threads)
        logger.info("wrote %s (%s rows)", a.out, f"{n:,}")
        return 0
    if a.cmd == "merge-counts":
        from ..pipeline.counts import exact_sum, merge_count_files

        if (a.metadata is None) == (a.worldwide is None):
            raise ConfigError("give exactly one of --metadata FILE and --worldwide DIR")
        total = merge_count_files(a.counts, a.metadata, a.out, a.worldwide)
        logger.info("wrote %s: %s matches over %s files", a.out, f"{exact_sum(total):,}",
                    len(a.counts))
        return 0
    if a.cmd == "demo":
        from .demo import run_demo

        s, out = run_demo(a.out, a.device, a.threads)
        print(_funnel(s))
        print(f"outputs in {out}: entry_counts.parquet, curated/, stats/, summary.json"
              + (", report/index.html" if os.path.exists(os.path.join(out, "report")) else ""))
        return 0
    if a.cmd in ("plan", "rebalance"):
        from .after import run_after

        return run_after(a)
    if a.cmd == "report":
        from ..pipeline.report import write_report

        path = write_report(a.dir)
        print(path)
        return 0
    from ..pipeline import run

    stage = a.cmd
    cfg = _config(a, counts_file=getattr(a, "counts", None)) if stage == "balance" else _config(a)
    s = run(cfg, stage)
    print(_funnel(s))
    print(f"outputs in {cfg.out}")
    return 0


def entry() -> None:
    """The process: console script ``gpucurate`` and ``python -m gpucurate``.

    When :func:`main` returns, every output is written (and flushed to disk)
    and every stage's thread joined; what the interpreter would do next is tear
    down numba, LLVM, pyarrow and some 900 modules, ~0.3 s of a run on the
    2-core VM that gives the user nothing. So the exit handlers run (logging,
    Ray, the language-ID processes), the streams are flushed, and the process
    ends there."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rc = main()
    except SystemExit as exc:  # argparse: --help, usage errors
        rc = exc.code
        if rc is not None and not isinstance(rc, int):
            print(rc, file=sys.stderr)
            rc = 1
    except BaseException as exc:  # noqa: BLE001 - a bug: its traceback, as Python would print it
        stop = _stop_in(exc)
        if stop is not None:
            rc = 143 if isinstance(stop, Terminated) else 130
        else:
            import traceback

            traceback.print_exc()
            rc = 1
    try:
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(rc or 0)
