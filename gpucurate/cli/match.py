"""``python -m gpucurate match``: one caption file in, entry ids per row out."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from ..columns import buffers, chunks_of, csr_to_arrow
from ..errors import ConfigError, InputError
from ..io import Shard, read_batches, resolve_inputs, shard_format
from ..io.fs import is_url
from ..io.atomic import commit, tmp_path
from ..io.shards import compression_of
from ..matcher import Matcher

SCHEMA = pa.schema([("entry_ids", pa.list_(pa.int32()))])


def match_file(metadata, path: str, out: str, text_column: str = "text", device=None,
               threads=None, batch_bytes: int = 256 << 20) -> int:
    """Write ``out`` (parquet, one column ``entry_ids``), one row per input row,
    in input order; written atomically. Returns the number of rows."""
    if is_url(out):
        raise ConfigError(f"match --out {out}: the matches are written to a local file; give "
                          "one, then upload it if needed")
    if is_url(path):  # one object of s3://, gs://, hf:// or http(s)://
        shards = resolve_inputs([path])
        if len(shards) != 1 or shard_format(path) is None:
            raise InputError(f"{path}: match takes one .parquet, .jsonl[.gz|.zst] or "
                             ".tar[.gz|.tgz] object (curate takes prefixes and globs)")
        shard = shards[0]
    else:
        fmt = shard_format(path)
        if not os.path.exists(path):
            raise InputError(f"{path} does not exist; give a .parquet, .jsonl[.gz|.zst] or "
                             ".tar file")
        if not os.path.isfile(path) or fmt is None:
            raise InputError(f"{path}: not a .parquet, .jsonl[.gz|.zst] or .tar[.gz|.tgz] file")
        shard = Shard(0, os.path.realpath(path), os.path.basename(path), fmt,
                      compression_of(path))
    if os.path.isdir(out):
        raise ConfigError(f"match --out {out} is a directory; give the .parquet file to write")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise ConfigError(f"match --out {out}: its directory does not exist; make it first")
    if not is_url(path) and os.path.exists(out) and os.path.samefile(out, path):
        raise ConfigError(f"match --out {out} is the input file itself: it would be replaced "
                          "by the matches; give another file to write")
    m = Matcher(metadata, device=device, threads=threads)
    tmp = tmp_path(out)
    rows = 0
    try:
        with pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as w:
            for table in read_batches(shard, text_column, batch_bytes):
                col = table.column(text_column)
                if pa.types.is_null(col.type):
                    col = col.cast(pa.large_string())
                for chunk in chunks_of(col):
                    off, ids = m.match_buffers(buffers(chunk, where=path, row_base=rows))
                    w.write_table(pa.table({"entry_ids": csr_to_arrow(off, ids).cast(
                        pa.list_(pa.int32()))}))
                    rows += len(chunk)
        commit(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return rows
