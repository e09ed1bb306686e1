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

    return lambda shard, text_column, batch_bytes, spans=None: read_tar(
        shard.path, shard.path, text_column, batch_bytes, spans)


def read_batches(shard: Shard, text_column: str, batch_bytes: int,
                 columns: list | None = None, rejects: list | None = None,
                 spans=None) -> Iterator[pa.Table]:
    """Tables of the shard's rows in order, text checked: every column, or
    with ``columns`` at least those (parquet reads only those; jsonl and tar
    rows are parsed whole). With ``rejects`` a bad jsonl line is recorded
    there and left out, rather than an error. ``spans``: a tar shard's
    samples' byte ranges are appended to it (:func:`.tar.read_tar`)."""
    if shard.fmt == "parquet" and (columns is not None or rejects is not None):
        from .parquet import read_parquet

        batches = read_parquet(shard, text_column, batch_bytes, columns, rejects)
    elif rejects is not None and shard.fmt == "jsonl":
        from .jsonl import read_jsonl

        batches = read_jsonl(shard, text_column, batch_bytes, rejects)
    elif spans is not None and shard.fmt == "tar":
        batches = _reader("tar")(shard, text_column, batch_bytes, spans)
    else:
        batches = _reader(shard.fmt)(shard, text_column, batch_bytes)
    for table in batches:
        check_text_column(table.schema, shard.path, text_column)
        yield table


def shard_schema(shard: Shard) -> pa.Schema | None:
    """The columns of a parquet shard, from its footer (None for jsonl and tar,
    whose columns are known once read)."""
    if shard.fmt != "parquet":
        return None
    from .parquet import open_parquet

    return open_parquet(shard.path).schema_arrow


def _columns_of(shard: Shard) -> list | None:
    """The column names a shard shows cheaply (a parquet footer, a jsonl file's
    first line), or None (a tar's caption is its .txt member)."""
    if shard.fmt == "parquet":
        return shard_schema(shard).names
    if shard.fmt == "jsonl":
        import json

        from .jsonl import open_lines

        try:  # the first line that reads as an object (a bad line is the reader's to name)
            with open_lines(shard) as f:
                for _, line in zip(range(100), f):
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(obj, dict):
                        return list(obj)
        except Exception:  # noqa: BLE001 - zlib, zstd, EOF: the reader says what is wrong
            return None
        return None
    return None


def choose_text_column(shards: list, given: str | None) -> str:
    """The caption column: ``given``, else ``text``, else ``caption`` (the
    name img2dataset and DataComp use) when every parquet and jsonl shard has
    it; else an error listing the columns."""
    if given:
        return given
    seen = [(s, c) for s in shards for c in [_columns_of(s)] if c is not None]
    for name in ("text", "caption"):
        if all(name in c for _, c in seen):
            return name
    s, c = next((s, c) for s, c in seen if "text" not in c)
    other = next((t for t, d in seen if "text" in d), None)
    if other is not None and "caption" in c:
        raise InputError(f"the shards name their caption column differently: {other.path} has "
                         f"'text', {s.path} 'caption'; one column name is read from every "
                         "shard: rename it in one of them (--text-column names it)")
    raise InputError(f"{s.path}: no column 'text' or 'caption' (columns: {', '.join(c)}); "
                     "choose the caption column with --text-column")


def count_rows(shard: Shard) -> int:
    """Rows of a shard (for --limit): a download folder's, those downloaded."""
    if shard.fmt == "parquet":
        from .parquet import count_parquet, open_parquet

        if shard.tar is not None:
            f = open_parquet(shard.path)
            if "status" in f.schema_arrow.names:
                import pyarrow.compute as pc

                return sum(int(pc.sum(pc.equal(b.column(0).cast(pa.string()), "success"))
                               .as_py() or 0)
                           for b in f.iter_batches(batch_size=1 << 20, columns=["status"]))
        return count_parquet(shard.path)
    if shard.fmt == "jsonl":
        from .jsonl import count_lines
        return count_lines(shard)
    from .tar import count_samples

    return count_samples(shard.path)


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
