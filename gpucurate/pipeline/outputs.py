"""What a run writes besides its counts (``--outputs``): ``parquet`` (the
curated parts, ``curated/``), ``webdataset`` (``curated-wds/``, see
:mod:`.wds_out`) and ``uids`` (``uids.npy``, DataComp's subset format).

Pass 2 always writes the curated parts: the other outputs are made from them
after pass 2, in input order. Without ``parquet`` in ``--outputs`` the parts
are removed once every requested output is whole. Each output is written to a
temporary name and renamed, so a rerun finds it whole or redoes it.
"""

from __future__ import annotations

import io
import os
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ConfigError, InputError
from ..io import Shard, atomic_write_bytes
from ..io.fs import fetch, unpublish
from ..log import logger
from .layout import OutputLayout

OUTPUTS = ("parquet", "webdataset", "uids")
UID_DTYPE = np.dtype("u8,u8")


def check_output_names(value) -> tuple:
    """``--outputs``: a comma list (or a sequence) of parquet, webdataset and uids."""
    if isinstance(value, str):
        value = value.split(",")
    names = [str(v).strip() for v in value if str(v).strip()]
    bad = [n for n in names if n not in OUTPUTS]
    if bad or not names:
        raise ConfigError(f"--outputs takes a comma list of {', '.join(OUTPUTS)}, not "
                          f"{','.join(map(str, value))!r}")
    return tuple(n for n in OUTPUTS if n in names)


# ---------------------------------------------------------------- uids
_HEX = np.full(256, -1, np.int16)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def _nibbles(col) -> tuple:
    """(first row that is not 32 hex digits or None, the (n, 32) hex digit values)."""
    n = len(col)
    if pa.types.is_dictionary(col.type):  # (a pandas category): its values
        col = col.cast(col.type.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
            or pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)
            or pa.types.is_string_view(col.type) or pa.types.is_binary_view(col.type)):
        return (0 if n else None), None
    col = col.cast(pa.large_binary())
    lens = pc.binary_length(col).to_numpy(zero_copy_only=False)
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    bad = ~valid | (lens != 32)
    nib = None
    if not bad.any() and n:
        offs = np.frombuffer(col.buffers()[1], np.int64, count=n + 1, offset=col.offset * 8)
        data = np.frombuffer(col.buffers()[2], np.uint8)[offs[0]:offs[0] + 32 * n]
        nib = _HEX[data.reshape(n, 32)]
        bad = (nib < 0).any(axis=1)
    return (int(np.flatnonzero(bad)[0]) if bad.any() else None), nib


def _uid_error(where: str, row: int, value) -> InputError:
    return InputError(f"{where}: row {row} has the key {value!r}, not a DataComp uid (32 hex "
                      "digits); --outputs uids needs --key-column to name the uid column "
                      "(or rerun without uids in --outputs, with --overwrite)")


def uid_pairs(column, where: str, first_row: int = 0) -> np.ndarray:
    """DataComp uids (32 hex digits) as (high, low) 64-bit halves, dtype
    ``"u8,u8"``, in the column's order; anything else is an error naming the row."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    out = np.zeros(len(col), UID_DTYPE)
    bad, nib = _nibbles(col)
    if bad is not None:
        raise _uid_error(where, first_row + bad, col[bad].as_py())
    if nib is None:
        return out
    b = ((nib[:, 0::2] << 4) | nib[:, 1::2]).astype(np.uint8)  # (n, 16) bytes, big-endian
    out["f0"] = np.ascontiguousarray(b[:, :8]).view(">u8").ravel()
    out["f1"] = np.ascontiguousarray(b[:, 8:]).view(">u8").ravel()
    return out


def check_outputs(cfg, shards: list) -> None:
    """Before any work: the inputs the requested outputs need."""
    if "webdataset" in cfg.outputs:
        from .wds_out import check_wds_inputs

        check_wds_inputs(shards)
    if "uids" in cfg.outputs:
        if not cfg.key_column:
            raise ConfigError("--outputs uids takes each kept sample's uid from --key-column; "
                              "name the uid column (DataComp: --key-column uid)")
        from ..io.parquet import open_parquet  # local paths and URLs alike

        checked = 0
        left = cfg.limit  # --limit: the rows the run reads, in the shards' order
        for s in shards:  # parquet: the key column is cheap to read whole
            if s.fmt != "parquet" or left is not None and left <= 0:
                continue
            pf = open_parquet(s.path)
            names = pf.schema_arrow.names
            if cfg.key_column not in names:
                raise ConfigError(f"{s.path}: no key column {cfg.key_column!r} for --outputs "
                                  f"uids (columns: {', '.join(names)}); name the uid column "
                                  "with --key-column")
            cols = [cfg.key_column] + (["status"] if s.tar and "status" in names else [])
            row = 0
            for rb in pf.iter_batches(batch_size=1 << 20, columns=cols):
                key = rb.column(0)
                idx = np.arange(rb.num_rows)
                if len(cols) == 2:  # a download folder: only the rows downloaded
                    idx = np.flatnonzero(pc.fill_null(pc.equal(
                        rb.column(1).cast(pa.string()), "success"), False).to_numpy(
                        zero_copy_only=False))
                if cfg.on_bad_row == "skip" and key.null_count:  # rejected rows, not samples
                    idx = idx[np.asarray(key.is_valid().to_numpy(zero_copy_only=False),
                                         bool)[idx]]
                if left is not None:
                    idx = idx[:left]
                    left -= idx.size
                key = key.take(pa.array(idx))
                bad, _ = _nibbles(key)
                if bad is not None:
                    raise _uid_error(f"{s.path} (key column {cfg.key_column!r})",
                                     row + int(idx[bad]), key[bad].as_py())
                row += rb.num_rows
                if left is not None and left <= 0:
                    break
            checked += 1
        if checked:
            logger.info("--outputs uids: the key column %r of %d parquet shards holds uids",
                        cfg.key_column, checked)


def write_uids(cfg, layout: OutputLayout, shards: list) -> int:
    """uids.npy: the kept samples' uids, sorted (DataComp's subset file)."""
    parts = []
    for s in shards:
        path = layout.curated(s.index)
        fetch(path)  # written on another node: from its object
        t = pq.read_table(path, columns=[cfg.key_column])
        parts.append(uid_pairs(t.column(0), f"{path} (the curated part of {s.path}; its "
                                            "rows are the shard's kept rows)"))
    uids = np.sort(np.concatenate(parts)) if parts else np.zeros(0, UID_DTYPE)
    buf = io.BytesIO()
    np.save(buf, uids)
    atomic_write_bytes(layout.uids, buf.getvalue())
    return int(uids.size)


# ---------------------------------------------------------------- the run's outputs
def write_outputs(cfg, layout: OutputLayout, shards: list[Shard], p2: list,
                  summary: dict, executor=None, setup=None) -> None:
    """After pass 2: the requested outputs besides the curated parts (whole,
    resumable); their figures go into ``summary``. The WebDataset tars are
    the calls of ``executor`` (with the passes' worker ``setup``) when given."""
    outs = {}

    def where(path: str) -> str:  # an output bound for a bucket: its URL, not the staging path
        from ..io.fs import remote_of

        return remote_of(path) or path

    if "webdataset" in cfg.outputs:
        from .wds_out import write_webdataset

        t0 = time.perf_counter()
        sizes = write_webdataset(layout, shards, [int(x["kept"]) for x in p2],
                                 cfg.samples_per_shard, executor, setup)
        summary["seconds"]["webdataset"] = time.perf_counter() - t0
        outs["webdataset"] = {"dir": where(layout.curated_wds_dir), "tars": len(sizes),
                              "samples": sum(sizes.values())}
        logger.info("webdataset: %d tars, %s samples in %s", len(sizes),
                    f"{sum(sizes.values()):,}", where(layout.curated_wds_dir))
    if "uids" in cfg.outputs:
        t0 = time.perf_counter()
        if os.path.exists(layout.uids):  # whole (written by rename): kept
            n = int(np.load(layout.uids, mmap_mode="r").shape[0])
        else:
            n = write_uids(cfg, layout, shards)
        summary["seconds"]["uids"] = time.perf_counter() - t0
        outs["uids"] = {"path": where(layout.uids), "uids": n}
        logger.info("uids: %s in %s", f"{n:,}", where(layout.uids))
    if "parquet" in cfg.outputs:
        outs["parquet"] = {"dir": where(layout.curated_dir)}
    summary["outputs"] = outs


def drop_unrequested(cfg, layout: OutputLayout) -> None:
    """Without ``parquet`` in --outputs: remove the curated parts, once every
    requested output is whole."""
    if "parquet" not in cfg.outputs:
        if os.path.isdir(layout.curated_dir):
            shutil.rmtree(layout.curated_dir)
        unpublish(layout.curated_dir)  # OUT on a bucket: the parts' objects too
