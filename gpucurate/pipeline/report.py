"""``DIR/report``: what a curation run did, as pictures and tables.

:func:`write_report` reads only what the run wrote (``entry_counts.parquet``,
``summary.json``, ``stats/shard-*.json`` and the ``entry_ids`` column of
``curated/part-*.parquet``; nothing is matched again) and writes
``DIR/report/index.html``, self-contained (the PNGs are embedded as base64 data
URIs; no script, nothing fetched), with the PNGs beside it:

- ``counts.png``: captions per entry, sorted descending, before and after
  balancing (log-log), with t and the head (count > t) marked;
- ``cumulative.png``: the share of all matches held by the top-k entries;
- ``funnel.png``: captions in, null, matched, curated.

Every number the HTML shows sits in a ``data-value`` attribute (integers, or
floats written with ``repr``) so that tools and tests can read it back. For a
worldwide run it adds a table of every language and draws the plots for one
(``en``, else the language with the largest pool).
"""

from __future__ import annotations

import base64
import glob
import html
import io
import json
import os
import sys

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError
from ..io import atomic_write_bytes
from ..log import logger
from .layout import OutputLayout

TOP_HEAD = 25          # rows of the head-entries table
MAX_POINTS = 1000      # points per curve (geometrically spaced ranks)


# ------------------------------------------------------------------ inputs


def _load(out: str) -> dict:
    layout = OutputLayout(out)

    def need(p):
        if not os.path.exists(p):
            raise InputError(f"{out}: no {os.path.relpath(p, out)}; is this a gpucurate output "
                             "directory (curate, balance or count)?")
        return p

    with open(need(layout.summary), encoding="utf-8") as f:
        summary = json.load(f)
    langs = summary.get("languages") or {}
    main = None
    ww = bool(langs) and not os.path.exists(layout.entry_counts)
    if ww:
        # worldwide: the plots show one language (en, else the largest pool)
        main = "en" if langs.get("en", {}).get("pool") else max(langs, key=lambda c: langs[c]["pool"])
        summary = dict(summary, t=langs[main].get("t"))
        counts_file = layout.entry_counts_of(main)
    else:
        counts_file = layout.entry_counts
    t = pq.read_table(need(counts_file), columns=["entry_id", "entry", "count"])
    ids = t.column("entry_id").to_numpy()
    before = np.zeros(int(ids.max()) + 1 if ids.size else 0, np.int64)
    before[ids] = t.column("count").to_numpy().astype(np.int64)
    names = np.empty(before.size, object)
    names[ids] = t.column("entry").to_pylist()

    after = None
    parts = sorted(glob.glob(os.path.join(glob.escape(layout.curated_dir), "part-*.parquet")))
    if summary.get("curated") is not None:
        after = np.zeros(before.size, np.int64)
        for p in parts:
            cols = ["entry_ids"] + (["lang"] if main else [])
            for b in pq.ParquetFile(p).iter_batches(columns=cols):
                lists = b.column(0)
                if main:
                    lists = lists.filter(pc.equal(b.column(1), main))
                flat = lists.flatten().to_numpy(zero_copy_only=False)
                if flat.size and (flat.min() < 0 or flat.max() >= after.size):
                    raise InputError(f"{p}: entry ids outside entry_counts.parquet's "
                                     f"{after.size} entries")
                if flat.size:
                    after += np.bincount(flat, minlength=after.size)

    shards = []
    for p in sorted(glob.glob(os.path.join(glob.escape(layout.stats_dir), "shard-*.json"))):
        with open(p, encoding="utf-8") as f:
            shards.append(json.load(f))
    return {"summary": summary, "before": before, "after": after, "names": names,
            "shards": shards, "languages": langs if ww else {}, "main": main}


# ------------------------------------------------------------------- plots


def _ranks(n: int) -> np.ndarray:
    """0-based indices of ranks 1..n, geometrically thinned to ~MAX_POINTS."""
    if n <= MAX_POINTS:
        return np.arange(n)
    r = np.unique(np.geomspace(1, n, MAX_POINTS).astype(np.int64)) - 1
    return np.union1d(r, [n - 1])


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def prewarm() -> None:
    """Import matplotlib on a thread of its own while the run works, so that
    the report at its end does not wait for the import (about a second)."""
    import threading

    def load():
        try:
            import matplotlib

            if "matplotlib.pyplot" not in sys.modules:
                matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
        except Exception:  # noqa: BLE001 - the report says so itself when it runs
            pass

    threading.Thread(target=load, name="gpucurate-report-import", daemon=True).start()


def _plots(d: dict) -> dict[str, bytes]:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # leave a caller's own pyplot backend alone
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, before, after = d["summary"], d["before"], d["after"]
    t = s.get("t")
    curves = [("before", before, "C0", 3.0)]  # drawn wide, so "after" shows on top of it
    if after is not None:
        curves.append(("after", after, "C1", 1.2))
    pngs = {}

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, c, color, lw in curves:
        c = np.sort(c[c > 0])[::-1]
        if c.size:
            i = _ranks(c.size)
            ax.plot(i + 1, c[i], color=color, lw=lw, label=f"{label} ({c.size:,} entries)")
    if t:
        n_head = int(np.count_nonzero(before > t))
        ax.axhline(t, color="k", ls="--", lw=1, label=f"t = {t:,}")
        if n_head:
            ax.axvspan(1, n_head + 0.5, color="0.85", zorder=0, label=f"head: {n_head:,} entries")
    ax.set(xscale="log", yscale="log", xlabel="entry rank", ylabel="captions per entry",
           title="Captions per entry, sorted descending")
    ax.legend()
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.12, top=0.92)
    pngs["counts.png"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, c, color, lw in curves:
        c = np.sort(c[c > 0])[::-1]
        if c.size:
            share = np.cumsum(c) / c.sum()
            i = _ranks(c.size)
            ax.plot(i + 1, share[i], color=color, lw=lw, label=label)
    if t and np.count_nonzero(before > t):
        ax.axvline(np.count_nonzero(before > t), color="k", ls="--", lw=1, label="end of head")
    ax.set(xscale="log", ylim=(0, 1.02), xlabel="top-k entries (k)",
           ylabel="share of all matches", title="Share of all matches held by the top-k entries")
    ax.legend()
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.12, top=0.92)
    pngs["cumulative.png"] = _png(fig)
    plt.close(fig)

    stages = _funnel(s)
    fig, ax = plt.subplots(figsize=(8, 2.8))
    y = np.arange(len(stages))[::-1]
    ax.barh(y, [v for _, _, v in stages], color=["C7", "C3", "C0", "C1"][:len(stages)])
    ax.set_yticks(y, [label for _, label, _ in stages])
    for yi, (_, _, v) in zip(y, stages):
        ax.text(v, yi, f" {v:,}", va="center")
    ax.set(xlabel="captions", title="Funnel")
    ax.margins(x=0.15)
    fig.subplots_adjust(left=0.16, right=0.98, bottom=0.18, top=0.88)
    pngs["funnel.png"] = _png(fig)
    plt.close(fig)
    return pngs


# -------------------------------------------------------------------- HTML


def _funnel(s: dict) -> list[tuple[str, str, int]]:
    rows = [("pool", "captions in", s["pool"]), ("null_captions", "null", s["null_captions"]),
            ("matched", "matched", s["matched"])]
    if s.get("rejected"):  # --on-bad-row skip: rows left out, listed in rejected/
        rows.insert(0, ("rejected", "bad rows skipped", s["rejected"]))
    if s.get("curated") is not None:
        rows.append(("curated", "curated", s["curated"]))
    return rows


def _num(v, fmt: str = "{:,}") -> str:
    """A table cell whose shown text is formatted and whose data-value is exact."""
    if v is None:
        return '<td class="n">-</td>'
    raw = repr(float(v)) if isinstance(v, float) else str(int(v))
    return f'<td class="n" data-value="{raw}">{html.escape(fmt.format(v))}</td>'


def _table(tid: str, head: list[str], rows: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<table id="{tid}"><thead><tr>{th}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _html(d: dict, pngs: dict[str, bytes]) -> str:
    s, before, after, names = d["summary"], d["before"], d["after"], d["names"]
    t = s.get("t")
    e = html.escape

    def img(name, alt):
        b64 = base64.b64encode(pngs[name]).decode()
        return f'<img src="data:image/png;base64,{b64}" alt="{e(alt)}" data-file="{name}">'

    # Facts about the counts, for the reader and as data attributes.
    total_b = int(before.sum())
    head = before > t if t else np.zeros(before.size, bool)
    facts = [("t", "t", t), ("entries", "entries", int(before.size)),
             ("entries_matched", "entries matched", int(np.count_nonzero(before))),
             ("matches_before", "matches before", total_b),
             ("head_entries", "head entries (count > t)", int(head.sum())),
             ("head_matches_before", "matches of head entries before", int(before[head].sum()))]
    if after is not None:
        facts += [("entries_kept", "entries with a kept caption", int(np.count_nonzero(after))),
                  ("matches_after", "matches after", int(after.sum())),
                  ("head_matches_after", "matches of head entries after", int(after[head].sum()))]
    fact_rows = [f'<tr data-key="{k}"><th>{e(label)}</th>{_num(v)}</tr>' for k, label, v in facts]

    funnel_rows = []
    pool = s["pool"]
    for k, label, v in _funnel(s):
        funnel_rows.append(f'<tr data-key="{k}"><th>{e(label)}</th>{_num(v)}'
                           f'{_num(100.0 * v / pool if pool else 0.0, "{:.1f}%")}</tr>')

    order = np.argsort(-before, kind="stable")[:TOP_HEAD]
    order = order[head[order]] if t else order[:0]
    head_rows = []
    for rank, i in enumerate(order, 1):
        kept = int(after[i]) if after is not None else None
        head_rows.append(
            f'<tr data-entry-id="{int(i)}"><td class="n">{rank}</td><td class="n">{int(i)}</td>'
            f'<td>{e(str(names[i]))}</td>{_num(int(before[i]))}{_num(kept)}'
            f'{_num(float(t) / before[i], "{:.4f}")}</tr>')

    shard_rows = []
    for x in d["shards"]:
        secs = [x.get("seconds_pass1"), x.get("seconds_pass2")]
        total = sum(v for v in secs if v is not None)
        shard_rows.append(
            f'<tr data-shard="{e(str(x.get("shard", "")))}"><td>{e(str(x.get("shard", "")))}</td>'
            f'{_num(x.get("captions"))}{_num(x.get("matched"))}{_num(x.get("kept"))}'
            f'{_num(None if secs[0] is None else float(secs[0]), "{:.2f}")}'
            f'{_num(None if secs[1] is None else float(secs[1]), "{:.2f}")}'
            f'{_num(float(total), "{:.2f}")}</tr>')

    if t:
        head_text = (f"{int(head.sum()):,} head entries (count &gt; t = {t:,}) held "
                     f"{100.0 * before[head].sum() / max(total_b, 1):.1f}% of all matches before")
        if after is not None:
            head_text += f" and {100.0 * after[head].sum() / max(int(after.sum()), 1):.1f}% after"
        head_text += "."
    else:
        head_text = "No t (a count-only run): counts before balancing only."
    sub = (f"stage {e(str(s.get('stage', '?')))}, device {e(str(s.get('device', '?')))}, "
           f"seed {e(str(s.get('seed', '?')))}, metadata {e(str(s.get('metadata', '?')))}")
    lang_rows = [
        f'<tr data-lang="{e(code)}"><td>{e(code)}</td>{_num(v.get("pool"))}'
        f'{_num(v.get("matched"))}{_num(v.get("curated"))}{_num(v.get("t"))}</tr>'
        for code, v in sorted(d.get("languages", {}).items())]
    if d.get("main"):
        sub += (f". Worldwide run: the plots and tables below show language "
                f"<b>{e(d['main'])}</b>; every language is in the table that follows")
    sections = [
        f"<h1>gpucurate report</h1><p>{sub}</p><p>{head_text}</p>"
        + ("<h2>Languages</h2>" + _table("languages", ["language", "pool", "matched",
                                                       "curated", "t"], lang_rows)
           if lang_rows else ""),
        "<h2>Captions per entry</h2>" + img("counts.png", "captions per entry, before and after"),
        "<h2>Cumulative share</h2>" + img("cumulative.png", "share of matches held by top-k"),
        "<h2>Counts</h2>" + _table("facts", ["", "value"], fact_rows),
        f"<h2>Top head entries</h2><p>The {len(head_rows)} most matched entries with count "
        "&gt; t: captions matching each before balancing, kept captions matching it after, "
        "and its keep probability t/count.</p>"
        + _table("head", ["#", "id", "entry", "before", "kept after", "t/count"], head_rows),
        "<h2>Funnel</h2>" + img("funnel.png", "funnel")
        + _table("funnel", ["", "captions", "of pool"], funnel_rows),
        "<h2>Shards</h2>" + _table("shards", ["shard", "captions", "matched", "kept",
                                               "s pass 1", "s pass 2", "s total"], shard_rows),
    ]
    style = ("body{font:14px/1.4 sans-serif;margin:2em auto;max-width:60em;color:#222}"
             "img{max-width:100%}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{padding:.15em .6em;border-bottom:1px solid #ddd;text-align:left}"
             "td.n{text-align:right;font-variant-numeric:tabular-nums}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>gpucurate report</title><style>{style}</style></head>\n<body>\n"
            + "\n".join(f"<section>{x}</section>" for x in sections) + "\n</body></html>\n")


def write_report(out_dir) -> str:
    """Write ``out_dir/report/index.html`` (and its PNGs); return the HTML's path."""
    out = os.fspath(out_dir)
    d = _load(out)
    pngs = _plots(d)
    rdir = OutputLayout(out).report
    os.makedirs(rdir, exist_ok=True)
    for name, data in pngs.items():
        atomic_write_bytes(os.path.join(rdir, name), data)
    path = os.path.join(rdir, "index.html")
    atomic_write_bytes(path, _html(d, pngs).encode("utf-8"))
    logger.info("report: %s", path)
    return path
