"""CUDA kernels: the routines (``routines.py``) compiled as device functions.

Launch layout: one thread per caption over a grid-stride loop (so any grid size
covers any number of captions, and a caption of megabytes is simply a long
thread). The matching kernels take a launch ``order`` (a permutation of the
rows, a subset of them, or an empty array for every row in row order): thread t
walks caption ``order[t]`` and writes only that caption's own places, so the
order changes which captions share a warp, never a result.

Matching, by default, walks each caption once (``match_slots``): its ids go to
``k`` slots of its own and are sorted and deduplicated there; the few captions
with more than ``k`` ids are walked again by ``fill_matches`` into room sized by
a scan of their counts; ``compact_slots`` packs the distinct ids into the final
CSR. The two-pass form (``count_matches``, scan, ``fill_matches``, ``compact``)
needs no slots. ``count_entries`` accumulates entry counts into one
preallocated uint64 array with atomics, ``keep_captions`` takes the pinned keep
decision per caption, and ``utf8_check`` flags rows that are not UTF-8.

The tables travel as one nested tuple (``MatchTables.args()``: word trie, byte
trie, strip flag; uploaded once) and are unpacked into ``match_all``'s
arguments, so the kernels do not depend on the tries' layout. ``signatures`` lists every kernel with concrete argument
types; the tests compile each one to sm_90 PTX without a GPU.
"""

import numpy as np

if not hasattr(np, "row_stack"):  # NumPy >= 2.5 removed it; numba-cuda <= 0.30 still
    np.row_stack = np.vstack      # registers an overload for it when it compiles a kernel

from numba import cuda, types  # noqa: E402

from . import bytewalk
from .routines import build
from .targets import device_jit, device_jit_inline, device_tzcnt

R = build(device_jit, device_jit_inline, tzcnt=device_tzcnt())
W = bytewalk.build(device_jit, R)
match_all, sort_unique, key_mix, keep_caption, utf8_invalid = (
    W.match_all, R.sort_unique, R.key_mix, R.keep_caption, R.utf8_invalid)


@cuda.jit
def match_slots(data, offsets, valid, order, tables, slots, k, raw, distinct):
    """One walk per caption: its ids go to its own ``k`` slots (slots[i*k:i*k+k])
    and are sorted and deduplicated there when they fit. raw[i] = its number of
    (not yet distinct) ids; distinct[i] = its distinct ids, or 0 when raw[i] > k
    (those rows are filled again by ``fill_matches`` with room for all)."""
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = order.size if order.size else valid.size
    while t < n:
        i = order[t] if order.size else t
        c = 0
        d = 0
        if valid[i] != 0:
            lo = i * k
            c = match_all(data, offsets[i], offsets[i + 1], *tables, slots, lo, lo + k) - lo
            if c <= k:
                d = sort_unique(slots, lo, lo + c) - lo
        raw[i] = c
        distinct[i] = d
        t += stride


@cuda.jit
def compact_slots(slots, k, raw, out, raw_off, final_off, ids):
    """Pack each caption's distinct ids into the final CSR: from its slots, or
    (raw[i] > k) from ``out`` where ``fill_matches`` wrote them."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = raw.size
    while i < n:
        dst = final_off[i]
        m = final_off[i + 1] - dst
        if raw[i] > k:
            src = raw_off[i]
            for j in range(m):
                ids[dst + j] = out[src + j]
        else:
            src = i * k
            for j in range(m):
                ids[dst + j] = slots[src + j]
        i += stride


@cuda.jit
def count_matches(data, offsets, valid, order, tables, scratch, counts):
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = order.size if order.size else valid.size
    while t < n:
        i = order[t] if order.size else t  # a launch order (e.g. by length), or the rows'
        c = 0
        if valid[i] != 0:
            c = match_all(data, offsets[i], offsets[i + 1], *tables, scratch, 0, 0)
        counts[i] = c
        t += stride


@cuda.jit
def fill_matches(data, offsets, valid, order, tables, raw_off, out, distinct):
    t = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = order.size if order.size else valid.size
    while t < n:
        i = order[t] if order.size else t
        lo = raw_off[i]
        hi = raw_off[i + 1]
        d = 0
        if valid[i] != 0 and hi > lo:
            match_all(data, offsets[i], offsets[i + 1], *tables, out, lo, hi)
            d = sort_unique(out, lo, hi) - lo
        distinct[i] = d
        t += stride


@cuda.jit
def compact(out, raw_off, final_off, ids):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = raw_off.size - 1
    while i < n:
        src = raw_off[i]
        dst = final_off[i]
        for k in range(final_off[i + 1] - dst):
            ids[dst + k] = out[src + k]
        i += stride


@cuda.jit
def count_entries(ids, counts):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < ids.size:
        cuda.atomic.add(counts, ids[i], np.uint64(1))
        i += stride


@cuda.jit
def keep_captions(ids, offsets, keys, prob, seed, keep):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = keys.size
    while i < n:
        keep[i] = keep_caption(ids, offsets[i], offsets[i + 1], prob, key_mix(seed, keys[i]))
        i += stride


@cuda.jit
def utf8_check(data, offsets, valid, bad):
    """bad[i] = 1 when row i is valid (non-null) and not UTF-8 (captions read on
    the device, e.g. by cuDF, are checked where they are)."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = valid.size
    while i < n:
        b = 0
        if valid[i] != 0:
            b = utf8_invalid(data, offsets[i], offsets[i + 1])
        bad[i] = b
        i += stride


def signatures(table_args):
    """Every kernel with concrete argument types, for tables given as the tuple
    ``MatchTables.args()`` (host arrays suffice: only their types are used)."""
    import numba

    u8, i32, i64, u64, f64 = (types.Array(t, 1, "C") for t in
                              (types.uint8, types.int32, types.int64, types.uint64, types.float64))
    trie = numba.typeof(tuple(table_args))
    return {
        "match_slots": (match_slots, (u8, i64, u8, i64, trie, i32, types.int64, i64, i64)),
        "compact_slots": (compact_slots, (i32, types.int64, i64, i32, i64, i64, i32)),
        "count_matches": (count_matches, (u8, i64, u8, i64, trie, i32, i64)),
        "fill_matches": (fill_matches, (u8, i64, u8, i64, trie, i64, i32, i64)),
        "compact": (compact, (i32, i64, i64, i32)),
        "count_entries": (count_entries, (i32, u64)),
        "keep_captions": (keep_captions, (i32, i64, u64, f64, types.uint64, u8)),
        "utf8_check": (utf8_check, (u8, i64, u8, u8)),
    }
