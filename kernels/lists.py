"""Per-caption entry lists on the CPU (arrays only): pass 2's inverted index
turned into CSR, and the kept captions' lists gathered, each in one pass.

* ``csr_of_rows``: (text id, entry id) pairs in ascending text-id order, all
  of rows ``first .. first + n - 1``, as CSR offsets (the entry ids are already
  in row order);
* ``kept_lists``: the lists of the kept captions as new CSR arrays, each of
  their entries counted.
"""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def csr_of_rows(text_ids, first, n, off):
    """Fill ``off`` (n + 1) with the CSR offsets of the pairs' rows; False
    (``off`` undefined) when a text id falls outside the rows or the ids do
    not ascend, for the caller's general path."""
    for i in range(n + 1):
        off[i] = 0
    prev = np.int64(-1)
    for q in range(text_ids.size):
        r = np.int64(text_ids[q]) - first
        if r < 0 or r < prev or r >= n:
            return False
        off[r + 1] += 1
        prev = r
    for i in range(n):
        off[i + 1] += off[i]
    return True


@numba.njit(cache=True, nogil=True)
def kept_lists(off, ids, keep, counts):
    """(offsets int32, ids int32) of the lists of the captions where ``keep``
    holds, in row order; ``counts[e] += 1`` for each of their entries."""
    m = 0
    total = 0
    for i in range(keep.size):
        if keep[i]:
            m += 1
            total += off[i + 1] - off[i]
    k_off = np.empty(m + 1, np.int32)
    k_ids = np.empty(total, np.int32)
    k_off[0] = 0
    j = 0
    p = 0
    for i in range(keep.size):
        if keep[i]:
            for q in range(off[i], off[i + 1]):
                e = ids[q]
                k_ids[p] = e
                counts[e] += 1
                p += 1
            j += 1
            k_off[j] = p
    return k_off, k_ids
