"""Per-target compilers for the single-source routines that ``routines.py`` composes."""

import numba


def cpu_jit(func):
    """Compile a routine for the CPU engine (cached on disk, GIL released)."""
    return numba.njit(cache=True, nogil=True)(func)


def cpu_jit_inline(func):
    """Compile a small per-token routine for the CPU engine, inlined into its
    callers at numba's IR level (``inline="always"``)."""
    return numba.njit(cache=True, nogil=True, inline="always")(func)


def device_jit(func):
    """Compile a routine as a CUDA device function (imports numba.cuda).

    Under Numba's CUDA simulator the routine stays the Python function: the
    simulator's device-function wrapper only swaps the ``cuda`` module into
    the caller's globals, under a lock, on every call, and the routines use
    no ``cuda`` name (they are target-neutral by rule). Its kernels still run
    them on the simulated threads, blocks and atomics."""
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        return func
    return cuda.jit(device=True)(func)


def device_jit_inline(func):
    """Compile a small per-token routine as a CUDA device function inlined
    into its callers (NVVM ``alwaysinline``); the Python function under the
    simulator, as :func:`device_jit`."""
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        return func
    return cuda.jit(device=True, forceinline=True)(func)


def device_tzcnt():
    """tzcnt for CUDA: ``ffs(m) - 1`` (libdevice ``__nv_ffsll``, one bit-find);
    None under Numba's CUDA simulator, whose ``ffs`` reads 32 bits only (the
    routines then use their portable binary search)."""
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        return None

    def tzcnt(m):
        return cuda.ffs(m) - 1

    return device_jit_inline(tzcnt)


def _array_intrinsic(name, ret, emit):
    """A numba intrinsic ``name(arr, i)`` of type ``ret``: ``emit(context,
    builder, ptr)`` builds its value from the address of arr[i]."""
    from numba import types
    from numba.extending import intrinsic

    def typer(typingctx, arr, idx):
        if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            return emit(context, builder, builder.gep(ary.data, [args[1]]))

        return ret(arr, idx), codegen

    typer.__name__ = name
    return intrinsic(typer)


def _cpu_load8():
    """buf[i:i + 8] as a little-endian uint64: one unaligned load."""
    from llvmlite import ir
    from numba import types

    def emit(context, builder, ptr):
        return builder.load(builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)

    return _array_intrinsic("cpu_load8", types.uint64, emit)


cpu_load8 = _cpu_load8()


def _delimiters():
    """The bytes that end a token, as (class 1, class 2) of the spacing rule
    (scan.byte_class): \t \n \r and the space; , . ; : ? ! and the backtick."""
    from .routines import SPACE_MASK, WRAP_MASK

    def below64(mask):
        return tuple(b for b in range(64) if (int(mask) >> b) & 1)

    return below64(SPACE_MASK), below64(WRAP_MASK) + (96,)


CLASS1, CLASS2 = _delimiters()


def _cpu_masks64():
    """(d, w) of buf[i:i + 64] (i + 64 <= buf.size; see scan.delim_masks):
    one 64-byte load and vector compares, which LLVM lowers to AVX-512, AVX2 or
    SSE2 as the CPU has them."""
    from llvmlite import ir
    from numba import types

    ret = types.UniTuple(types.uint64, 2)

    def emit(context, builder, ptr):
        vty = ir.VectorType(ir.IntType(8), 64)
        v = builder.load(builder.bitcast(ptr, vty.as_pointer()), align=1)

        def any_of(values):
            acc = None
            for c in values:
                e = builder.icmp_unsigned(
                    "==", v, ir.Constant(vty, [ir.Constant(ir.IntType(8), c)] * 64))
                acc = e if acc is None else builder.or_(acc, e)
            return acc

        w = any_of(CLASS1)
        d = builder.or_(w, any_of(CLASS2))
        i64 = ir.IntType(64)
        return context.make_tuple(builder, ret, [builder.bitcast(d, i64),
                                                 builder.bitcast(w, i64)])

    return _array_intrinsic("cpu_masks64", ret, emit)


cpu_masks64 = _cpu_masks64()


def _cpu_tzcnt():
    from numba.cpython.unsafe.numbers import trailing_zeros

    return trailing_zeros


cpu_tzcnt = _cpu_tzcnt()


def _cpu_prefetch():
    """A hint to fetch the cache line of arr[i] for reading (llvm.prefetch); i
    may be out of bounds (a prefetch never faults)."""
    from llvmlite import ir
    from numba import types

    def emit(context, builder, ptr):
        ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]))
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return _array_intrinsic("cpu_prefetch", types.none, emit)


cpu_prefetch = _cpu_prefetch()
