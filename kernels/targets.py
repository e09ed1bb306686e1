"""Per-target compilers for the single-source routines of ``routines.py``."""

import numba


def cpu_jit(func):
    """Compile a routine for the CPU engine (cached on disk, GIL released)."""
    return numba.njit(cache=True, nogil=True)(func)


def device_jit(func):
    """Compile a routine as a CUDA device function (imports numba.cuda)."""
    from numba import cuda

    return cuda.jit(device=True)(func)
