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


def _cpu_load8():
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def cpu_load8(typingctx, arr, idx):
        """buf[i:i + 8] as a little-endian uint64: one unaligned load (x86)."""
        if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = builder.gep(ary.data, [args[1]])
            p64 = builder.bitcast(ptr, ir.IntType(64).as_pointer())
            return builder.load(p64, align=1)

        return types.uint64(arr, idx), codegen

    return cpu_load8


cpu_load8 = _cpu_load8()
