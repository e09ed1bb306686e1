"""Reading caption shards and writing outputs atomically (pyarrow on the host).

Inputs are files, directories or globs of parquet, jsonl (plain, ``.gz``,
``.zst``) and WebDataset ``.tar`` shards (``shards``). One module per format
(``parquet``, ``jsonl``, ``tar``) yields pyarrow tables holding all of the
shard's columns, in row order, with at most ``batch_bytes`` of caption text per
table (a single larger caption makes a table of its own), the caption column
as ``string`` or ``large_string``. ``atomic`` writes outputs whole.
"""

from __future__ import annotations

import os
from typing import Iterator

import pyarrow as pa

from ..errors import InputError
from .atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from .common import check_text_column
from .shards import FORMATS, Shard, compression_of, resolve_inputs, shard_format


def _reader(fmt: str):
    if fmt == "parquet":
        from .parquet import read_parquet
        return read_parquet
    if fmt == "jsonl":
        from .jsonl import read_jsonl
        return read_jsonl
    from .tar import read_tar
    return read_tar


def read_batches(shard: Shard, text_column: str, batch_bytes: int) -> Iterator[pa.Table]:
    """Tables of the shard's rows in order (all columns), text checked."""
    for table in _reader(shard.fmt)(shard, text_column, batch_bytes):
        check_text_column(table.schema, shard.path, text_column)
        yield table


def count_rows(shard: Shard) -> int:
    """Rows of a shard (for --limit)."""
    if shard.fmt == "parquet":
        from .parquet import count_parquet
        return count_parquet(shard.path)
    if shard.fmt == "jsonl":
        from .jsonl import count_lines
        return count_lines(shard)
    return _count_tar(shard)


def _count_tar(shard: Shard) -> int:
    import tarfile

    last, n = None, 0
    with tarfile.open(shard.path, "r|*") as tf:
        for m in tf:
            if not m.isfile() or "." not in os.path.basename(m.name):
                continue
            key = os.path.join(os.path.dirname(m.name), os.path.basename(m.name).split(".", 1)[0])
            if key != last:
                last = key
                n += 1
    return n


def read_table(path: str, text_column: str = "text") -> pa.Table:
    """A whole shard as one table (for the ``match`` command and tests)."""
    shard = Shard(0, os.path.realpath(path), os.path.basename(path), shard_format(path) or "",
                  compression_of(path))
    if not shard.fmt:
        raise InputError(f"{path}: unknown format; supported: .parquet, .jsonl, .jsonl.gz, "
                         ".jsonl.zst, .tar")
    tables = list(read_batches(shard, text_column, 1 << 62))
    if not tables:
        raise InputError(f"{path}: holds no rows")
    return pa.concat_tables(tables, promote_options="permissive")


__all__ = ["Shard", "FORMATS", "shard_format", "resolve_inputs", "read_batches", "read_table",
           "count_rows", "atomic_write_bytes", "atomic_write_json", "atomic_write_parquet"]
