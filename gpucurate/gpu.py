"""The CUDA engine: host side of the kernels in ``gpucurate.kernels.cuda``.

Imported only when a GPU path is chosen. Device memory comes from RMM when the
``rmm`` package is installed (one pool shared by cuDF, CuPy and Numba), else
from CuPy's and Numba's own allocators. Under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, tests only) the same host code runs with NumPy in
place of CuPy.

Synchronisation points (each marked "sync" below): reading the total number of
matches after each scan, to size the next allocation, and copying results back
to the host. Everything else is queued on the default stream.
"""

from __future__ import annotations

import os

import numpy as np

from .columns import TextBuffers
from .log import logger

_rmm_done = False


def setup_rmm() -> bool:
    """Route CuPy and Numba allocations through RMM when it is installed.

    Must run before the first CUDA context is made (GpuEngine does it first).
    ``GPUCURATE_RMM_POOL=0`` keeps RMM's plain allocator instead of a pool.
    """
    global _rmm_done
    if _rmm_done:
        return True
    try:
        import rmm
        from rmm.allocators.cupy import rmm_cupy_allocator
        from rmm.allocators.numba import RMMNumbaManager
    except ImportError:
        return False
    import cupy
    from numba import cuda

    rmm.reinitialize(pool_allocator=os.environ.get("GPUCURATE_RMM_POOL", "1") != "0")
    cupy.cuda.set_allocator(rmm_cupy_allocator)
    cuda.set_memory_manager(RMMNumbaManager)
    _rmm_done = True
    return True


def simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


class GpuEngine:
    """Matching, counting and balancing on one GPU; the trie is uploaded once."""

    name = "gpu"

    def __init__(self, tables, block: int | None = None, max_blocks: int | None = None,
                 by_length: bool = True, slots: int = 32):
        from numba import cuda

        if simulated():
            self.xp = np
            self.rmm = False
        else:
            self.rmm = setup_rmm()
            import cupy

            self.xp = cupy
        from .kernels import cuda as kc

        self.k = kc
        self.cuda = cuda
        self.block = block or (16 if simulated() else 256)
        self.max_blocks = max_blocks or (4 if simulated() else 132 * 64)
        self.tables = tables

        def upload(x):
            if isinstance(x, tuple):
                return tuple(upload(y) for y in x)
            return cuda.to_device(x) if isinstance(x, np.ndarray) else x

        # Upload once: every array of the tries as a device array, scalars as they are.
        self.d_tables = upload(tables.args())
        self._scratch = self.xp.zeros(1, np.int32)
        self._no_order = self.xp.zeros(0, np.int64)
        self.by_length = by_length
        self.slots = int(slots)
        logger.info("tries uploaded to the GPU (%.1f MB)%s", tables.nbytes / 1e6,
                    ", memory from RMM" if self.rmm else "")

    # -------------------------------------------------------------- helpers
    def _grid(self, n: int) -> tuple[int, int]:
        return max(1, min(-(-n // self.block), self.max_blocks)), self.block

    def to_device(self, a):
        return self.xp.asarray(a)

    def to_host(self, a) -> np.ndarray:
        return a if self.xp is np else self.xp.asnumpy(a)

    def _scan(self, counts):
        """Exclusive scan: (offsets of n + 1, total). Reading the total syncs."""
        off = self.xp.zeros(counts.size + 1, np.int64)
        if counts.size:
            self.xp.cumsum(counts, out=off[1:])
        return off, int(off[-1])  # sync

    # ------------------------------------------------------------- matching
    def match_device(self, data, offsets, valid, marks: list | None = None,
                     by_length: bool | None = None, slots: int | None = None):
        """Device CSR (offsets int64, ids int32) of device-resident captions.

        ``by_length`` (default: the engine's, True) launches the captions
        sorted by byte length, so that a warp's threads walk captions of
        similar length. ``slots`` (default: the engine's) is the number of ids
        each caption may keep in its own slots during the one walk; 0 walks
        every caption twice (count, then fill) and needs no slots. Results are
        the same whatever the two (bench/README.md has their timings).
        ``marks``, when a list, receives ``(stage, event)`` after each stage
        (CUDA events; host clocks under the simulator), for ``stage_seconds``.
        """
        k, xp = self.k, self.xp
        n = int(valid.size)
        if n == 0:
            return xp.zeros(1, np.int64), xp.zeros(0, np.int32)
        slots = self.slots if slots is None else slots
        mark = self._marker(marks)
        mark("start")
        grid = self._grid(n)
        if self.by_length if by_length is None else by_length:
            # 16-bit keys (lengths past 65535 bytes tie): a two-pass radix sort
            lens = xp.minimum(offsets[1:] - offsets[:-1], 65535).astype(np.uint16)
            order = xp.argsort(lens).astype(np.int64, copy=False)
            mark("order")
        else:
            order = self._no_order
        distinct = xp.empty(n, np.int64)
        raw = xp.empty(n, np.int64)
        if slots > 0:
            box = xp.empty(n * slots, np.int32)
            k.match_slots[grid](data, offsets, valid, order, self.d_tables, box, slots, raw,
                                distinct)
            mark("match_slots")
            over = raw > slots
            n_over = int(xp.count_nonzero(over))  # sync
            if n_over:  # walk these again, with room for every id
                rows = xp.nonzero(over)[0].astype(np.int64, copy=False)
                raw_off, total = self._scan(xp.where(over, raw, 0))
                out = xp.empty(max(total, 1), np.int32)
                k.fill_matches[self._grid(n_over)](data, offsets, valid, rows, self.d_tables,
                                                   raw_off, out, distinct)
            else:
                raw_off, out = self._no_order, self._scratch
            mark("overflow")
            final_off, total = self._scan(distinct)
            mark("scan_distinct")
            ids = xp.empty(total, np.int32)
            if total:
                k.compact_slots[grid](box, slots, raw, out, raw_off, final_off, ids)
            mark("compact")
            return final_off, ids
        k.count_matches[grid](data, offsets, valid, order, self.d_tables, self._scratch, raw)
        mark("count_matches")
        raw_off, total = self._scan(raw)
        mark("scan")
        out = xp.empty(max(total, 1), np.int32)
        k.fill_matches[grid](data, offsets, valid, order, self.d_tables, raw_off, out, distinct)
        mark("fill_matches")
        final_off, total = self._scan(distinct)
        mark("scan_distinct")
        ids = xp.empty(total, np.int32)
        if total:
            k.compact[grid](out, raw_off, final_off, ids)
        mark("compact")
        return final_off, ids

    def _marker(self, marks):
        if marks is None:
            return lambda stage: None
        if self.xp is np:
            import time

            return lambda stage: marks.append((stage, time.perf_counter()))

        def mark(stage):
            ev = self.xp.cuda.Event()
            ev.record()
            marks.append((stage, ev))
        return mark

    def stage_seconds(self, marks: list) -> dict:
        """Seconds between consecutive marks of ``match_device`` (syncs)."""
        if self.xp is not np and marks:
            marks[-1][1].synchronize()
        out = {}
        for (_, a), (stage, b) in zip(marks, marks[1:]):
            out[stage] = (b - a) if self.xp is np else \
                self.xp.cuda.get_elapsed_time(a, b) / 1e3
        return out

    def upload(self, tb: TextBuffers):
        """Copy host Arrow-layout buffers to the device (only the rows' bytes)."""
        lo, hi = int(tb.offsets[0]), int(tb.offsets[-1])
        data = tb.data[lo:hi] if hi > lo else np.zeros(1, np.uint8)
        return (self.to_device(data), self.to_device(tb.offsets - lo), self.to_device(tb.valid))

    def match_native(self, tb: TextBuffers):
        """Device CSR of host buffers (uploads the text)."""
        return self.match_device(*self.upload(tb))

    def first_invalid_utf8(self, data, offsets, valid) -> int:
        """Index of the first non-null device row that is not UTF-8, or -1 (syncs)."""
        n = int(valid.size)
        if n == 0:
            return -1
        bad = self.xp.empty(n, np.uint8)
        self.k.utf8_check[self._grid(n)](data, offsets, valid, bad)
        first = int(bad.argmax())  # sync
        return first if int(bad[first]) else -1

    def check_utf8(self, data, offsets, valid, where: str, row_base: int = 0) -> None:
        """Raise InputError naming ``where`` and the row when a non-null device
        row is not UTF-8 (the device twin of ``columns.check_utf8``)."""
        bad = self.first_invalid_utf8(data, offsets, valid)
        if bad >= 0:
            from .errors import InputError

            raise InputError(f"{where}: row {row_base + bad} is not valid UTF-8; re-encode the "
                             "source as UTF-8 or drop the row")

    def zeros(self, n: int, dtype):
        return self.xp.zeros(n, dtype)

    def match(self, tb: TextBuffers):
        """Host CSR of host buffers: upload, match, copy back (syncs)."""
        off, ids = self.match_device(*self.upload(tb))
        return self.to_host(off), self.to_host(ids)

    def match_cudf(self, series):
        """Match a cudf string Series; returns a cudf list<int32> Series.

        The captions are read in place from the column's device buffers
        (:func:`gpucurate.cudf_io.device_buffers`); the result list column is
        assembled through Arrow on the host. Unverified until it has run on a
        machine with cuDF.
        """
        import cudf

        from .cudf_io import device_buffers

        data, offsets, valid = device_buffers(series, self.xp)
        self.check_utf8(data, offsets, valid, "captions")
        off, ids = self.match_device(data, offsets, valid)
        arrow = _csr_arrow(self.to_host(off), self.to_host(ids))
        return cudf.Series.from_arrow(arrow)

    # ------------------------------------------------------ count, balance
    def count_into(self, ids, counts) -> None:
        """counts[e] += 1 per id, with atomics into the preallocated uint64 array."""
        if ids.size:
            self.k.count_entries[self._grid(int(ids.size))](ids, counts)

    def keep(self, ids, offsets, keys, prob, seed: int):
        """Device uint8 keep decision per caption (pinned draw)."""
        n = int(keys.size)
        keep = self.xp.zeros(max(n, 1), np.uint8)[:n]
        if n:
            self.k.keep_captions[self._grid(n)](ids, offsets, keys, prob, np.uint64(seed), keep)
        return keep

    def close(self) -> None:
        pass


def _csr_arrow(off, ids):
    from .columns import csr_to_arrow

    return csr_to_arrow(off, ids)
