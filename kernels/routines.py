"""The hot routines of gpucurate, written once and compiled per target.

Everything that decides a result lives here as plain Python, inside one factory
:func:`build`. ``build(jit)`` defines each routine in dependency order, wraps it
with ``jit`` and returns them in a namespace:

* ``build(cpu_jit)``: ``numba.njit`` for the CPU engine (``gpucurate.kernels.cpu``);
* ``build(device_jit)``: ``numba.cuda.jit(device=True)`` for the CUDA kernels
  (``gpucurate.kernels.cuda``);
* ``build(lambda f: f)``: the same code run by the Python interpreter, used by
  the tests to step through a routine.

Rules for code in this file (so that one source compiles for both targets):
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

# FNV-1a, 64 bit.
FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)

# splitmix64 finalizer constants.
MIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX_M1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_M2 = np.uint64(0x94D049BB133111EB)

# Byte classes of the spacing rule, as bit masks over byte values < 64.
# Class 1 (turned into a space): \t \n \r and the space itself.
SPACE_MASK = np.uint64((1 << 9) | (1 << 10) | (1 << 13) | (1 << 32))
# Class 2 (wrapped in spaces): , . ; : ? ! (and the backtick, 96, tested apart).
WRAP_MASK = np.uint64((1 << 44) | (1 << 46) | (1 << 59) | (1 << 58) | (1 << 63) | (1 << 33))

LOW32 = np.uint64(0xFFFFFFFF)
BYTES_EVEN = np.uint64(0x00FF00FF00FF00FF)
PAIRS_EVEN = np.uint64(0x0000FFFF0000FFFF)
SHIFT11 = np.uint64(11)
SHIFT32 = np.uint64(32)
SHIFT56 = np.uint64(56)
SHIFT8 = np.uint64(8)
LEN_MASK = np.uint64(0xFFFFFF)
TWO_POW_M53 = 1.0 / 9007199254740992.0

# A caption's list of ids is sorted by a 4-, 8- or 16-input sorting network up
# to 16 ids, by insertion up to INSERTION_SORT_MAX, else by heapsort.
INSERTION_SORT_MAX = 24


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

    # ------------------------------------------------------------------ hashing
    @jit
    def mix64(x):
        """splitmix64's finalizer (x += gamma first), over uint64."""
        x = np.uint64(x) + MIX_GAMMA
        x = (x ^ (x >> np.uint64(30))) * MIX_M1
        x = (x ^ (x >> np.uint64(27))) * MIX_M2
        return x ^ (x >> np.uint64(31))

    @jit
    def fnv1a_step(h, b):
        return (h ^ np.uint64(b)) * FNV_PRIME

    @jit_inline
    def fnv1a(buf, start, end):
        """64-bit FNV-1a over buf[start:end]."""
        h = FNV_OFFSET
        for i in range(start, end):
            h = fnv1a_step(h, buf[i])
        return h

    # ------------------------------------------------------------ spacing rule
    @jit
    def byte_class(b):
        """0: ordinary byte, 1: becomes a space, 2: wrapped in spaces."""
        if b < 64:
            bit = np.uint64(1) << np.uint64(b)
            if SPACE_MASK & bit:
                return 1
            if WRAP_MASK & bit:
                return 2
            return 0
        if b == 96:
            return 2
        return 0

    # ------------------------------------------------------------- the trie
    # A token's key: its last 16 bytes as a 16-byte shift register (lo, hi)
    # (byte k of an n-byte token at bits 8 * (n - 1 - k) of the pair, lo
    # holding the low 64 bits), its length n, and a 64-bit hash of all its
    # bytes. The hash only places a token in a table; a hit is confirmed on
    # the exact bytes (the register and n, and for n > 16 the first n - 16
    # bytes).
    @jit_inline
    def key_hash(lo, hi, n, buf, start):
        """The hash of an n-byte token buf[start:start + n] with key (lo, hi)."""
        x = lo ^ (hi * MIX_M2) ^ (np.uint64(n) * MIX_M1)
        if n > 16:
            x ^= fnv1a(buf, start, start + n - 16)
        return mix64(x)

    @jit
    def token_key(buf, start, stop):
        """(lo, hi, hash) of the token buf[start:stop]."""
        lo = np.uint64(0)
        hi = np.uint64(0)
        for k in range(start, stop):
            hi = (hi << SHIFT8) | (lo >> SHIFT56)
            lo = (lo << SHIFT8) | np.uint64(buf[k])
        return lo, hi, key_hash(lo, hi, stop - start, buf, start)

    @jit_inline
    def load8_safe(buf, i):
        """buf[i:i + 8] as a little-endian uint64, bytes past buf's end read
        as 0."""
        if i + 8 <= buf.size:
            return load8(buf, i)
        # Backwards, a shift per byte (a loop LLVM does not vectorize).
        x = np.uint64(0)
        k = buf.size - 1
        while k >= i:
            x = (x << np.uint64(8)) | np.uint64(buf[k])
            k -= 1
        return x

    @jit_inline
    def bswap64(x):
        x = ((x >> np.uint64(8)) & BYTES_EVEN) | ((x & BYTES_EVEN) << np.uint64(8))
        x = ((x >> np.uint64(16)) & PAIRS_EVEN) | ((x & PAIRS_EVEN) << np.uint64(16))
        return (x >> SHIFT32) | (x << SHIFT32)

    @jit_inline
    def key_regs(buf, p, n):
        """The key registers (lo, hi) of the n-byte token at buf[p:p + n]."""
        if n == 0:
            return np.uint64(0), np.uint64(0)
        if n <= 8:
            return bswap64(load8_safe(buf, p)) >> np.uint64(64 - 8 * n), np.uint64(0)
        lo = bswap64(load8(buf, p + n - 8))
        if n <= 16:
            return lo, bswap64(load8(buf, p)) >> np.uint64(128 - 8 * n)
        return lo, bswap64(load8(buf, p + n - 16))

    @jit_inline
    def delim_masks(buf, q, end):
        """(d, w): bit k of d set when buf[q + k] is of class 1 or 2, of w when
        it is of class 1, for k < 64 and q + k < end (bits at or past end are
        not defined). One byte at a time; targets with wide vector compares
        pass their own ``masks`` to :func:`build` (``targets.cpu_masks64``)."""
        d = np.uint64(0)
        w = np.uint64(0)
        k = min(end, q + 64) - 1
        while k >= q:
            c = byte_class(buf[k])
            d = (d << np.uint64(1)) | np.uint64(c != 0)
            w = (w << np.uint64(1)) | np.uint64(c == 1)
            k -= 1
        return d, w

    if masks is None:
        token_masks = delim_masks
    else:
        def token_masks_wide(buf, q, end):
            if q + 64 <= buf.size:
                return masks(buf, q)
            return delim_masks(buf, q, end)
        token_masks = jit(token_masks_wide)

    def next_token_py(buf, state, end, mpos, d, w):
        """Read the token at ``state`` of the caption ending at ``end``.

        (mpos, d, w) carry the delimiter masks of buf[mpos:mpos + 64] (see
        :func:`delim_masks`) from one token to the next, so a caption's bytes
        are classified once, not once per token; ``mpos <= (state >> 1) - 64``
        makes the routine load them. Returns ``(start, stop, next_state, lo,
        hi, hash, mpos, d, w)``: the token is ``buf[start:stop]`` (possibly
        empty), ``next_state`` the state of the following token or -1, and
        (lo, hi, hash) its key as :func:`token_key` gives it.
        """
        p = state >> 1
        if state & 1:
            lo = np.uint64(buf[p])
            return (p, p + 1, (p + 1) << 1, lo, np.uint64(0),
                    key_hash(lo, np.uint64(0), 1, buf, p), mpos, d, w)
        # The first byte of class 1 or 2 at or after p: a bit scan of the
        # carried mask, a new mask each 64 bytes.
        q = p
        while True:
            r = q - mpos
            if r < 64:
                m = d >> np.uint64(r)
                if m != 0:
                    q += np.int64(tzcnt(m))
                    break
                q = mpos + 64
            if q >= end:
                break
            mpos = q
            d, w = token_masks(buf, q, end)
        if q >= end:
            q = end
            nxt = -1
        else:  # a space: the next token starts after it; else it is one
            nxt = 2 * q + 1 + np.int64((w >> np.uint64(q - mpos)) & np.uint64(1))
        lo, hi = key_regs(buf, p, q - p)
        return p, q, nxt, lo, hi, key_hash(lo, hi, q - p, buf, p), mpos, d, w

    # Two compilations of one routine: match_caption inlines next_token_hot
    # (its per-token loop and the rare deeper walks, each carrying masks), so
    # that no call in the loop clobbers the registers the scan keeps its
    # constants in; next_token and scan_token are the called forms.
    next_token_hot = jit_inline(next_token_py)
    next_token = jit(next_token_py)

    @jit
    def scan_token(buf, state, end):
        """The token at ``state``: ``(start, stop, next_state, lo, hi, hash)``
        as :func:`next_token` gives them, masks loaded afresh."""
        a, b, nxt, lo, hi, h, mpos, d, w = next_token(
            buf, state, end, (state >> 1) - 64, np.uint64(0), np.uint64(0))
        return a, b, nxt, lo, hi, h

    # Vocabulary table: ``vn`` slots, open addressing with linear probing from
    # slot ((hash & 0xFFFFFFFF) * vn) >> 32. ``vtag[i]`` is the tag (see
    # hash_tag) of the token in slot i, 0 when empty, so that probes read one
    # byte per slot; ``vrec[4 * i:]`` is its record of 4 words:
    #   word 0, 1: the token's key (lo, hi);
    #   word 2:    (token id + 1) | length << 32 | lg << 56   (0: empty slot);
    #   word 3:    term | base << 32, the depth-1 node of the token.
    # A node is (term, base, lg): its entries (``term``: 0 none, odd: the one
    # entry id term >> 1, even: a list tlist[i] = count, tlist[i + 1:...] with
    # i = (term >> 1) - 1) and its children, a table of 2**lg slots from slot
    # ``base`` (lg == 0: no children), probed linearly from (hash >> 32) &
    # (2**lg - 1). Slot i has the tag ctag[i] of its token (0: empty) and the
    # record crec[2 * i:] of 2 words below. Before the table, a node's filter
    # is read: bits 4 * base + ((hash >> 32) & (4 * 2**lg - 1)) of ``cbits``
    # (bit k is bit k & 7 of byte k >> 3) are set for the node's children.
    #   word 0: (token id + 1) | lg << 56 of the child (0: empty slot);
    #   word 1: term | base << 32 of the child.
    @jit
    def hash_tag(h):
        """The 8-bit tag (1..255) of a token hash: bits 56..63, 0 read as 1."""
        g = h >> SHIFT56
        if g == 0:
            g = np.uint64(1)
        return np.uint8(g)

    @jit_inline
    def vocab_slot(h, vn):
        """The home slot, among ``vn``, of the token with hash ``h``."""
        return ((h & LOW32) * vn) >> SHIFT32

    @jit_inline
    def filter_bit(base, lg, h):
        """The bit of ``cbits`` that the child with hash ``h`` sets in the
        filter of the node whose children table is (base, lg)."""
        return base * np.uint64(4) + ((h >> SHIFT32) & ((np.uint64(4) << lg) - np.uint64(1)))

    @jit
    def lookup_token(buf, start, stop, lo, hi, h, vtag, vrec, vn, voff, vbytes):
        """Record index in vrec of the token buf[start:stop] with key
        (lo, hi, h), or -1 when it is no entry's token."""
        # Indices are unsigned where they can be: numba then emits no
        # negative-index wraparound.
        n = stop - start
        ln = np.uint64(n)
        g = hash_tag(h)
        i = vocab_slot(h, vn)
        while True:
            t = vtag[i]
            if t == 0:
                return -1
            if t == g:
                r = i * np.uint64(4)
                x = vrec[r + np.uint64(2)]
                if vrec[r] == lo and ((x >> SHIFT32) & LEN_MASK) == ln and \
                        vrec[r + np.uint64(1)] == hi:
                    if n <= 16:
                        return np.int64(i)
                    a = np.uint64(voff[(x & LOW32) - np.uint64(1)])
                    m = ln - np.uint64(16)
                    k = np.uint64(0)
                    while k < m and vbytes[a + k] == buf[np.uint64(start) + k]:
                        k += np.uint64(1)
                    if k == m:
                        return np.int64(i)
            i += np.uint64(1)
            if i == vn:
                i = np.uint64(0)

    @jit
    def child_slot(base, lg, tidp, h, cbits, ctag, crec):
        """Index in crec of the child along token id ``tidp - 1`` of the node
        whose table is (base, lg), or -1. ``h`` is the token's hash."""
        k = filter_bit(base, lg, h)
        if (cbits[k >> np.uint64(3)] >> np.uint8(k & np.uint64(7))) & np.uint8(1) == 0:
            return -1
        mask = (np.uint64(1) << lg) - np.uint64(1)
        g = hash_tag(h)
        j = (h >> SHIFT32) & mask
        while True:
            i = base + j
            t = ctag[i]
            if t == 0:
                return -1
            if t == g and (crec[i * np.uint64(2)] & LOW32) == tidp:
                return np.int64(i * np.uint64(2))
            j = (j + np.uint64(1)) & mask

    @jit
    def emit(term, tlist, out, n, cap):
        """Append the entry ids of a node's ``term`` to out[n:cap]; return the
        new n. Ids past ``cap`` are counted, not written."""
        if term == 0:
            return n
        if term & np.uint64(1):
            if n < cap:
                out[n] = np.int32(term >> np.uint64(1))
            return n + 1
        # A node where several entries end: its list in tlist, copied up to
        # cap. Unsigned indices: with numba's negative-index wraparound LLVM
        # vectorized this copy into gathers and scatters whose constants every
        # call of the walk paid for.
        i = (term >> np.uint64(1)) - np.uint64(1)
        count = np.int64(tlist[i])
        k = 0
        while k < count and n < cap:
            out[np.uint64(n)] = tlist[i + np.uint64(1 + k)]
            n += 1
            k += 1
        return n + (count - k)

    @jit
    def match_caption(buf, start, end, vtag, vrec, vn, voff, vbytes, cbits, ctag, crec,
                      tlist, out, n, cap):
        """Every (not yet distinct) entry id matching caption buf[start:end].

        Walks the trie from each token of the caption. Writes ids into
        out[n:cap] and returns n plus the number of ids found, so a call with
        ``cap == n`` only counts.
        """
        mpos = start - 64
        d = np.uint64(0)
        w = np.uint64(0)
        a, b, nxt, lo, hi, h, mpos, d, w = next_token_hot(buf, start << 1, end, mpos, d, w)
        # Each token is read and looked up once. The walks from every start
        # advance together to depth 2: (plg, pbase) is the children table of
        # the previous token's depth-1 node (plg == 0: none), probed with the
        # current token. Deeper walks (rare) read the following tokens again.
        # Where the target prefetches (``ahead``: the CPU), the following token
        # is read one step ahead and the table lines its lookup and its probe's
        # filter will read are prefetched (+3-6% on one CPU thread); elsewhere
        # (CUDA) it is read after this one, which keeps fewer registers live.
        plg = np.uint64(0)
        pbase = np.uint64(0)
        while True:
            cpos = mpos
            cd = d
            cw = w
            na = end
            nb = end
            nn = -1
            nlo = np.uint64(0)
            nhi = np.uint64(0)
            nh = np.uint64(0)
            if ahead and nxt >= 0:
                na, nb, nn, nlo, nhi, nh, mpos, d, w = next_token_hot(buf, nxt, end, mpos, d, w)
                ni = vocab_slot(nh, vn)
                prefetch(vtag, ni)
                prefetch(vrec, ni * np.uint64(4))
            r = lookup_token(buf, a, b, lo, hi, h, vtag, vrec, vn, voff, vbytes)
            x = np.uint64(0)
            y = np.uint64(0)
            if r >= 0:
                ru = np.uint64(r) * np.uint64(4)
                x = vrec[ru + np.uint64(2)]
                y = vrec[ru + np.uint64(3)]
                if plg != 0:
                    c = child_slot(pbase, plg, x & LOW32, h, cbits, ctag, crec)
                    if c >= 0:
                        cu = np.uint64(c)
                        cx = crec[cu]
                        cy = crec[cu + np.uint64(1)]
                        n = emit(cy & LOW32, tlist, out, n, cap)
                        lg = cx >> SHIFT56
                        t = nxt
                        while lg != 0 and t >= 0:
                            a, b, t2, lo, hi, h2, cpos, cd, cw = next_token_hot(buf, t, end, cpos,
                                                                                cd, cw)
                            r2 = lookup_token(buf, a, b, lo, hi, h2, vtag, vrec, vn, voff,
                                              vbytes)
                            if r2 < 0:
                                break
                            c = child_slot(cy >> SHIFT32, lg,
                                           vrec[np.uint64(r2) * np.uint64(4) + np.uint64(2)]
                                           & LOW32, h2, cbits, ctag, crec)
                            if c < 0:
                                break
                            cu = np.uint64(c)
                            cx = crec[cu]
                            cy = crec[cu + np.uint64(1)]
                            n = emit(cy & LOW32, tlist, out, n, cap)
                            lg = cx >> SHIFT56
                            t = t2
                n = emit(y & LOW32, tlist, out, n, cap)
            if nxt < 0:
                break
            plg = x >> SHIFT56
            pbase = y >> SHIFT32
            if not ahead:
                na, nb, nn, nlo, nhi, nh, mpos, d, w = next_token_hot(buf, nxt, end, mpos, d, w)
            elif plg != 0:
                prefetch(cbits, filter_bit(pbase, plg, nh) >> np.uint64(3))
            a = na
            b = nb
            nxt = nn
            lo = nlo
            hi = nhi
            h = nh
        return n

    # ------------------------------------------------ per-caption id lists
    @jit
    def sift_down(a, lo, root, count):
        while True:
            c = 2 * root + 1
            if c >= count:
                return
            if c + 1 < count and a[lo + c] < a[lo + c + 1]:
                c += 1
            if a[lo + root] >= a[lo + c]:
                return
            t = a[lo + root]
            a[lo + root] = a[lo + c]
            a[lo + c] = t
            root = c

    @jit
    def cx(x, y):
        """Compare-exchange: (min, max)."""
        return min(x, y), max(x, y)

    @jit
    def sort_net4(a, lo, hi):
        """Sort a[lo:hi] ascending in place and drop repeats, 1 < hi - lo <= 4;
        return the new hi. A sorting network over 4 values held in registers
        (Batcher's odd-even merge sort); the missing ones repeat a[hi - 1], so
        loads, stores and repeats need no branch."""
        # Unsigned indices: no negative-index wraparound code.
        u = np.uint64(lo)
        last = np.uint64(hi - 1)
        v0 = a[min(u + np.uint64(0), last)]
        v1 = a[min(u + np.uint64(1), last)]
        v2 = a[min(u + np.uint64(2), last)]
        v3 = a[min(u + np.uint64(3), last)]
        v0, v1 = cx(v0, v1)
        v2, v3 = cx(v2, v3)
        v0, v2 = cx(v0, v2)
        v1, v3 = cx(v1, v3)
        v1, v2 = cx(v1, v2)
        w = u
        a[w] = v0
        w += np.uint64(v1 != v0)
        a[w] = v1
        w += np.uint64(v2 != v1)
        a[w] = v2
        w += np.uint64(v3 != v2)
        a[w] = v3
        return np.int64(w) + 1

    @jit
    def sort_net8(a, lo, hi):
        """Sort a[lo:hi] ascending in place and drop repeats, 1 < hi - lo <= 8;
        return the new hi. A sorting network over 8 values held in registers
        (Batcher's odd-even merge sort); the missing ones repeat a[hi - 1], so
        loads, stores and repeats need no branch."""
        # Unsigned indices: no negative-index wraparound code.
        u = np.uint64(lo)
        last = np.uint64(hi - 1)
        v0 = a[min(u + np.uint64(0), last)]
        v1 = a[min(u + np.uint64(1), last)]
        v2 = a[min(u + np.uint64(2), last)]
        v3 = a[min(u + np.uint64(3), last)]
        v4 = a[min(u + np.uint64(4), last)]
        v5 = a[min(u + np.uint64(5), last)]
        v6 = a[min(u + np.uint64(6), last)]
        v7 = a[min(u + np.uint64(7), last)]
        v0, v1 = cx(v0, v1)
        v2, v3 = cx(v2, v3)
        v4, v5 = cx(v4, v5)
        v6, v7 = cx(v6, v7)
        v0, v2 = cx(v0, v2)
        v1, v3 = cx(v1, v3)
        v4, v6 = cx(v4, v6)
        v5, v7 = cx(v5, v7)
        v1, v2 = cx(v1, v2)
        v5, v6 = cx(v5, v6)
        v0, v4 = cx(v0, v4)
        v1, v5 = cx(v1, v5)
        v2, v6 = cx(v2, v6)
        v3, v7 = cx(v3, v7)
        v2, v4 = cx(v2, v4)
        v3, v5 = cx(v3, v5)
        v1, v2 = cx(v1, v2)
        v3, v4 = cx(v3, v4)
        v5, v6 = cx(v5, v6)
        w = u
        a[w] = v0
        w += np.uint64(v1 != v0)
        a[w] = v1
        w += np.uint64(v2 != v1)
        a[w] = v2
        w += np.uint64(v3 != v2)
        a[w] = v3
        w += np.uint64(v4 != v3)
        a[w] = v4
        w += np.uint64(v5 != v4)
        a[w] = v5
        w += np.uint64(v6 != v5)
        a[w] = v6
        w += np.uint64(v7 != v6)
        a[w] = v7
        return np.int64(w) + 1

    @jit
    def sort_net16(a, lo, hi):
        """Sort a[lo:hi] ascending in place and drop repeats, 1 < hi - lo <= 16;
        return the new hi. A sorting network over 16 values held in registers
        (Batcher's odd-even merge sort); the missing ones repeat a[hi - 1], so
        loads, stores and repeats need no branch."""
        # Unsigned indices: no negative-index wraparound code.
        u = np.uint64(lo)
        last = np.uint64(hi - 1)
        v0 = a[min(u + np.uint64(0), last)]
        v1 = a[min(u + np.uint64(1), last)]
        v2 = a[min(u + np.uint64(2), last)]
        v3 = a[min(u + np.uint64(3), last)]
        v4 = a[min(u + np.uint64(4), last)]
        v5 = a[min(u + np.uint64(5), last)]
        v6 = a[min(u + np.uint64(6), last)]
        v7 = a[min(u + np.uint64(7), last)]
        v8 = a[min(u + np.uint64(8), last)]
        v9 = a[min(u + np.uint64(9), last)]
        v10 = a[min(u + np.uint64(10), last)]
        v11 = a[min(u + np.uint64(11), last)]
        v12 = a[min(u + np.uint64(12), last)]
        v13 = a[min(u + np.uint64(13), last)]
        v14 = a[min(u + np.uint64(14), last)]
        v15 = a[min(u + np.uint64(15), last)]
        v0, v1 = cx(v0, v1)
        v2, v3 = cx(v2, v3)
        v4, v5 = cx(v4, v5)
        v6, v7 = cx(v6, v7)
        v8, v9 = cx(v8, v9)
        v10, v11 = cx(v10, v11)
        v12, v13 = cx(v12, v13)
        v14, v15 = cx(v14, v15)
        v0, v2 = cx(v0, v2)
        v1, v3 = cx(v1, v3)
        v4, v6 = cx(v4, v6)
        v5, v7 = cx(v5, v7)
        v8, v10 = cx(v8, v10)
        v9, v11 = cx(v9, v11)
        v12, v14 = cx(v12, v14)
        v13, v15 = cx(v13, v15)
        v1, v2 = cx(v1, v2)
        v5, v6 = cx(v5, v6)
        v9, v10 = cx(v9, v10)
        v13, v14 = cx(v13, v14)
        v0, v4 = cx(v0, v4)
        v1, v5 = cx(v1, v5)
        v2, v6 = cx(v2, v6)
        v3, v7 = cx(v3, v7)
        v8, v12 = cx(v8, v12)
        v9, v13 = cx(v9, v13)
        v10, v14 = cx(v10, v14)
        v11, v15 = cx(v11, v15)
        v2, v4 = cx(v2, v4)
        v3, v5 = cx(v3, v5)
        v10, v12 = cx(v10, v12)
        v11, v13 = cx(v11, v13)
        v1, v2 = cx(v1, v2)
        v3, v4 = cx(v3, v4)
        v5, v6 = cx(v5, v6)
        v9, v10 = cx(v9, v10)
        v11, v12 = cx(v11, v12)
        v13, v14 = cx(v13, v14)
        v0, v8 = cx(v0, v8)
        v1, v9 = cx(v1, v9)
        v2, v10 = cx(v2, v10)
        v3, v11 = cx(v3, v11)
        v4, v12 = cx(v4, v12)
        v5, v13 = cx(v5, v13)
        v6, v14 = cx(v6, v14)
        v7, v15 = cx(v7, v15)
        v4, v8 = cx(v4, v8)
        v5, v9 = cx(v5, v9)
        v6, v10 = cx(v6, v10)
        v7, v11 = cx(v7, v11)
        v2, v4 = cx(v2, v4)
        v3, v5 = cx(v3, v5)
        v6, v8 = cx(v6, v8)
        v7, v9 = cx(v7, v9)
        v10, v12 = cx(v10, v12)
        v11, v13 = cx(v11, v13)
        v1, v2 = cx(v1, v2)
        v3, v4 = cx(v3, v4)
        v5, v6 = cx(v5, v6)
        v7, v8 = cx(v7, v8)
        v9, v10 = cx(v9, v10)
        v11, v12 = cx(v11, v12)
        v13, v14 = cx(v13, v14)
        w = u
        a[w] = v0
        w += np.uint64(v1 != v0)
        a[w] = v1
        w += np.uint64(v2 != v1)
        a[w] = v2
        w += np.uint64(v3 != v2)
        a[w] = v3
        w += np.uint64(v4 != v3)
        a[w] = v4
        w += np.uint64(v5 != v4)
        a[w] = v5
        w += np.uint64(v6 != v5)
        a[w] = v6
        w += np.uint64(v7 != v6)
        a[w] = v7
        w += np.uint64(v8 != v7)
        a[w] = v8
        w += np.uint64(v9 != v8)
        a[w] = v9
        w += np.uint64(v10 != v9)
        a[w] = v10
        w += np.uint64(v11 != v10)
        a[w] = v11
        w += np.uint64(v12 != v11)
        a[w] = v12
        w += np.uint64(v13 != v12)
        a[w] = v13
        w += np.uint64(v14 != v13)
        a[w] = v14
        w += np.uint64(v15 != v14)
        a[w] = v15
        return np.int64(w) + 1

    @jit
    def sort_unique(a, lo, hi):
        """Sort a[lo:hi] ascending in place, drop repeats; return the new hi."""
        count = hi - lo
        if count <= 1:
            return hi
        if count <= 4:
            return sort_net4(a, lo, hi)
        if count <= 8:
            return sort_net8(a, lo, hi)
        if count <= 16:
            return sort_net16(a, lo, hi)
        if count <= INSERTION_SORT_MAX:
            # Insertion without data-dependent branches: carry the smaller
            # value down the sorted prefix, writing the larger one back.
            for i in range(lo + 1, hi):
                v = a[i]
                j = i
                while j > lo:
                    x = a[j - 1]
                    a[j] = x if x > v else v
                    v = v if x > v else x
                    j -= 1
                a[lo] = v
        else:
            for r in range(count // 2 - 1, -1, -1):
                sift_down(a, lo, r, count)
            for end in range(count - 1, 0, -1):
                t = a[lo]
                a[lo] = a[lo + end]
                a[lo + end] = t
                sift_down(a, lo, 0, end)
        w = lo + 1
        for i in range(lo + 1, hi):
            v = a[i]
            a[w] = v
            w += np.int64(v != a[w - 1])
        return w

    # ------------------------------------------------------------- balancing
    @jit
    def key_mix(seed, key):
        """mix(mix(seed) ^ key): the per-caption part of the pinned draw."""
        return mix64(mix64(np.uint64(seed)) ^ np.uint64(key))

    @jit
    def draw(kmix, entry):
        """u = (mix(kmix ^ entry) >> 11) * 2**-53, uniform in [0, 1)."""
        return np.float64(mix64(kmix ^ np.uint64(entry)) >> SHIFT11) * TWO_POW_M53

    @jit
    def keep_caption(ids, lo, hi, prob, kmix):
        """1 when some entry e of ids[lo:hi] draws u < prob[e], else 0."""
        for i in range(lo, hi):
            e = ids[i]
            if draw(kmix, e) < prob[e]:
                return 1
        return 0

    # ------------------------------------------------------------ input check
    @jit
    def utf8_invalid(buf, p, end):
        """1 when buf[p:end] is not well-formed UTF-8 (RFC 3629: no overlongs,
        no surrogates, nothing above U+10FFFF, no truncated sequence), else 0."""
        while p < end:
            b = buf[p]
            if b < 0x80:
                p += 1
                continue
            if 0xC2 <= b <= 0xDF:
                n = 1
                lo, hi = 0x80, 0xBF
            elif 0xE0 <= b <= 0xEF:
                n = 2
                lo = 0xA0 if b == 0xE0 else 0x80
                hi = 0x9F if b == 0xED else 0xBF
            elif 0xF0 <= b <= 0xF4:
                n = 3
                lo = 0x90 if b == 0xF0 else 0x80
                hi = 0x8F if b == 0xF4 else 0xBF
            else:
                return 1
            if p + n >= end:
                return 1
            c = buf[p + 1]
            if c < lo or c > hi:
                return 1
            for k in range(2, n + 1):
                c = buf[p + k]
                if c < 0x80 or c > 0xBF:
                    return 1
            p += n + 1
        return 0

    return SimpleNamespace(
        utf8_invalid=utf8_invalid, mix64=mix64, fnv1a_step=fnv1a_step, fnv1a=fnv1a, byte_class=byte_class,
        key_hash=key_hash, token_key=token_key, scan_token=scan_token, next_token=next_token,
        delim_masks=delim_masks, token_masks=token_masks, tzcnt=tzcnt, hash_tag=hash_tag,
        vocab_slot=vocab_slot, filter_bit=filter_bit, lookup_token=lookup_token,
        child_slot=child_slot, emit=emit,
        match_caption=match_caption, sift_down=sift_down, cx=cx, sort_net4=sort_net4,
        sort_net8=sort_net8, sort_net16=sort_net16,
        sort_unique=sort_unique, key_mix=key_mix, draw=draw, keep_caption=keep_caption,
    )
