"""Parquet shards: row groups read in runs of at most ``batch_bytes`` of text,
page checksums verified where the file has them."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from .footer import row_group_facts
from .fs import is_url, open_input
from .common import check_other_strings, check_text_column, drop_bad_strings, normal_text, split
from .shards import Shard


# Column chunks are read through a buffer of this size, page by page, rather
# than whole (pyarrow's pre-buffering holds every column chunk of a row group
# at once: a 1M-row group of an img2dataset shard is ~400 MB): memory then
# follows --batch-bytes, not the writer's row-group size. Object stores get
# larger reads, fewer requests.
READ_BUFFER = 1 << 20
READ_BUFFER_REMOTE = 8 << 20


def open_parquet(path: str) -> pq.ParquetFile:
    try:
        remote = is_url(path)
        return pq.ParquetFile(open_input(path, native=True) if remote else path,
                              page_checksum_verification=True, pre_buffer=False,
                              buffer_size=READ_BUFFER_REMOTE if remote else READ_BUFFER)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read parquet ({exc}); the file is truncated or "
                         "not parquet: re-export it") from None
    except ValueError as exc:  # fsspec's http: a server without range requests
        if "range" not in str(exc).lower():
            raise
        raise InputError(f"{path}: the server does not answer range requests, which reading "
                         "parquet by columns needs (python -m http.server does not); serve "
                         "the pool from a server that does (nginx, caddy, an object store) or "
                         "download it and give the local files") from None


def read_parquet(shard: Shard, text_column: str, batch_bytes: int,
                 columns: list | None = None, rejects: list | None = None) -> Iterator[pa.Table]:
    """Batches of the shard (only ``columns`` when given; the others are
    neither read nor decoded). A row holding a non-UTF-8 string is an error;
    with ``rejects`` it is left out and recorded there."""
    f = open_parquet(shard.path)
    schema = f.schema_arrow
    check_text_column(schema, shard.path, text_column)
    dup = sorted({n for n in schema.names if schema.names.count(n) > 1})
    if dup:
        raise InputError(f"{shard.path}: has several columns named {dup[0]!r}; rename them so "
                         "every column name is unique")
    md = f.metadata
    first = 0
    if columns is not None:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise InputError(f"{shard.path}: no column {missing[0]!r} (columns: "
                             f"{', '.join(schema.names)})")
        columns = [c for c in schema.names if c in set(columns)]
    # Rows per batch: batch_bytes of the columns read, from each run of row
    # groups' own sizes (a file's average let a run of wide rows, images
    # after captions, make batches of 25x batch_bytes), down to one row (a
    # floor of 1,024 made a 512 KiB-row shard's batches 512 MiB)
    gbytes = columns_bytes_per_group(md, columns)
    grows = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
    try:
        for groups, _, n_rows in row_group_runs(gbytes, grows, batch_bytes):
            avg = max(1, sum(gbytes[g] for g in groups) // max(1, n_rows))
            rows = int(min(max(1, batch_bytes // avg), 1 << 22))
            for rb in f.iter_batches(batch_size=rows, row_groups=groups, columns=columns):
                table = normal_text(pa.Table.from_batches([rb]), text_column)
                n = table.num_rows
                if rejects is not None:
                    table = drop_bad_strings(table, shard.path, first, rejects)
                else:
                    check_other_strings(table, text_column, shard.path, first)
                first += n
                yield from split(table, text_column, batch_bytes)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{shard.path}: cannot read parquet near row {first} ({exc}); the file "
                         "is truncated or corrupt: re-export it") from None


def count_parquet(path: str) -> int:
    return open_parquet(path).metadata.num_rows


def row_group_runs(row_group_bytes, row_group_rows, batch_bytes: int):
    """Runs of consecutive row groups, each with at most ``batch_bytes`` (a row
    group larger than that is a run of its own): [(groups, first_row, rows)]."""
    runs, cur, first, row, acc = [], [], 0, 0, 0
    for g, (b, n) in enumerate(zip(row_group_bytes, row_group_rows)):
        if cur and acc + b > batch_bytes:
            runs.append((cur, first, row - first))
            cur, first, acc = [], row, 0
        cur.append(g)
        acc += b
        row += n
    if cur:
        runs.append((cur, first, row - first))
    return runs


def columns_bytes_per_group(md: pq.FileMetaData, columns: list | None) -> list:
    """Per row group, the uncompressed bytes of these columns (every column's
    when None, or when the footer cannot be read by ``io.footer``)."""
    facts = row_group_facts(md)
    if facts is None:
        return [md.row_group(rg).total_byte_size for rg in range(md.num_row_groups)]
    names = set(columns) if columns is not None else None
    return [sum(c.uncompressed or 0 for c in g.columns
                if names is None or c.path.split(".")[0] in names) for g in facts]


def columns_bytes(md: pq.FileMetaData, columns: list | None) -> int:
    """The uncompressed bytes of these columns (of every column when None) in
    the whole file, from the footer (``io.footer``: pyarrow's per-column
    metadata would end the process on a footer that does not fit its schema);
    every column's when the footer cannot be read so."""
    return sum(columns_bytes_per_group(md, columns))


def no_nulls(path: str, column: str) -> bool:
    """Whether the footer's statistics show that ``column`` holds no null (in
    every row group); False when a row group has no statistics for it."""
    facts = row_group_facts(open_parquet(path).metadata)
    if facts is None:
        return False
    for g in facts:
        col = next((c for c in g.columns if c.path == column), None)
        if col is None or col.null_count is None or col.null_count:
            return False
    return True
