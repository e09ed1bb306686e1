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

# Bytes that end a token: class 1 (\t \n \r and the space) and class 2
# (, . ; : ? ! and the backtick) of the spacing rule (routines.byte_class).
CLASS1 = (9, 10, 13, 32)
CLASS2 = (33, 44, 46, 58, 59, 63, 96)


def _cpu_masks64():
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def cpu_masks64(typingctx, arr, idx):
        """(d, w) of buf[i:i + 64] (i + 64 <= buf.size; see routines.delim_masks):
        one 64-byte load and vector compares, which LLVM lowers to AVX-512,
        AVX2 or SSE2 as the CPU has them."""
        if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
            return None
        ret = types.UniTuple(types.uint64, 2)

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = builder.gep(ary.data, [args[1]])
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

        return ret(arr, idx), codegen

    return cpu_masks64


cpu_masks64 = _cpu_masks64()


def _cpu_tzcnt():
    from numba.cpython.unsafe.numbers import trailing_zeros

    return trailing_zeros


cpu_tzcnt = _cpu_tzcnt()


def _cpu_prefetch():
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def cpu_prefetch(typingctx, arr, idx):
        """A hint to fetch the cache line of arr[i] for reading (llvm.prefetch);
        i may be out of bounds (a prefetch never faults)."""
        if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), ir.IntType(8).as_pointer())
            i32 = ir.IntType(32)
            fn = builder.module.declare_intrinsic(
                "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]))
            builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.none(arr, idx), codegen

    return cpu_prefetch


cpu_prefetch = _cpu_prefetch()
