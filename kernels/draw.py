"""Balancing: the pinned per-(caption, entry) draw and the keep decision; one
source for every target, composed by ``routines.build``."""

import numpy as np

from .consts import SHIFT11, TWO_POW_M53


def build(R, jit, jit_inline):
    """The balancing routines, compiled with ``jit`` (or ``jit_inline``), into ``R``."""
    mix64 = R.mix64

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

    R.__dict__.update(
        key_mix=key_mix, draw=draw, keep_caption=keep_caption)
