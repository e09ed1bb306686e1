"""A caption's id list sorted and made distinct in place; one source for every
target, composed by ``routines.build``."""

import numpy as np

from .consts import INSERTION_SORT_MAX


def build(R, jit, jit_inline):
    """The id-list routines, compiled with ``jit`` (or ``jit_inline``), into ``R``."""

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

    R.__dict__.update(
        sift_down=sift_down, cx=cx, sort_net4=sort_net4, sort_net8=sort_net8,
        sort_net16=sort_net16, sort_unique=sort_unique)
