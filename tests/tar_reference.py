"""The slow reference of the WebDataset reader: Python's tarfile, samples
grouped by key, the caption from the ``.txt`` member or a field of the
``.json`` member (the reader before gpucurate.io.tar, kept for the tests)."""

from __future__ import annotations

import json
import os
import re
import tarfile
from typing import Iterator

import pyarrow as pa

from gpucurate.errors import InputError
from gpucurate.io.common import normal_text, rows_to_table, split
from gpucurate.io.shards import Shard


def _rows_table(rows, shard, text_column, batch_bytes, first_row) -> Iterator[pa.Table]:
    try:
        table = rows_to_table(rows)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InputError(f"{shard.path}: rows {first_row}..{first_row + len(rows) - 1} have "
                         f"fields of mixed types ({exc}); make each field one type") from None
    yield from split(normal_text(table, text_column), text_column, batch_bytes)


def _tar(shard: Shard, text_column: str | None, batch_bytes: int) -> Iterator[pa.Table]:
    """WebDataset shard: samples grouped by ``__key__``; the caption is the
    ``.txt`` member, or field ``text_column`` of the ``.json`` member when
    ``text_column`` is not ``"text"``. Image bytes are not read."""
    field = None if text_column in (None, "text") else text_column
    out_col = text_column or "text"
    rows: list[dict] = []
    acc = 0
    emitted = 0
    cur_key, cur = None, None

    def flush_sample():
        nonlocal acc
        if cur_key is None:
            return
        row = {"__key__": cur_key}
        meta = cur.get("json")
        if meta is not None:
            row.update({k: v for k, v in meta.items() if k not in ("__key__", out_col)})
        if field is None:
            raw = cur.get("txt")
            if raw is None:
                raise InputError(f"{shard.path}: sample {cur_key!r} (row {emitted + len(rows)}) "
                                 "has no .txt member; pass --text-column FIELD to read the "
                                 "caption from its .json")
            try:
                row[out_col] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{shard.path}: sample {cur_key!r} .txt is not valid UTF-8; "
                                 "re-encode it") from None
        else:
            if meta is None or field not in meta or not (meta[field] is None or
                                                         isinstance(meta[field], str)):
                raise InputError(f"{shard.path}: sample {cur_key!r} has no string field "
                                 f"{field!r} in its .json; choose it with --text-column")
            row[out_col] = meta[field]
        rows.append(row)
        acc += len(row[out_col] or "")

    try:
        with tarfile.open(shard.path, "r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                # webdataset's base_plus_ext
                km = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", m.name)
                if km is None:
                    continue
                key, ext = km.group(1), km.group(2)
                if key != cur_key:
                    flush_sample()
                    cur_key, cur = key, {}
                    if acc >= batch_bytes // 4 or len(rows) >= 65536:
                        yield from _rows_table(rows, shard, out_col, batch_bytes, emitted)
                        emitted += len(rows)
                        rows, acc = [], 0
                ext = ext.lower()
                if ext in ("txt", "json") and ext in cur:
                    raise InputError(f"{shard.path}: sample {cur_key!r} has a second .{ext} "
                                     "member; keep one per sample")
                if ext == "txt":
                    cur["txt"] = tf.extractfile(m).read()
                elif ext == "json":
                    try:
                        cur["json"] = json.loads(tf.extractfile(m).read())
                    except ValueError as exc:
                        raise InputError(f"{shard.path}: {m.name} is not valid JSON ({exc}); "
                                         "fix the sample") from None
            flush_sample()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"{shard.path}: cannot read the tar ({exc}); the shard is truncated or "
                         "not a tar: re-create it") from None
    if rows:
        yield from _rows_table(rows, shard, out_col, batch_bytes, emitted)


