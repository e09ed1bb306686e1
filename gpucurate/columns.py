"""Caption columns as Arrow-layout buffers: the one interface every engine reads.

A :class:`TextBuffers` is what the kernels see: the data bytes, int64 offsets
into them (one more than rows; row ``i`` is ``data[offsets[i]:offsets[i+1]]``)
and a uint8 validity mask. pyarrow ``string`` / ``large_string`` arrays (sliced
or not), chunked arrays and Python lists of ``str | None`` are all turned into
it without copying the text where Arrow allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import InputError


@dataclass(frozen=True)
class TextBuffers:
    data: np.ndarray      # uint8
    offsets: np.ndarray   # int64, n + 1
    valid: np.ndarray     # uint8, n

    def __len__(self) -> int:
        return int(self.valid.size)

    @property
    def nbytes_text(self) -> int:
        return int(self.offsets[-1] - self.offsets[0]) if self.valid.size else 0


def to_arrow(texts) -> pa.Array | pa.ChunkedArray:
    """A pyarrow string array from a list of ``str | None`` or an Arrow column."""
    if isinstance(texts, (pa.Array, pa.ChunkedArray)):
        return texts
    if isinstance(texts, (str, bytes)):  # one caption is no list of them
        raise InputError("captions: give a list of captions (one str is matched as a list of "
                         f"its characters): [{texts!r}]"[:200])
    try:
        return pa.array(texts, pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(f"captions must be str or None: {exc}") from None
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it
        for i, x in enumerate(texts):
            if isinstance(x, str):
                try:
                    x.encode("utf-8")
                except UnicodeEncodeError:
                    raise InputError(f"captions: row {i} holds a lone surrogate ({x[:40]!r}), "
                                     "which has no UTF-8; drop or fix the row") from None
        raise


def chunks_of(col) -> list[pa.Array]:
    col = to_arrow(col)
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    out = []
    for c in chunks:
        t = c.type
        if pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or
                                          pa.types.is_large_string(t.value_type) or
                                          pa.types.is_string_view(t.value_type)):
            c = c.dictionary_decode().cast(pa.large_string())  # (a pandas category)
        elif pa.types.is_null(t):
            c = pa.nulls(len(c), pa.large_string())
        elif pa.types.is_string_view(t):
            c = c.cast(pa.large_string())
        elif not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise InputError(f"captions must be a string column, got {t}; cast it to string "
                             "(on the command line: choose another --text-column)")
        out.append(c)
    return out


def buffers(arr: pa.Array, where: str = "captions", validate: bool = True,
            row_base: int = 0) -> TextBuffers:
    """Arrow-layout buffers of one string array (no copy of the text).

    With ``validate`` the text is checked to be UTF-8 and an invalid row raises
    :class:`InputError` naming ``where`` and the row (``row_base`` + its
    position: the row of the file the array starts at).
    """
    n = len(arr)
    bufs = arr.buffers()
    wide = pa.types.is_large_string(arr.type)
    odt = np.int64 if wide else np.int32
    offsets = np.frombuffer(bufs[1], odt, count=n + 1, offset=arr.offset * odt().itemsize) \
        if n else np.zeros(1, odt)
    offsets = offsets.astype(np.int64, copy=False)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None and bufs[2].size else \
        np.zeros(1, np.uint8)
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False).view(np.uint8)
    else:
        valid = np.ones(n, np.uint8)
    tb = TextBuffers(data, offsets, valid)
    if validate:
        check_utf8(tb, where, row_base)
    return tb


def check_utf8(tb: TextBuffers, where: str, row_base: int = 0) -> None:
    from .kernels.cpu import first_invalid_utf8

    bad = first_invalid_utf8(tb.data, tb.offsets, tb.valid)
    if bad >= 0:
        raw = bytes(tb.data[tb.offsets[bad]: tb.offsets[bad + 1]][:60])
        raise InputError(f"{where}: row {row_base + bad} is not valid UTF-8 ({raw!r}); "
                         "re-encode the source as UTF-8 or drop the row")


def csr_to_arrow(offsets: np.ndarray, ids: np.ndarray) -> pa.Array:
    """A ListArray (LargeListArray past 2**31 - 1 ids) of int32 ids."""
    values = pa.array(ids, pa.int32())
    if offsets[-1] < 2**31:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    return pa.LargeListArray.from_arrays(pa.array(offsets), values)
