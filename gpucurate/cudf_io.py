"""cuDF input: parquet shards read onto the GPU by cuDF, matched where they land.

With ``--reader cudf`` (or ``auto`` on a GPU with cuDF installed) pass 1 reads
each parquet shard's text column with ``cudf.read_parquet``, a run of row groups
at a time, and hands the column's device buffers (offsets, characters, null
mask; Arrow's layout) to the kernels with no host round trip: UTF-8 check,
matching and counting all run on the device, and only the per-shard counts come
back. Pass 2 (which writes the kept rows with every input column) and the jsonl
and tar readers stay on pyarrow, as do worldwide runs (their language routing
reads host arrays).

Only :func:`device_buffers` and :func:`parquet_text_batches` (and
``GpuEngine.match_cudf``, which builds its result with ``cudf.Series.from_arrow``)
call cuDF; the rest works on plain arrays (CuPy on a GPU, NumPy in the tests).
**Unverified**: cuDF could not be installed on any machine this was run on (it
needs a GPU, and was too large to carry to the GPU machine), so those calls have
never run. ``--reader arrow`` is the measured path.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import ConfigError
from .io.parquet import row_group_runs  # one rule for both readers' batches
from .log import logger

READERS = ("auto", "arrow", "cudf")


def available() -> tuple[bool, str]:
    """Whether cuDF can be used here, and why (not)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False, "cuDF does not run under Numba's CUDA simulator"
    try:
        import cudf
    except Exception as exc:  # noqa: BLE001 - absent, or present but unusable
        return False, f"cuDF is not importable ({exc.__class__.__name__}: {exc})"
    return True, f"cuDF {cudf.__version__}"


def resolve_reader(reader: str, device: str) -> str:
    """'arrow' or 'cudf' for ``--reader`` on ``device`` ('cpu' or 'gpu')."""
    if reader not in READERS:
        raise ConfigError(f"--reader must be one of {', '.join(READERS)}, not {reader!r}")
    if reader == "arrow" or (reader == "auto" and device != "gpu"):
        return "arrow"
    ok, why = available()
    if reader == "cudf":
        if device != "gpu":
            raise ConfigError("--reader cudf needs the GPU engine (--device gpu or auto with a "
                              "usable GPU); use --reader arrow on the CPU")
        if not ok:
            raise ConfigError(f"--reader cudf: {why}; install gpucurate[gpu-cu13] (or "
                              "gpu-cu12), or use --reader arrow")
        return "cudf"
    if not ok:
        logger.info("reading shards with pyarrow: %s", why)
        return "arrow"
    return "cudf"


# ------------------------------------------------------------ array level
def unpack_bitmask(mask, offset: int, size: int, xp=np):
    """uint8 validity (1 = valid) of rows offset..offset+size of an Arrow/cuDF
    bitmask (bytes, least significant bit first)."""
    if size == 0:
        return xp.zeros(0, np.uint8)
    idx = xp.arange(offset, offset + size, dtype=np.int64)
    return ((mask[idx >> 3] >> (idx & 7).astype(np.uint8)) & 1).astype(np.uint8)


def arrow_layout(offsets, chars, mask, offset: int, size: int, xp=np):
    """(data uint8, offsets int64 of size + 1, valid uint8) for the kernels, from a
    string column's buffers: ``offsets`` (int32 or int64, of the unsliced column),
    ``chars`` (uint8), ``mask`` (uint8 bitmask bytes, or None when no row is
    null), ``offset`` (the column's first row) and ``size`` (its rows)."""
    if size == 0:
        return xp.zeros(1, np.uint8), xp.zeros(1, np.int64), xp.zeros(0, np.uint8)
    off = offsets[offset: offset + size + 1].astype(np.int64)
    valid = unpack_bitmask(mask, offset, size, xp) if mask is not None else \
        xp.ones(size, np.uint8)
    data = chars if chars is not None and chars.size else xp.zeros(1, np.uint8)
    return data, off, valid


# ------------------------------------------------------------- cuDF level
def device_buffers(series, xp):
    """Arrow-layout device buffers of a cudf string Series, read in place."""
    col, _ = series.to_pylibcudf()          # zero-copy pylibcudf.Column
    size, offset = col.size(), col.offset()
    if size == 0:
        return arrow_layout(None, None, None, 0, 0, xp)
    kid = col.child(0)
    wide = kid.type().id().name == "INT64"
    offsets = xp.asarray(kid.data()).view(np.int64 if wide else np.int32)
    chars = xp.asarray(col.data()).view(np.uint8) if col.data() is not None else None
    mask = col.null_mask()
    mask = xp.asarray(mask).view(np.uint8) if mask is not None and col.null_count() else None
    return arrow_layout(offsets, chars, mask, offset, size, xp)


def parquet_text_batches(shard, text_column: str, batch_bytes: int, max_rows: int | None):
    """Yield (cudf string Series, first row) over a parquet shard's text column."""
    import cudf
    import pyarrow.parquet as pq

    from .errors import InputError
    from .io import check_text_column
    from .io.footer import row_group_facts

    try:
        f = pq.ParquetFile(shard.path, page_checksum_verification=True)  # the footer only
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{shard.path}: cannot read parquet ({exc}); the file is truncated or "
                         "not parquet: re-export it") from None
    check_text_column(f.schema_arrow, shard.path, text_column)
    if "entry_ids" in f.schema_arrow.names:
        raise InputError(f"{shard.path}: already has a column 'entry_ids', which curation "
                         "adds; rename or drop it")
    md = f.metadata
    facts = row_group_facts(md)  # not md.row_group(g).column(i): see io.footer
    if facts is None:
        sizes = [md.row_group(g).total_byte_size for g in range(md.num_row_groups)]
    else:
        sizes = [sum(c.uncompressed or 0 for c in g.columns if c.path == text_column)
                 for g in facts]
    rows = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
    for groups, first, n in row_group_runs(sizes, rows, batch_bytes):
        if max_rows is not None and first >= max_rows:
            return
        try:
            df = cudf.read_parquet(shard.path, columns=[text_column], row_groups=[groups])
        except MemoryError as exc:  # the device's (std::bad_alloc): no fault of the file
            from .errors import DeviceError

            raise DeviceError(f"{shard.path}: the GPU ran out of memory reading row groups "
                              f"{groups[0]}-{groups[-1]} ({exc}); give a smaller --batch-bytes "
                              "(a row group is read whole: rewrite the file with smaller row "
                              "groups), or use --reader arrow") from None
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{shard.path}: cuDF cannot read row groups {groups[0]}-{groups[-1]}"
                             f" ({exc}); the file may be damaged (pyarrow reads it with "
                             "--reader arrow), or cuDF cannot read its encoding") from None
        s = df[text_column]  # a string column: check_text_column read the schema above
        if max_rows is not None and first + len(s) > max_rows:
            s = s.iloc[: max_rows - first]
        yield s, first
