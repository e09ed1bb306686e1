"""Engines (CPU, CUDA) behind one interface, and the choice between them.

An engine turns :class:`~gpucurate.columns.TextBuffers` into the CSR of
matches: ``offsets`` (int64, one more than rows) and ``ids`` (int32, sorted and
distinct within each caption). Device choice follows cuDF's order: an explicit
argument beats ``$GPUCURATE_DEVICE``, which beats ``auto`` (``config.device_choice``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .columns import TextBuffers
from .config import device_choice, threads_choice
from .errors import DeviceError
from .compiled import compile_notice
from .log import logger

def default_threads() -> int:
    """CPU engine threads when none are given (see :func:`config.threads_choice`)."""
    return threads_choice(None)


def prewarm_kernels() -> None:
    """Load (or compile) the CPU kernels that do not depend on the tables'
    types: the UTF-8 check, counting and the keep decision. The first of them
    also pays numba's one-time set-up of its compiler (~0.4 s), so a worker
    runs this on a thread of its own while it reads the metadata and tables."""
    from .columns import buffers
    from .kernels import cpu

    import pyarrow as pa

    compile_notice("the CPU engine", cpu.match_range, cpu.count_entries, cpu.keep_range,
                   cpu.first_invalid_utf8)
    buffers(pa.array(["a warm-up caption"], pa.large_string()))
    ids, off = np.zeros(1, np.int32), np.array([0, 1], np.int64)
    cpu.count_entries(ids, np.zeros(1, np.uint64))
    cpu.keep_range(ids, off, np.zeros(1, np.uint64), np.ones(1), np.uint64(0),
                   np.zeros(1, np.uint8))


class CpuEngine:
    """The numba CPU engine, parallel over contiguous caption ranges."""

    name = "cpu"

    def __init__(self, tables, threads: int | None = None):
        from .kernels import cpu

        self._k = cpu
        compile_notice("the CPU engine", cpu.match_range, cpu.count_entries, cpu.keep_range,
                       cpu.first_invalid_utf8)
        self.tables = tables
        self.args = cpu.range_args(tables.args())
        self.threads = threads_choice(threads)
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.warm()

    def warm(self) -> None:
        """Compile (or load from numba's cache) what matching, counting and the
        keep decision run, now rather than inside the first batch."""
        from .columns import buffers

        import pyarrow as pa

        tb = buffers(pa.array(["a warm-up caption"], pa.large_string()))
        off, ids = self.match(tb)
        self.count_into(ids, np.zeros(max(1, self.tables.n_entries), np.uint64))
        self.keep(ids, off, np.zeros(1, np.uint64), np.ones(max(1, self.tables.n_entries)), 0)

    def _range(self, tb: TextBuffers, lo: int, hi: int):
        return self._k.match_range(tb.data, tb.offsets, tb.valid, lo, hi, *self.args)

    def match(self, tb: TextBuffers) -> tuple[np.ndarray, np.ndarray]:
        n = len(tb)
        if self._pool is None or n < 2048:
            return self._range(tb, 0, n)
        pieces = min(n // 512, self.threads * 8)
        bounds = np.linspace(0, n, pieces + 1).astype(np.int64)
        parts = list(self._pool.map(lambda r: self._range(tb, int(r[0]), int(r[1])),
                                    zip(bounds[:-1], bounds[1:])))
        sizes = np.array([p[1].size for p in parts], np.int64)
        shift = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        offsets = np.concatenate([parts[0][0][:1]] + [p[0][1:] + s for p, s in zip(parts, shift)])
        return offsets, np.concatenate([p[1] for p in parts])

    # The array-level interface the curation stages use (shared with GpuEngine):
    # arrays live in the engine's memory (host NumPy here).
    def match_native(self, tb: TextBuffers):
        return self.match(tb)

    def to_device(self, a):
        return a

    def to_host(self, a) -> np.ndarray:
        return a

    def zeros(self, n: int, dtype):
        return np.zeros(n, dtype)

    def count_into(self, ids, counts) -> None:
        """counts[e] += 1 for every id (uint64, in place)."""
        self._k.count_entries(ids, counts)

    def keep(self, ids, offsets, keys, prob, seed: int):
        out = np.zeros(keys.size, np.uint8)
        self._k.keep_range(ids, offsets, keys, prob, np.uint64(seed), out)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def gpu_status() -> tuple[bool, str]:
    """Whether a CUDA GPU is usable by gpucurate, and why (not)."""
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - numba-cuda ships with numba here
        return False, f"numba.cuda cannot be imported ({exc}); install gpucurate[gpu-cu13]"
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True, "Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1): correct but slow"
    try:
        import numba_cuda  # noqa: F401
    except ImportError:
        return False, "numba-cuda is not installed; install gpucurate[gpu-cu13] or [gpu-cu12]"
    try:
        if not cuda.is_available():
            return False, "no CUDA driver or device found"
        try:  # the device's attributes without making Numba's context, so that
            dev = cuda.list_devices()[0]  # RMM can still become its memory manager
            cc = dev.compute_capability
        except Exception:  # noqa: BLE001 - older numba-cuda: ask the current context
            dev = cuda.get_current_device()
            cc = dev.compute_capability
    except Exception as exc:  # noqa: BLE001 - any driver failure means "not usable"
        return False, f"CUDA is not usable: {exc}"
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False, "CuPy is not installed; install gpucurate[gpu-cu13] or [gpu-cu12]"
    name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
    return True, f"{name} (compute capability {cc[0]}.{cc[1]})"


def resolve_device(device: str | None) -> str:
    """'cpu' or 'gpu' for an explicit choice, ``$GPUCURATE_DEVICE`` or auto
    (the precedence is :func:`config.device_choice`'s)."""
    device = device_choice(device)
    if device == "cpu":
        return "cpu"
    ok, why = gpu_status()
    if device == "gpu":
        if not ok:
            raise DeviceError(f"--device gpu: no usable GPU: {why}. Use --device cpu or auto.")
        return "gpu"
    if not ok:
        logger.info("falling back to CPU: %s", why)
        return "cpu"
    return "gpu"


def make_engine(tables, device: str | None = None, threads: int | None = None):
    """An engine for ``tables`` (:class:`~gpucurate.tables.MatchTables`)."""
    if resolve_device(device) == "gpu":
        from .gpu import GpuEngine

        return GpuEngine(tables)
    return CpuEngine(tables, threads)
