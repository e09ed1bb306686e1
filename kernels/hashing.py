"""Hashing: splitmix64's finalizer, FNV-1a, and a token's key and hash; one
source for every target, composed by ``routines.build``."""

import numpy as np

from .consts import FNV_OFFSET, FNV_PRIME, MIX_GAMMA, MIX_M1, MIX_M2, SHIFT56, SHIFT8


def build(R, jit, jit_inline):
    """The hashing routines, compiled with ``jit`` (or ``jit_inline``), into ``R``."""

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

    R.__dict__.update(
        mix64=mix64, fnv1a_step=fnv1a_step, fnv1a=fnv1a, key_hash=key_hash,
        token_key=token_key)
