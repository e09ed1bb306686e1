"""Sample keys for the pinned draw, on the CPU (arrays only).

* integer key: its uint64 two's-complement value (done by a NumPy view);
* string key: 64-bit FNV-1a over its UTF-8 bytes (``hash_rows``);
* no key column: ``mix(fnv1a(shard name) ^ row index)`` (``row_keys``).
"""

import numba
import numpy as np

from .routines import build
from .targets import cpu_jit

R = build(cpu_jit)
fnv1a, mix64, key_mix = R.fnv1a, R.mix64, R.key_mix


@numba.njit(cache=True, nogil=True)
def hash_rows(data, offsets, out):
    """out[i] = FNV-1a of data[offsets[i]:offsets[i+1]]."""
    for i in range(offsets.size - 1):
        out[i] = fnv1a(data, offsets[i], offsets[i + 1])


@numba.njit(cache=True, nogil=True)
def row_keys(name_hash, first_row, out):
    """out[j] = mix(name_hash ^ (first_row + j))."""
    for j in range(out.size):
        out[j] = mix64(np.uint64(name_hash) ^ np.uint64(first_row + j))


@numba.njit(cache=True)
def choice_values(seed, groups, keys, out):
    """out[i] = mix(mix(mix(seed) ^ groups[i]) ^ mix(keys[i])): picks a group's caption."""
    for i in range(out.size):
        out[i] = mix64(key_mix(seed, groups[i]) ^ mix64(keys[i]))
