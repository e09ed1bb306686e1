"""The token scan: the spacing rule's byte classes and the tokens of a caption
read off its raw bytes (see ``routines`` for the word-level form of the rule);
one source for every target, composed by ``routines.build``."""

import numpy as np

from .consts import BYTES_EVEN, PAIRS_EVEN, SHIFT32, SPACE_MASK, WRAP_MASK


def build(R, jit, jit_inline, load8, masks, tzcnt):
    """The token-scan routines, compiled with ``jit`` (or ``jit_inline``), into ``R``."""
    key_hash = R.key_hash

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

    R.__dict__.update(
        byte_class=byte_class, load8_safe=load8_safe, bswap64=bswap64, key_regs=key_regs,
        delim_masks=delim_masks, token_masks=token_masks, next_token_hot=next_token_hot,
        next_token=next_token, scan_token=scan_token)
