"""CPU engine: the routines (``routines.py``, ``bytewalk.py``) compiled with numba.njit.

``match_range`` matches a contiguous range of captions given as Arrow-layout
buffers (``data`` bytes, ``offsets``, ``valid``) and returns that range's CSR
(offsets relative to the range, distinct sorted int32 ids). It releases the GIL,
so the host layer runs ranges on several threads.
"""

from types import SimpleNamespace

import numba
import numpy as np

from . import bytewalk
from .layout import BYTE_TIDS
from .routines import build
from .targets import cpu_jit, cpu_jit_inline, cpu_load8, cpu_masks64, cpu_prefetch, cpu_tzcnt

R = build(cpu_jit, cpu_jit_inline, cpu_load8, cpu_masks64, cpu_tzcnt, cpu_prefetch)
# numba resolves module globals, not attributes of a namespace: bind them.
sort_unique, key_mix, keep_caption, utf8_invalid = (
    R.sort_unique, R.key_mix, R.keep_caption, R.utf8_invalid)
# The word walk compiled once more, inlined into the loop over captions: a call
# per caption passed the ten table arrays (seven words each) on the stack and
# reloaded the scan's vector constants, ~10% of a short caption's time.
walk_inline = cpu_jit_inline(R.match_caption.py_func)
# MetaCLIP 2's routines over the same inlined walk; their composition
# (bytewalk.match_all) is inlined into worldwide_block.
W = bytewalk.build(cpu_jit, SimpleNamespace(**{**vars(R), "match_caption": walk_inline}))
all_inline = cpu_jit_inline(W.match_all.py_func)


@numba.njit(cache=True, nogil=True)
def words_block(data, offsets, valid, lo, hi, vtag, vrec, vn, voff, vbytes, cbits, ctag, crec,
                tlist, res_off, base, out, pos, cap):
    """MetaCLIP 1 (the word trie alone): captions i = lo.. of a range starting
    at ``base`` set res_off[i - base] and append their distinct sorted ids to
    out[pos:cap]. Stops at the first caption whose ids would pass ``cap``.
    Returns (i, pos, end): the caption it stopped at (hi when done), the ids
    written before it, and where that caption's ids would end."""
    for i in range(lo, hi):
        res_off[i - base] = pos
        if valid[i] == 0:
            continue
        end = walk_inline(data, offsets[i], offsets[i + 1], vtag, vrec, vn, voff, vbytes, cbits,
                          ctag, crec, tlist, out, pos, cap)
        if end > cap:
            return i, pos, end
        pos = sort_unique(out, pos, end) if end - pos > 1 else end
    return hi, pos, pos


@numba.njit(cache=True, nogil=True)
def worldwide_block(data, offsets, valid, lo, hi, wtrie, btrie, strip, res_off, base, out, pos,
                    cap):
    """words_block for MetaCLIP 2 (word and byte tries, see bytewalk.match_all)."""
    for i in range(lo, hi):
        res_off[i - base] = pos
        if valid[i] == 0:
            continue
        end = all_inline(data, offsets[i], offsets[i + 1], wtrie, btrie, strip, out, pos, cap)
        if end > cap:
            return i, pos, end
        pos = sort_unique(out, pos, end) if end - pos > 1 else end
    return hi, pos, pos


@numba.njit(cache=True, nogil=True)
def match_range(data, offsets, valid, lo, hi, wtrie, btrie, strip):
    """The word trie ``wtrie`` (order ``layout.WORD``), the byte trie ``btrie``
    (order ``layout.BYTE``) and ``strip``, as in ``MatchTables.args()``. A
    MetaCLIP 1 run passes ``btrie=None``: numba then prunes the worldwide walk
    and never compiles it (a first run compiles only what it needs)."""
    # Unpacked once, not per caption (taking arrays out of a tuple costs
    # reference counting).
    vtag, vrec, vn, voff, vbytes, cbits, ctag, crec, tlist = wtrie
    n = hi - lo
    res_off = np.zeros(n + 1, np.int64)
    cap = max(1024, 4 * n)
    out = np.empty(cap, np.int32)
    pos = 0
    i = lo
    while True:
        if btrie is None:
            i, pos, end = words_block(data, offsets, valid, i, hi, vtag, vrec, vn, voff, vbytes,
                                      cbits, ctag, crec, tlist, res_off, lo, out, pos, cap)
        else:
            i, pos, end = worldwide_block(data, offsets, valid, i, hi, wtrie, btrie, strip,
                                          res_off, lo, out, pos, cap)
        if i >= hi:
            break
        cap = max(2 * cap, end + 1024)  # room for caption i's ids, then go on from it
        grown = np.empty(cap, np.int32)
        grown[:pos] = out[:pos]
        out = grown
    res_off[n] = pos
    return res_off, out[:pos].copy()


def range_args(tables: tuple) -> tuple:
    """``match_range``'s table arguments of ``MatchTables.args()``: the byte
    trie as None when nothing needs the worldwide walk (no byte-trie entry,
    no strip)."""
    wtrie, btrie, strip = tables
    if strip == 0 and btrie[BYTE_TIDS].size == 0:
        return wtrie, None, strip
    return wtrie, btrie, strip


@numba.njit(cache=True, nogil=True)
def count_entries(ids, counts):
    """counts[e] += 1 for every id (uint64 accumulation in place)."""
    one = np.uint64(1)
    for i in range(ids.size):
        counts[ids[i]] += one


@numba.njit(cache=True, nogil=True)
def keep_range(ids, offsets, keys, prob, seed, keep):
    """keep[i] = the pinned keep decision of caption i (see draw.keep_caption)."""
    for i in range(offsets.size - 1):
        keep[i] = keep_caption(ids, offsets[i], offsets[i + 1], prob, key_mix(seed, keys[i]))


@numba.njit(cache=True, nogil=True)
def first_invalid_utf8(data, offsets, valid):
    """Index of the first valid (non-null) row that is not UTF-8, or -1.

    The ASCII prefix of a row is skipped 8 aligned bytes at a time (ASCII is
    always valid and ends on a character boundary); the rest is checked by the
    shared routine, as the CUDA check does."""
    words = data[:data.size // 8 * 8].view(np.uint64)
    high = np.uint64(0x8080808080808080)
    for i in range(offsets.size - 1):
        if valid[i] == 0:
            continue
        p = offsets[i]
        end = offsets[i + 1]
        while p < end and (p & 7) != 0 and data[p] < 0x80:
            p += 1
        while p + 8 <= end and (words[p >> 3] & high) == 0:
            p += 8
        if utf8_invalid(data, p, end):
            return i
    return -1
