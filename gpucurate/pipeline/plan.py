"""``plan``: the t whose expected curated size is nearest a target.

The expected size of a curation with threshold t is

    E(t) = sum over captions of 1 - prod over its entries e of (1 - min(1, t/count[e])).

It is computed from a run's saved matches (``--save-matches``) in one pass,
after which any t costs a binary search. A caption whose smallest entry count
c1 is <= t is kept for sure; below that every factor is 1 - t*x_i with
x_i = 1/count[e_i], and the product is the polynomial sum_j (-t)^j e_j(x) in
t (e_j: the elementary symmetric polynomials of the caption's x). So the pass
adds each caption's e_0..e_k into the row of the entry holding its c1; with
the rows sorted by count, suffix sums give, for any t, the captions with
c1 <= t and sum_j (-t)^j S_j over the others. Each term t^j e_j of a caption
is at most C(k, j) (all t*x_i < 1), so the alternating sum loses nothing that
matters for k <= 12; captions with more entries (few) are summed exactly per t.
"""

from __future__ import annotations

import glob
import json
import os
import re

import numba
import numpy as np
import pyarrow.parquet as pq

from ..errors import ConfigError, InputError
from .layout import OutputLayout

KMAX = 12  # captions with more entries are summed exactly for each t
LO = 5     # e_0..e_4 (captions of up to 4 entries) in one cache line per entry


@numba.njit(cache=True, nogil=True)
def _accumulate(entry, tid, count, inv, acc, acc_hi, long_x, long_len):
    """Add each caption's (runs of equal tid) e_0..e_k to acc[entry of its
    smallest count]; captions with more than KMAX entries go to long_x (their
    1/count values) and long_len. Returns (pairs in long_x, long captions), or
    (-1, 0) when the text ids are not in order and (-2, i) when pair i names an
    entry without a count (nothing is added then)."""
    n = entry.size
    ne = count.size
    for i in range(1, n):
        if tid[i] < tid[i - 1]:
            return -1, 0
    e = np.zeros(KMAX + 1)
    nx = 0
    nl = 0
    i = 0
    while i < n:
        j = i + 1
        while j < n and tid[j] == tid[i]:
            j += 1
        k = j - i
        for q in range(i, j):
            if entry[q] >= ne or count[entry[q]] <= 0:
                return -2, q
        if k == 1:
            b = entry[i]
            acc[b, 0] += 1.0
            acc[b, 1] += inv[b]
        elif k == 2:
            x1 = inv[entry[i]]
            x2 = inv[entry[i + 1]]
            b = entry[i] if x1 >= x2 else entry[i + 1]
            acc[b, 0] += 1.0
            acc[b, 1] += x1 + x2
            acc[b, 2] += x1 * x2
        elif k > KMAX:
            for q in range(i, j):
                long_x[nx] = inv[entry[q]]
                nx += 1
            long_len[nl] = k
            nl += 1
        else:
            for r in range(1, k + 1):
                e[r] = 0.0
            e[0] = 1.0
            best = entry[i]
            for q in range(i, j):
                x = inv[entry[q]]
                if x > inv[best]:
                    best = entry[q]
                for r in range(q - i + 1, 0, -1):
                    e[r] += x * e[r - 1]
            for r in range(min(k + 1, LO)):
                acc[best, r] += e[r]
            for r in range(LO, k + 1):
                acc_hi[best, r - LO] += e[r]
        i = j
    return nx, nl


@numba.njit(cache=True, nogil=True)
def _long_sum(t, xs, lens):
    s = 0.0
    at = 0
    for c in range(lens.size):
        prod = 1.0
        for q in range(at, at + lens[c]):
            p = t * xs[q]
            if p >= 1.0:
                prod = 0.0
                break
            prod *= 1.0 - p
        s += 1.0 - prod
        at += lens[c]
    return s


class SizeModel:
    """E(t) of one set of captions: feed it their matches, then ask."""

    def __init__(self, counts: np.ndarray):
        self.counts = np.asarray(counts, dtype=np.float64)
        self.acc = np.zeros((self.counts.size, LO))
        self.acc_hi = np.zeros((self.counts.size, KMAX + 1 - LO))
        with np.errstate(divide="ignore"):
            self.inv = np.where(self.counts > 0, 1.0 / self.counts, 0.0)
        self.long_x: list = []
        self.long_len: list = []
        self.pairs = 0
        self.done = False

    def add(self, entry_id: np.ndarray, text_id: np.ndarray) -> None:
        """The (entry_id, text_id) pairs of whole captions (a caption's pairs
        all in one call)."""
        if entry_id.size == 0:
            return
        lx = np.empty(entry_id.size)
        ll = np.empty(entry_id.size, np.int64)
        nx, nl = _accumulate(entry_id, text_id, self.counts, self.inv, self.acc, self.acc_hi,
                                  lx, ll)
        if nx == -1:  # not in text id order: sorted, stably
            o = np.argsort(text_id, kind="stable")
            entry_id, text_id = entry_id[o], text_id[o]
            nx, nl = _accumulate(entry_id, text_id, self.counts, self.inv, self.acc, self.acc_hi,
                                  lx, ll)
        if nx == -2:
            raise InputError(f"the saved matches name entry {int(entry_id[nl])}, which the "
                             "counts do not count; they come from another run or another "
                             "metadata list")
        if nl:
            self.long_x.append(lx[:nx].copy())
            self.long_len.append(ll[:nl].copy())
        self.pairs += int(entry_id.size)

    def finish(self) -> "SizeModel":
        order = np.argsort(self.counts, kind="stable")
        self.sorted_counts = self.counts[order]
        acc = np.concatenate([self.acc, self.acc_hi], axis=1)[order]
        self.suffix = np.zeros((acc.shape[0] + 1, KMAX + 1))
        self.suffix[:-1] = np.cumsum(acc[::-1], axis=0)[::-1]
        self.lx = np.concatenate(self.long_x) if self.long_x else np.zeros(0)
        self.ll = np.concatenate(self.long_len) if self.long_len else np.zeros(0, np.int64)
        self.captions = float(self.suffix[0, 0]) + self.ll.size
        self.max_count = int(self.counts.max()) if self.counts.size else 0
        self.done = True
        return self

    def expected(self, t: float) -> float:
        """E(t), the expected curated size at threshold t."""
        t = float(t)
        pos = int(np.searchsorted(self.sorted_counts, t, side="right"))
        s = self.suffix[pos]
        sure = self.suffix[0, 0] - s[0]
        j = np.arange(1, KMAX + 1)
        poly = float(np.sum(-((-t) ** j) * s[1:]))
        return float(sure + poly + _long_sum(t, self.lx, self.ll))

    def solve(self, target: float) -> int:
        """The integer t >= 1 whose E(t) is nearest ``target`` (the smaller t on a tie)."""
        hi = max(1, self.max_count)
        if self.expected(hi) <= target:
            lo = 1
            while lo < hi:  # the smallest t reaching the largest size
                mid = (lo + hi) // 2
                if self.expected(mid) >= self.expected(hi) - 1e-9:
                    hi = mid
                else:
                    lo = mid + 1
            return hi
        lo = 1
        if self.expected(1) >= target:
            return 1
        while lo + 1 < hi:  # E(lo) < target <= E(hi)
            mid = (lo + hi) // 2
            if self.expected(mid) >= target:
                hi = mid
            else:
                lo = mid
        return lo if target - self.expected(lo) <= self.expected(hi) - target else hi

    def table(self, t_star: int) -> list:
        ts = {max(1, int(round(t_star * f))) for f in (0.125, 0.25, 0.5, 1, 2, 4, 8)}
        ts = sorted(t for t in ts if t <= max(1, self.max_count)) or [t_star]
        if t_star not in ts:
            ts = sorted(ts + [t_star])
        return [(t, self.expected(t)) for t in ts]


# ---------------------------------------------------------------- a run's saved matches
_MARKER = re.compile(r"shard-(\d+)\.json")


def saved_match_files(root: str) -> list:
    """The matches files of the run in ``root`` (one per shard it read), or an
    error saying how to make them."""
    layout = OutputLayout(root)
    if not os.path.exists(layout.config):
        raise ConfigError(f"{root} holds no run (no config.json); give the --out of a count or "
                          "curate run made with --save-matches")
    markers = sorted(glob.glob(os.path.join(glob.escape(layout.pass1_dir), "shard-*.json")))
    if not markers:
        raise ConfigError(f"{root} has no pass 1 (no work/pass1/shard-*.json); give the --out "
                          "of a count or curate run made with --save-matches")
    files = []
    for i in sorted(int(x.group(1)) for x in map(_MARKER.fullmatch, map(os.path.basename, markers))
                    if x):  # NNNNN: five digits or more
        p = layout.matches(i)
        if not os.path.exists(p):
            raise ConfigError(f"{root} has no saved matches ({p} is missing): rerun count or "
                              "curate into it with --save-matches --overwrite (the same "
                              "command plus those two)")
        files.append((i, p))
    return files


def run_counts(root: str) -> np.ndarray:
    layout = OutputLayout(root)
    if os.path.isdir(layout.entry_counts_dir) and not os.path.exists(layout.entry_counts):
        raise ConfigError(f"{root} is a worldwide run; plan covers MetaCLIP 1 runs (one "
                          "metadata list)")
    if not os.path.exists(layout.entry_counts):
        raise ConfigError(f"{root} has no entry_counts.parquet: let its count or curate run "
                          "finish (rerun the same command)")
    t = pq.read_table(layout.entry_counts, columns=["entry_id", "count"])
    counts = np.zeros(t.num_rows, np.uint64)
    counts[t.column("entry_id").to_numpy()] = t.column("count").to_numpy()
    return counts


def iter_matches(path: str, columns=("entry_id", "text_id")):
    """The pairs of a matches file as numpy arrays, row group by row group,
    each caption's pairs in one piece: a row group ends inside a caption when
    a batch had more pairs than the writer's row-group limit (text ids rise
    through the file, so the last caption of a group is carried to the next)."""
    f = pq.ParquetFile(path)
    if "lang" in f.schema_arrow.names:
        raise ConfigError(f"{path}: the matches of a worldwide run; plan and rebalance --target-"
                          "size cover MetaCLIP 1 runs")
    read = list(dict.fromkeys([*columns, "text_id"]))
    ti = read.index("text_id")
    carry = None
    for g in range(f.metadata.num_row_groups):
        t = f.read_row_group(g, columns=read, use_threads=False)
        arrs = [t.column(c).to_numpy() for c in read]
        if carry is not None:
            arrs = [np.concatenate([a, b]) for a, b in zip(carry, arrs)]
        tid = arrs[ti]
        if not tid.size:
            carry = arrs
            continue
        cut = int(np.searchsorted(tid, tid[-1], "left")) if bool(
            np.all(tid[1:] >= tid[:-1])) else 0
        carry = [a[cut:] for a in arrs]
        if cut:
            yield tuple(arrs[read.index(c)][:cut] for c in columns)
    if carry is not None and carry[ti].size:
        yield tuple(carry[read.index(c)] for c in columns)


def _group_column(root: str):
    try:
        with open(OutputLayout(root).config, encoding="utf-8") as f:
            return (json.load(f).get("config") or {}).get("group_column")
    except (OSError, ValueError):
        return None


def model_of_run(root: str) -> SizeModel:
    """The expected curated size of the run in ``root`` as a function of t:
    of its matched captions, or (a run with --group-column) of the one
    caption each group chose, the only ones that may be kept."""
    files = saved_match_files(root)
    counts = run_counts(root)
    model = SizeModel(counts)
    layout = OutputLayout(root)
    grouped = _group_column(root) is not None
    pairs = 0
    for i, path in files:
        chosen = None
        if grouped:
            if not os.path.exists(layout.groups(i)):
                raise ConfigError(f"{root} is a run with --group-column whose chosen rows "
                                  f"({layout.groups(i)}) are gone; rerun it (the same command)")
            rows = np.load(layout.groups(i))
            chosen = np.zeros(int(rows.max()) + 1 if rows.size else 0, bool)
            chosen[rows] = True
        for e, t in iter_matches(path):
            pairs += int(e.size)
            if chosen is not None:
                m = t < chosen.size
                m[m] = chosen[t[m]]
                e, t = e[m], t[m]
            model.add(e, t)
    if pairs != int(counts.sum()):
        raise InputError(f"{root}: the saved matches hold {pairs:,} pairs but "
                         f"entry_counts.parquet counts {int(counts.sum()):,}; they come from "
                         "different runs: rerun with --overwrite --save-matches")
    return model.finish()


def plan(root: str, target: int) -> dict:
    """{"t", "expected_curated", "table": [(t, expected)], "captions"} for ``target``."""
    if isinstance(target, bool) or int(target) != target or target < 1:
        raise ConfigError(f"--target-size must be an integer >= 1, not {target!r}")
    model = model_of_run(root)
    t = model.solve(float(target))
    return {"t": int(t), "expected_curated": int(round(model.expected(t))),
            "matched_captions": int(model.captions), "one_per_group": _group_column(root)
            is not None,
            "table": [(int(a), float(b)) for a, b in model.table(t)]}


def format_plan(d: dict, target: int) -> str:
    lines = [f"target {target:,}: t = {d['t']:,}, expected curated {d['expected_curated']:,} "
             f"(of {d['matched_captions']:,} matched captions"
             f"{', the one of each group that may be kept' if d.get('one_per_group') else ''})",
             "", f"{'t':>12}  {'expected':>14}"]
    for t, e in d["table"]:
        lines.append(f"{t:>12,}  {e:>14,.0f}" + ("  <" if t == d["t"] else ""))
    return "\n".join(lines)


def plan_json(d: dict) -> str:
    return json.dumps({"t": d["t"], "expected_curated": d["expected_curated"]})
