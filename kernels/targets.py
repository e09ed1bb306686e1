"""Per-target compilers for the single-source routines of ``routines.py``."""

import numba


def cpu_jit(func):
    """Compile a routine for the CPU engine (cached on disk, GIL released)."""
    return numba.njit(cache=True, nogil=True)(func)


def cpu_jit_inline(func):
    """Compile a small per-token routine for the CPU engine, inlined into its
    callers at numba's IR level (``inline="always"``)."""
    return numba.njit(cache=True, nogil=True, inline="always")(func)


def device_jit(func):
    """Compile a routine as a CUDA device function (imports numba.cuda)."""
    from numba import cuda

    return cuda.jit(device=True)(func)


def device_jit_inline(func):
    """Compile a small per-token routine as a CUDA device function inlined
    into its callers (NVVM ``alwaysinline``)."""
    from numba import config, cuda

    if config.ENABLE_CUDASIM:  # the simulator's jit takes no forceinline
        return cuda.jit(device=True)(func)
    return cuda.jit(device=True, forceinline=True)(func)
