"""The hot routines of gpucurate, written once and compiled per target.

Everything that decides a result is plain Python in the topic modules
beside this one, each with a ``build`` that defines its routines with the
target's ``jit``: ``hashing`` (splitmix64, FNV-1a, a token's key), ``scan``
(the spacing rule's byte classes and the token scan), ``walk`` (the trie's
tables and the walk of a caption), ``sort`` (a caption's id list made sorted
and distinct), ``draw`` (the pinned keep decision) and ``utf8`` (the input
check). :func:`build` composes them in dependency order into one namespace:

* ``build(cpu_jit)``: ``numba.njit`` for the CPU engine (``gpucurate.kernels.cpu``);
* ``build(device_jit)``: ``numba.cuda.jit(device=True)`` for the CUDA kernels
  (``gpucurate.kernels.cuda``);
* ``build(lambda f: f)``: the same code run by the Python interpreter, used by
  the tests to step through a routine.

Rules for code in these modules (so that one source compiles for both targets):
scalars and preallocated arrays in, integers out; no allocation, containers,
strings or exceptions; explicit ``np.uint64`` arithmetic for hashes; every write
bounded by a capacity argument.

The matching rule (MetaCLIP 1, ``metaclip1/substr_matching.py``)
-----------------------------------------------------------------
``spacing(text)`` pads the text with a space on each side, wraps each of
``, . ; : ? ! ``` in spaces and turns ``\\t \\n \\r`` into spaces. Entry ``e``
matches when ``" " + e + " "`` occurs in ``spacing(text)``.

Word-level form used here: let ``M`` be the text with those replacements (no
padding). Then ``spacing(text) = " " + M + " "`` and its tokens between single
spaces, without the first and last (always empty) ones, are exactly
``M.split(" ")``. Entry ``e`` matches iff ``e.split(" ")`` occurs as a contiguous
run of those tokens. The tokens of ``M`` are read straight off the raw caption
bytes by :func:`next_token`, so the spaced text is never materialized: a
caption's bytes are classified 64 at a time into a bit mask of token ends,
which the per-token loop carries and reads with a bit scan.

A token-scan *state* is one int64: ``2 * p + w`` where ``p`` is a raw byte
position and ``w == 1`` means "the next token is the wrapped character at p".
``-1`` means there is no further token.
"""

from types import SimpleNamespace

import numpy as np

from . import draw, hashing, scan, sort, utf8, walk
from .consts import (  # noqa: F401 - the constants, as their importers know them
    BYTES_EVEN, FNV_OFFSET, FNV_PRIME, INSERTION_SORT_MAX, LEN_MASK, LOW32, MIX_GAMMA, MIX_M1,
    MIX_M2, PAIRS_EVEN, SHIFT8, SHIFT11, SHIFT32, SHIFT56, SPACE_MASK, TWO_POW_M53, WRAP_MASK)


def load8_bytes(buf, i):
    """buf[i:i + 8] as a little-endian uint64 (i + 8 <= buf.size), one byte
    at a time. Targets with unaligned 8-byte loads pass their own ``load8``
    to :func:`build` (``targets.cpu_load8``), giving the same value."""
    x = np.uint64(0)
    for k in range(8):
        x |= np.uint64(buf[i + k]) << np.uint64(8 * k)
    return x


def no_prefetch(arr, i):
    """Targets without a cache prefetch ignore the hint."""
    return None


def tzcnt_bits(m):
    """The index of the lowest set bit of a nonzero uint64 (a binary search:
    halves of 32, 16, ..., 1 bits)."""
    m = np.uint64(m)
    n = 0
    width = np.uint64(32)
    while width != 0:
        if (m & ((np.uint64(1) << width) - np.uint64(1))) == 0:
            n += np.int64(width)
            m >>= width
        width >>= np.uint64(1)
    return n


def build(jit, jit_inline=None, load8=None, masks=None, tzcnt=None, prefetch=None):
    """Compile every routine with ``jit`` and return them as a namespace.

    ``jit_inline`` (default ``jit``) compiles the few small routines of the
    per-token path that must be inlined into their callers (numba inlines them
    at its IR level on the CPU; NVVM on CUDA). The primitives a target may
    supply faster versions of, each giving the same values:

    * ``load8(buf, i)`` (default :func:`load8_bytes`): buf[i:i + 8] as a
      little-endian uint64;
    * ``masks(buf, q)``: the delimiter masks of buf[q:q + 64] (see
      ``delim_masks``) when q + 64 <= buf.size (default: none, the masks are
      built a byte at a time);
    * ``tzcnt(m)`` (default :func:`tzcnt_bits`): the index of the lowest set
      bit of a nonzero uint64;
    * ``prefetch(arr, i)`` (default :func:`no_prefetch`): a hint to fetch the
      cache line of arr[i].
    """
    if jit_inline is None:
        jit_inline = jit
    if load8 is None:
        load8 = jit_inline(load8_bytes)
    if tzcnt is None:
        tzcnt = jit_inline(tzcnt_bits)
    # A target that prefetches gets the walk that reads one token ahead (see
    # match_caption); the others read each token when they come to it.
    ahead = prefetch is not None
    if prefetch is None:
        prefetch = jit_inline(no_prefetch)

    R = SimpleNamespace(tzcnt=tzcnt)
    hashing.build(R, jit, jit_inline)
    scan.build(R, jit, jit_inline, load8, masks, tzcnt)
    walk.build(R, jit, jit_inline, prefetch, ahead)
    sort.build(R, jit, jit_inline)
    draw.build(R, jit, jit_inline)
    utf8.build(R, jit, jit_inline)
    return R
