"""``DIR/report``: what a curation run did, as pictures and tables.

:func:`write_report` reads only what the run wrote (``entry_counts.parquet``,
``summary.json``, ``stats/shard-*.json``, and pass 2's kept captions per entry
``work/pass2/shard-*.kept.npz``, or where those are gone the ``entry_ids``
column of ``curated/part-*.parquet``; nothing is matched again) and writes
``DIR/report/index.html``, self-contained (each figure is an inline SVG; no
script, nothing fetched), with the same SVGs as files beside it:

- ``counts.svg``: captions per entry, sorted descending, before and after
  balancing (log-log), with t and the head (count > t) marked;
- ``cumulative.svg``: the share of all matches held by the top-k entries;
- ``funnel.svg``: captions in, null, matched, curated.

The SVGs are drawn here, with NumPy and string formatting (no plotting
library): each curve is a ``<polyline data-series="before|after">`` (a dot when
it has one point) of at most about ``MAX_POINTS`` geometrically spaced ranks,
t is ``data-mark="t"``, the head ``data-mark="head"``, and every text is
escaped. Each is embedded in the HTML as ``<figure data-file="NAME.svg">``
holding the file's exact text.

Reading is most of the time: pass 2's kept counts are summed; without them
the curated parts' ``entry_ids`` are decoded on a few threads (one row group
at a time) and counted with ``np.bincount``. Of ``entry_counts.parquet``'s
names only the head table's rows become strings.

Every number the HTML shows sits in a ``data-value`` attribute (integers, or
floats written with ``repr``) so that tools and tests can read it back. For a
worldwide run it adds a table of every language and draws the plots for one
(``en``, else the language with the largest pool).
"""

from __future__ import annotations

import glob
import html
import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError
from ..io import atomic_write_bytes
from ..log import logger
from .counts import SHA_KEY
from .layout import ALL, OutputLayout

TOP_HEAD = 25          # rows of the head-entries table
MAX_POINTS = 1000      # points per curve (geometrically spaced ranks)
READERS = 4            # threads reading curated parts (parquet decoding releases the GIL)


# ------------------------------------------------------------------ inputs


def _head_order(before: np.ndarray, t) -> np.ndarray:
    """Ids of the head table's rows: the ``TOP_HEAD`` largest counts above t,
    ties by id (what a stable ``argsort(-before)`` gives), without sorting all."""
    if not t or not before.size:
        return np.zeros(0, np.int64)
    cand = np.flatnonzero(before > t)
    vals = before[cand]
    if vals.size > TOP_HEAD:  # (np.partition is slow on counts that are mostly 0)
        keep = vals >= np.sort(vals)[vals.size - TOP_HEAD]
        cand, vals = cand[keep], vals[keep]
    return cand[np.argsort(-vals, kind="stable")[:TOP_HEAD]]


def _part_counter(parts: list[str], n: int, lang: str | None, stop: threading.Event):
    """A function that counts, per entry, the kept captions (rows of the
    parts) matching it, reading parts until none is left (or ``stop`` is set):
    run it on several threads at once (parquet decoding releases the GIL) and
    add the results."""
    cols = ["entry_ids"] + (["lang"] if lang else [])
    todo = iter(parts)
    lock = threading.Lock()

    def work() -> np.ndarray:
        try:
            return count()
        except BaseException:
            stop.set()  # the other threads stop at their next row group
            raise

    def count() -> np.ndarray:
        acc = np.zeros(n, np.int64)
        while not stop.is_set():
            with lock:
                p = next(todo, None)
            if p is None:
                break
            f = pq.ParquetFile(p)
            for g in range(f.num_row_groups):  # one row group in memory at a time
                if stop.is_set():
                    break
                tab = f.read_row_group(g, columns=cols, use_threads=False)
                lists = tab.column(0)
                if lang:
                    lists = lists.filter(pc.equal(tab.column(1), lang))
                for chunk in lists.chunks:
                    flat = chunk.flatten()  # the ids of the chunk's rows, zero-copy
                    if flat.null_count:
                        raise InputError(f"{p}: null entry ids in entry_ids")
                    if not len(flat):
                        continue
                    try:  # a negative id raises, one past the counts lengthens the result
                        c = np.bincount(flat.to_numpy(), minlength=n)
                    except ValueError:
                        c = None
                    if c is None or c.size > n:
                        raise InputError(f"{p}: entry ids outside entry_counts.parquet's "
                                         f"{n} entries")
                    acc += c
        return acc

    return work


def _kept_of_run(layout: OutputLayout, summary: dict, n: int, lang: str) -> np.ndarray | None:
    """Kept captions per entry of ``lang`` as pass 2 counted them (its
    ``work/pass2/shard-*.kept.npz``), or None when they are not all there (a
    report of an older run, or of a DIR whose work/ was removed): then the
    curated parts are read."""
    stats = sorted(glob.glob(os.path.join(glob.escape(layout.stats_dir), "shard-*.json")))
    kept = []
    for p in stats:
        k = os.path.join(layout.pass2_dir, os.path.basename(p)[:-len(".json")] + ".kept.npz")
        if not os.path.exists(k):
            return None
        kept.append(k)
    after, rows, lang_rows = np.zeros(n, np.int64), 0, 0
    try:
        for k in kept:
            with np.load(k) as z:
                rows += int(z["kept_rows"])
                if f"{lang}.ids" in z.files:
                    ids = z[f"{lang}.ids"]
                    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n):
                        return None
                    after[ids] += z[f"{lang}.counts"]
                    lang_rows += int(z[f"{lang}.rows"])
    except (OSError, ValueError, KeyError):
        return None
    # the same captions as the run's summary says it kept (in total, and of this language)
    want = summary.get("curated") if lang == ALL else \
        (summary.get("languages") or {}).get(lang, {}).get("curated")
    return after if rows == summary.get("curated") and lang_rows == want else None


def _load(out: str, metadata: dict | None = None) -> dict:
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
        # worldwide: the plots show one language: en, else the largest pool, of
        # the languages with a match (a language that matched nothing was not balanced)
        some = {c: v for c, v in langs.items() if v.get("matched")} or langs
        main = "en" if some.get("en", {}).get("pool") else max(some, key=lambda c: some[c]["pool"])
        summary = dict(summary, t=langs[main].get("t"))
        counts_file = layout.entry_counts_of(main)
    else:
        counts_file = layout.entry_counts
    ec = pq.ParquetFile(need(counts_file))
    t = ec.read(columns=["entry_id", "count"])
    ids = t.column("entry_id").to_numpy()
    before = np.zeros(int(ids.max()) + 1 if ids.size else 0, np.int64)
    before[ids] = t.column("count").to_numpy().astype(np.int64)

    # "after": the curated parts' entry_ids, decoded on reader threads while
    # this one reads the names of the head table's entries
    pool, futures, stop = None, [], threading.Event()
    kept = _kept_of_run(layout, summary, before.size, main or ALL) \
        if summary.get("curated") is not None else None
    # neither the kept counts nor the parts (a run of --outputs without parquet,
    # whose work/ is gone): "after" is unknown, never shown as zeros
    parts = sorted(glob.glob(os.path.join(glob.escape(layout.curated_dir), "part-*.parquet")))
    after_known = kept is not None or (summary.get("curated") is not None and
                                       (bool(parts) or not summary.get("curated")))
    if summary.get("curated") is not None and kept is None and after_known:
        work = _part_counter(parts, before.size, main, stop)
        k = min(READERS, len(parts), os.cpu_count() or 1)
        if k > 1:
            pool = ThreadPoolExecutor(k, thread_name_prefix="gpucurate-report")
            futures = [pool.submit(work) for _ in range(k)]
    try:
        order = _head_order(before, summary.get("t"))
        names = {}
        if order.size:  # only the rows the head table shows
            md = (metadata or {}).get(main or ALL)
            stamp = (ec.schema_arrow.metadata or {}).get(SHA_KEY)
            if md is not None and stamp == md.sha256.encode() and len(md) == before.size:
                names = dict(zip(order.tolist(), md.arrow().take(order).to_pylist()))  # the run's list
            else:
                row = np.empty(before.size, np.int64)
                row[ids] = np.arange(ids.size)
                col = ec.read(columns=["entry"], use_threads=False).column(0)
                names = dict(zip(order.tolist(), col.take(row[order]).to_pylist()))
        after = None
        if kept is not None:
            after = kept
        elif summary.get("curated") is not None and after_known:
            after = sum(f.result() for f in futures) if futures else work()
    finally:
        if pool is not None:
            stop.set()  # a no-op once every part is counted
            pool.shutdown(cancel_futures=True)

    shards = []
    for p in sorted(glob.glob(os.path.join(glob.escape(layout.stats_dir), "shard-*.json"))):
        with open(p, encoding="utf-8") as f:
            shards.append(json.load(f))
    return {"summary": summary, "before": before, "after": after, "names": names,
            "order": order, "shards": shards, "languages": langs if ww else {}, "main": main}


# ------------------------------------------------------------------- plots

W = 800                 # width of every figure (px; the page scales it down)
BLUE, ORANGE, GREY, RED, PURPLE = "#1f77b4", "#ff7f0e", "#7f7f7f", "#d62728", "#9467bd"
_SI = ((10 ** 12, "T"), (10 ** 9, "B"), (10 ** 6, "M"), (10 ** 3, "k"))


def _ranks(n: int) -> np.ndarray:
    """0-based indices of ranks 1..n, geometrically thinned to ~MAX_POINTS."""
    if n <= MAX_POINTS:
        return np.arange(n)
    r = np.unique(np.geomspace(1, n, MAX_POINTS).astype(np.int64)) - 1
    return np.union1d(r, [n - 1])


def _e(s) -> str:
    return html.escape(str(s))


def _f(v: float) -> str:
    return f"{v:.1f}"


def _decade(k: int) -> str:
    """10**k (k >= 0) as 1, 10, 100, 1k ... 100T, then as 10 with k superscript."""
    if k >= 15:
        return f'10<tspan dy="-6" font-size="9">{k}</tspan>'
    for v, s in _SI:
        if 10 ** k >= v:
            return f"{10 ** k // v}{s}"
    return str(10 ** k)


def _compact(v: float) -> str:
    """A linear tick: 0, 500, 1.5k, 2M, 10B, 500T, then 5e17 ..."""
    if abs(v) >= 10 ** 15:
        m, x = f"{v:.2e}".split("e")
        return f"{float(m):g}e{int(x)}"
    for u, s in _SI:
        if abs(v) >= u:
            return f"{v / u:.3g}{s}"
    return f"{v:.3g}"


def _entries(n: int) -> str:
    return f"{n:,} entr{'y' if n == 1 else 'ies'}"


def _nice_step(span: float, n: int = 5) -> float:
    raw = span / n
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


class _Axes:
    """A plot box in pixels and its x and y scales (log10 or linear)."""

    def __init__(self, box, xdom, ydom, xlog: bool, ylog: bool):
        self.l, self.t, self.r, self.b = box
        self.xdom, self.ydom, self.xlog, self.ylog = xdom, ydom, xlog, ylog

    def x(self, v):
        v = np.log10(v) if self.xlog else np.asarray(v, float)
        return self.l + (v - self.xdom[0]) / (self.xdom[1] - self.xdom[0]) * (self.r - self.l)

    def y(self, v):
        v = np.log10(v) if self.ylog else np.asarray(v, float)
        return self.b - (v - self.ydom[0]) / (self.ydom[1] - self.ydom[0]) * (self.b - self.t)

    def frame(self, xticks, yticks, xlabel: str, ylabel: str) -> list[str]:
        """Grid, ticks with labels, the box and the axis labels; a tick is
        (value, label markup), the label already escaped."""
        g = ['<g stroke="#e3e3e3" stroke-width="1">']
        for v, _ in xticks:
            x = _f(float(self.x(v)))
            g.append(f'<line x1="{x}" y1="{self.t}" x2="{x}" y2="{self.b}"/>')
        for v, _ in yticks:
            y = _f(float(self.y(v)))
            g.append(f'<line x1="{self.l}" y1="{y}" x2="{self.r}" y2="{y}"/>')
        g.append("</g>")
        g.append('<g fill="#333">')
        for v, lab in xticks:
            g.append(f'<text x="{_f(float(self.x(v)))}" y="{self.b + 16}" '
                     f'text-anchor="middle">{lab}</text>')
        for v, lab in yticks:
            g.append(f'<text x="{self.l - 6}" y="{_f(float(self.y(v)) + 4)}" '
                     f'text-anchor="end">{lab}</text>')
        cx, cy = (self.l + self.r) / 2, (self.t + self.b) / 2
        g.append(f'<text x="{_f(cx)}" y="{self.b + 36}" text-anchor="middle">{_e(xlabel)}</text>')
        if ylabel:
            g.append(f'<text transform="translate(16 {_f(cy)}) rotate(-90)" '
                     f'text-anchor="middle">{_e(ylabel)}</text>')
        g.append("</g>")
        return g

    def box(self) -> str:
        return (f'<rect x="{self.l}" y="{self.t}" width="{self.r - self.l}" '
                f'height="{self.b - self.t}" fill="none" stroke="#444"/>')


def _decades(lo: int, hi: int) -> tuple[int, int, int]:
    """A log axis from 10**lo to 10**hi (at least one decade, ``hi`` moved up
    so that the labelled decades, every ``step``-th, end on it): (lo, hi, step)."""
    hi = max(hi, lo + 1)
    step = max(1, math.ceil((hi - lo) / 10))
    return lo, lo + step * math.ceil((hi - lo) / step), step


def _log_ticks(lo: int, hi: int, step: int) -> list:
    return [(10.0 ** k, _decade(k)) for k in range(lo, hi + 1, step)]


def _pad(lo: float, hi: float, f: float = 0.02) -> tuple[float, float]:
    return lo - f * (hi - lo), hi + f * (hi - lo)


def _line(series: str, xs, ys, color: str, width: float) -> str:
    """A curve as one polyline (a dot when it has one point); repeated pixels dropped."""
    xs, ys = np.round(xs, 1), np.round(ys, 1)
    if xs.size > 1:
        keep = np.r_[True, (np.diff(xs) != 0) | (np.diff(ys) != 0)]
        xs, ys = xs[keep], ys[keep]
    if xs.size == 1:
        return (f'<circle data-series="{series}" cx="{_f(xs[0])}" cy="{_f(ys[0])}" '
                f'r="{_f(max(width, 2.0))}" fill="{color}"/>')
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs.tolist(), ys.tolist()))
    return (f'<polyline data-series="{series}" fill="none" stroke="{color}" '
            f'stroke-width="{width}" stroke-linejoin="round" points="{pts}"/>')


def _legend(items: list, x: float, y: float, right: bool) -> str:
    """items: (kind "line"|"dash"|"box", color, width, text); (x, y) the top
    corner (top-right when ``right``)."""
    if not items:
        return ""
    tw = max(len(text) for *_, text in items) * 6.6 + 40
    h = 20 * len(items) + 8
    x0 = x - tw if right else x
    g = [f'<g><rect x="{_f(x0)}" y="{_f(y)}" width="{_f(tw)}" height="{h}" fill="#fff" '
         'fill-opacity="0.85" stroke="#ccc" rx="3"/>']
    for i, (kind, color, width, text) in enumerate(items):
        cy = y + 14 + 20 * i
        if kind == "box":
            g.append(f'<rect x="{_f(x0 + 8)}" y="{_f(cy - 6)}" width="24" height="12" '
                     f'fill="{color}"/>')
        else:
            dash = ' stroke-dasharray="6 4"' if kind == "dash" else ""
            g.append(f'<line x1="{_f(x0 + 8)}" y1="{_f(cy)}" x2="{_f(x0 + 32)}" y2="{_f(cy)}" '
                     f'stroke="{color}" stroke-width="{width}"{dash}/>')
        g.append(f'<text x="{_f(x0 + 38)}" y="{_f(cy + 4)}">{_e(text)}</text>')
    return "".join(g) + "</g>"


def _svg(h: int, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" '
            f'viewBox="0 0 {W} {h}" role="img" aria-label="{_e(title)}" '
            'font-family="sans-serif" font-size="12">'
            f'<title>{_e(title)}</title><rect width="{W}" height="{h}" fill="#fff"/>'
            f'<text x="{W // 2}" y="22" text-anchor="middle" font-size="15">{_e(title)}</text>'
            + "".join(body) + "</svg>\n")


def _no_data(ax: _Axes, text: str) -> str:
    return (f'<text x="{_f((ax.l + ax.r) / 2)}" y="{_f((ax.t + ax.b) / 2)}" '
            f'text-anchor="middle" fill="#777">{_e(text)}</text>')


def _plots(d: dict) -> dict[str, str]:
    """The three figures, as SVG texts."""
    s, before, after = d["summary"], d["before"], d["after"]
    t = s.get("t")
    t = t if t and t > 0 else None  # None: a count-only run
    n_head = int(np.count_nonzero(before > t)) if t else 0
    curves = [("before", before, BLUE, 3.0)]  # drawn wide, so "after" shows on top of it
    if after is not None:
        curves.append(("after", after, ORANGE, 1.2))
    curves = [(name, np.sort(c[c > 0])[::-1], color, lw) for name, c, color, lw in curves]
    box = (70, 36, W - 16, 450 - 50)
    svgs = {}

    # counts: log-log, ranks 1..n, with t and the head band
    n = max([c.size for _, c, _, _ in curves] + [n_head, 1])
    pos = [int(c[-1]) for _, c, _, _ in curves if c.size] + ([t] if t else [])
    top = [int(c[0]) for _, c, _, _ in curves if c.size] + ([t] if t else [])
    ylo, yhi, ystep = _decades(math.floor(math.log10(min(pos))) if pos else 0,
                               math.ceil(math.log10(max(top))) if top else 1)
    _, xhi, xstep = _decades(0, math.ceil(math.log10(n + 0.5)))
    ax = _Axes(box, _pad(0, xhi), _pad(ylo, yhi), True, True)
    body, legend = [], []
    if n_head:
        x1 = min(float(ax.x(n_head + 0.5)), ax.r)
        body.append(f'<rect data-mark="head" x="{ax.l}" y="{ax.t}" width="{_f(x1 - ax.l)}" '
                    f'height="{ax.b - ax.t}" fill="#d9d9d9"/>')
    body += ax.frame(_log_ticks(0, xhi, xstep), _log_ticks(ylo, yhi, ystep), "entry rank",
                     "captions per entry")
    for name, c, color, lw in curves:
        if c.size:
            i = _ranks(c.size)
            body.append(_line(name, ax.x(i + 1.0), ax.y(c[i].astype(float)), color, lw))
        legend.append(("line", color, lw, f"{name} ({_entries(c.size)})"))
    if t:
        y = _f(float(ax.y(float(t))))
        body.append(f'<line data-mark="t" x1="{ax.l}" y1="{y}" x2="{ax.r}" y2="{y}" '
                    'stroke="#000" stroke-width="1" stroke-dasharray="6 4"/>')
        legend.append(("dash", "#000", 1, f"t = {t:,}"))
    if n_head:
        legend.append(("box", "#d9d9d9", 0, f"head: {_entries(n_head)}"))
    if not curves[0][1].size:
        body.append(_no_data(ax, "no entry matched"))
    body.append(ax.box())
    body.append(_legend(legend, ax.r - 8, ax.t + 8, right=True))
    svgs["counts.svg"] = _svg(450, "Captions per entry, sorted descending", body)

    # cumulative: share of all matches held by the top-k entries
    ax = _Axes(box, _pad(0, xhi), (0.0, 1.02), True, False)
    body, legend = [], []
    body += ax.frame(_log_ticks(0, xhi, xstep), [(v / 5, f"{v / 5:.1f}") for v in range(6)],
                     "top-k entries (k)", "share of all matches")
    for name, c, color, lw in curves:
        if c.size:
            share = np.cumsum(c, dtype=np.float64) / float(c.sum())
            i = _ranks(c.size)
            body.append(_line(name, ax.x(i + 1.0), ax.y(share[i]), color, lw))
        legend.append(("line", color, lw, name))
    if n_head:
        x = _f(float(ax.x(float(n_head))))
        body.append(f'<line data-mark="head" x1="{x}" y1="{ax.t}" x2="{x}" y2="{ax.b}" '
                    'stroke="#000" stroke-width="1" stroke-dasharray="6 4"/>')
        legend.append(("dash", "#000", 1, f"end of head (k = {n_head:,})"))
    if not curves[0][1].size:
        body.append(_no_data(ax, "no entry matched"))
    body.append(ax.box())
    body.append(_legend(legend, ax.l + 8, ax.t + 8, right=False))
    svgs["cumulative.svg"] = _svg(450, "Share of all matches held by the top-k entries", body)

    # funnel: one bar per stage, its value at its end
    stages = _funnel(s)
    colors = {"rejected": PURPLE, "pool": GREY, "null_captions": RED, "unrouted": RED,
              "matched": BLUE, "curated": ORANGE}
    h = 36 + 30 * len(stages) + 50
    vmax = max([int(v) for _, _, v in stages] + [0])
    texts = [f"{int(v):,}" for _, _, v in stages]
    fbox = (130, 36, W - 16, h - 50)
    room = (fbox[2] - fbox[0]) - 7.2 * max(len(x) for x in texts) - 12
    hi = vmax * (fbox[2] - fbox[0]) / max(room, 1.0) if vmax else 1.0
    step = _nice_step(hi)
    ticks = [(k * step, _e(_compact(k * step))) for k in range(int(hi / step) + 1)]
    ax = _Axes(fbox, (0.0, hi), (0.0, 1.0), False, False)
    body = ax.frame(ticks, [], "captions", "")
    for i, ((key, label, v), text) in enumerate(zip(stages, texts)):
        y = fbox[1] + 5 + 30 * i
        x1 = float(ax.x(float(v)))
        body.append(f'<rect data-stage="{_e(key)}" x="{fbox[0]}" y="{y}" '
                    f'width="{_f(x1 - fbox[0])}" height="20" fill="{colors.get(key, GREY)}"/>')
        body.append(f'<text x="{fbox[0] - 6}" y="{y + 14}" text-anchor="end">{_e(label)}</text>')
        body.append(f'<text x="{_f(x1 + 4)}" y="{y + 14}">{_e(text)}</text>')
    body.append(ax.box())
    svgs["funnel.svg"] = _svg(h, "Funnel", body)
    return svgs


# -------------------------------------------------------------------- HTML


def _funnel(s: dict) -> list[tuple[str, str, int]]:
    rows = [("pool", "captions in", s["pool"]), ("null_captions", "null", s["null_captions"]),
            ("matched", "matched", s["matched"])]
    if s.get("rejected"):  # --on-bad-row skip: rows left out, listed in rejected/
        rows.insert(0, ("rejected", "bad rows skipped", s["rejected"]))
    if s.get("unrouted"):  # worldwide: in a language without a list, never matched
        rows.insert(len(rows) - 1, ("unrouted", "no metadata list", s["unrouted"]))
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


def _html(d: dict, svgs: dict[str, str]) -> str:
    s, before, after, names = d["summary"], d["before"], d["after"], d["names"]
    t = s.get("t")
    e = html.escape

    def fig(name):  # the file's exact text, inline
        return f'<figure data-file="{name}">{svgs[name].rstrip()}</figure>'

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

    head_rows = []
    for rank, i in enumerate(d["order"].tolist(), 1):
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
    if s.get("stage") == "balance":
        sub += (". A balance run: \"before\" is the pool counts it was given (--counts), "
                "which may cover more shards than this run's; \"after\" is this run's kept "
                "captions alone")
    if d.get("main"):
        sub += (f". Worldwide run: the entries' plots and tables below (captions per "
                f"entry, cumulative share, counts, head entries) show language "
                f"<b>{e(d['main'])}</b>; the languages table, the funnel and the shards "
                "show every language together")
    sections = [
        f"<h1>gpucurate report</h1><p>{sub}</p><p>{head_text}</p>"
        + ("<h2>Languages</h2>" + _table("languages", ["language", "pool", "matched",
                                                       "curated", "t"], lang_rows)
           + (f'<p data-key="unrouted">{int(s["unrouted"]):,} captions of the pool were in a '
              "language without a metadata list (no other.json took them): never matched, in "
              "no row above.</p>" if s.get("unrouted") else "")
           if lang_rows else ""),
        "<h2>Captions per entry</h2>" + fig("counts.svg"),
        "<h2>Cumulative share</h2>" + fig("cumulative.svg"),
        "<h2>Counts</h2>" + _table("facts", ["", "value"], fact_rows),
        f"<h2>Top head entries</h2><p>The {len(head_rows)} most matched entries with count "
        "&gt; t: captions matching each before balancing, kept captions matching it after, "
        "and its keep probability t/count.</p>"
        + _table("head", ["#", "id", "entry", "before", "kept after", "t/count"], head_rows),
        "<h2>Funnel</h2>" + fig("funnel.svg")
        + _table("funnel", ["", "captions", "of pool"], funnel_rows),
        "<h2>Shards</h2>" + _table("shards", ["shard", "captions", "matched", "kept",
                                               "s pass 1", "s pass 2", "s total"], shard_rows),
    ]
    style = ("body{font:14px/1.4 sans-serif;margin:2em auto;max-width:60em;color:#222}"
             "figure{margin:.5em 0}svg{max-width:100%;height:auto}"
             "table{border-collapse:collapse;margin:.5em 0}"
             "td,th{padding:.15em .6em;border-bottom:1px solid #ddd;text-align:left}"
             "td.n{text-align:right;font-variant-numeric:tabular-nums}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>gpucurate report</title><style>{style}</style></head>\n<body>\n"
            + "\n".join(f"<section>{x}</section>" for x in sections) + "\n</body></html>\n")


def write_report(out_dir, metadata: dict | None = None) -> str:
    """Write ``out_dir/report/index.html`` (and its SVGs); return the HTML's path.
    ``metadata``: the run's {language: Metadata}, where the head table's names
    are then taken (when a counts file was written from that same list), rather
    than from the counts file's column of every entry."""
    out = os.fspath(out_dir)
    d = _load(out, metadata)
    svgs = _plots(d)
    rdir = OutputLayout(out).report
    os.makedirs(rdir, exist_ok=True)
    for name, text in svgs.items():
        atomic_write_bytes(os.path.join(rdir, name), text.encode("utf-8"))
    for old in ("counts.png", "cumulative.png", "funnel.png"):  # an older report's figures
        try:
            os.remove(os.path.join(rdir, old))
        except FileNotFoundError:
            pass
    path = os.path.join(rdir, "index.html")
    atomic_write_bytes(path, _html(d, svgs).encode("utf-8"))
    logger.info("report: %s", path)
    return path
