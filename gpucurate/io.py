"""Reading caption shards and writing outputs atomically (pyarrow on the host).

Inputs are files, directories or globs of parquet, jsonl (plain, ``.gz``,
``.zst``) and WebDataset ``.tar`` shards. Every reader yields pyarrow tables
holding all of the shard's columns, in row order, with at most ``batch_bytes``
of caption text per table (a single larger caption makes a table of its own).
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import InputError

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".jsonl.zst": "jsonl",
           ".tar": "tar"}


@dataclass(frozen=True)
class Shard:
    index: int
    path: str    # resolved absolute path
    name: str    # path relative to the input argument it came from
    fmt: str     # parquet | jsonl | tar


def shard_format(path: str) -> str | None:
    low = path.lower()
    for ext in sorted(FORMATS, key=len, reverse=True):
        if low.endswith(ext):
            return FORMATS[ext]
    return None


def _glob_prefix(pattern: str) -> str:
    parts = pattern.split(os.sep)
    fixed = []
    for p in parts:
        if glob.has_magic(p):
            break
        fixed.append(p)
    return os.sep.join(fixed) or "."


def resolve_inputs(inputs, need_unique_names: bool = True) -> list[Shard]:
    """Shards of files, directories and globs, in sorted order of resolved path.

    A shard's name is its path relative to the input argument it came from: a
    file argument gives its base name, a directory the path below it, a glob the
    path below the glob's fixed prefix.
    """
    found: dict[str, str] = {}
    for arg in inputs:
        arg = os.fspath(arg)
        if glob.has_magic(arg):
            base = _glob_prefix(arg)
            hits = [p for p in glob.glob(arg, recursive=True) if os.path.isfile(p)]
            pairs = [(p, os.path.relpath(p, base)) for p in hits]
        elif os.path.isdir(arg):
            pairs = []
            for root, _, files in os.walk(arg):
                for f in files:
                    p = os.path.join(root, f)
                    pairs.append((p, os.path.relpath(p, arg)))
        elif os.path.isfile(arg):
            pairs = [(arg, os.path.basename(arg))]
        else:
            raise InputError(f"input {arg} does not exist; give files, directories or globs "
                             "of .parquet, .jsonl[.gz|.zst] or .tar shards")
        kept = [(p, n) for p, n in pairs if shard_format(p)]
        if not kept:
            if os.path.isfile(arg):
                raise InputError(f"input {arg}: unknown format; supported: .parquet, .jsonl, "
                                 ".jsonl.gz, .jsonl.zst, .tar")
            raise InputError(f"input {arg} holds no .parquet, .jsonl[.gz|.zst] or .tar shard")
        for p, n in kept:
            found.setdefault(os.path.realpath(p), n)
    paths = sorted(found)
    names: dict[str, str] = {}
    for p in paths:
        n = found[p]
        if need_unique_names and n in names:
            raise InputError(f"two shards have the same name {n!r} ({names[n]} and {p}); the "
                             "default sample key hashes the shard name, so pass --key-column "
                             "with a unique id column (or give the files distinct names)")
        names[n] = p
    return [Shard(i, p, found[p], shard_format(p)) for i, p in enumerate(paths)]


# ---------------------------------------------------------------- readers
def _text_bytes(col) -> int:
    if len(col) == 0:
        return 0
    return int(pc.sum(pc.binary_length(col)).as_py() or 0)


def _split(table: pa.Table, text_column: str, batch_bytes: int) -> Iterator[pa.Table]:
    """Slices of ``table`` with at most ``batch_bytes`` of caption text each."""
    col = table.column(text_column)
    if _text_bytes(col) <= batch_bytes:
        if table.num_rows:
            yield table
        return
    lens = pc.binary_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    start, acc = 0, 0
    for i, ln in enumerate(lens):
        if acc + ln > batch_bytes and i > start:
            yield table.slice(start, i - start)
            start, acc = i, 0
        acc += int(ln)
    if start < table.num_rows:
        yield table.slice(start)


def check_text_column(table: pa.Table, shard: Shard, text_column: str) -> None:
    if text_column not in table.column_names:
        raise InputError(f"{shard.path}: no column {text_column!r} (columns: "
                         f"{', '.join(table.column_names)}); choose one with --text-column")
    t = table.schema.field(text_column).type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
            or pa.types.is_null(t)):
        raise InputError(f"{shard.path}: column {text_column!r} is {t}, not a string column; "
                         "choose the caption column with --text-column")


def _parquet(shard: Shard, text_column: str, batch_bytes: int) -> Iterator[pa.Table]:
    try:
        f = pq.ParquetFile(shard.path)
        schema = f.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{shard.path}: cannot read parquet ({exc}); the file is truncated or "
                         "not parquet: re-export it") from None
    check_text_column(schema.empty_table(), shard, text_column)
    md = f.metadata
    text_idx = schema.get_field_index(text_column)
    total = 0
    for rg in range(md.num_row_groups):
        try:
            total += md.row_group(rg).column(text_idx).total_uncompressed_size
        except (IndexError, pa.ArrowException):
            total = 0
            break
    avg = max(1, total // max(1, md.num_rows))
    rows = int(min(max(1024, batch_bytes // avg), 1 << 22))
    try:
        for rb in f.iter_batches(batch_size=rows):
            yield from _split(pa.Table.from_batches([rb]), text_column, batch_bytes)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{shard.path}: cannot read parquet ({exc}); the file is truncated or "
                         "corrupt: re-export it") from None


class _ZstdLines(io.RawIOBase):
    """A zstd file as a raw stream that raises EOFError when the last frame
    is cut short (zstandard's stream_reader ends silently there)."""

    def __init__(self, path: str):
        import zstandard

        self._zstd = zstandard
        self._f = open(path, "rb")
        self._d = zstandard.ZstdDecompressor().decompressobj()
        self._buf = b""
        self._fed = False

    def readable(self):
        return True

    def readinto(self, b):
        while not self._buf:
            chunk = self._f.read(1 << 20)
            if not chunk:
                if self._fed and not self._d.eof:
                    raise EOFError("zstd stream ended before the end of its frame")
                return 0
            self._fed = True
            while chunk:
                self._buf += self._d.decompress(chunk)
                chunk = b""
                if self._d.eof:
                    chunk = self._d.unused_data
                    self._d = self._zstd.ZstdDecompressor().decompressobj()
                    self._fed = bool(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self):
        self._f.close()
        super().close()


def _open_text(path: str):
    if path.endswith(".zst"):
        return io.TextIOWrapper(io.BufferedReader(_ZstdLines(path)), encoding="utf-8",
                                errors="strict", newline="\n")
    if path.endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8", errors="strict", newline="\n")
    return open(path, "rt", encoding="utf-8", errors="strict", newline="\n")


def _jsonl(shard: Shard, text_column: str, batch_bytes: int) -> Iterator[pa.Table]:
    """JSON lines, one object per line; a blank line is an error (no silent skip)."""
    rows: list[dict] = []
    acc = 0
    line_no = 0
    try:
        with _open_text(shard.path) as fh:
            for line_no, line in enumerate(fh, 1):
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise InputError(f"{shard.path}: line {line_no} (row {line_no - 1}) is not "
                                     f"a JSON object ({exc.msg}); fix or remove the line") from None
                if not isinstance(obj, dict):
                    raise InputError(f"{shard.path}: line {line_no} (row {line_no - 1}) is a JSON "
                                     f"{type(obj).__name__}, not an object")
                v = obj.get(text_column)
                if text_column not in obj or not (v is None or isinstance(v, str)):
                    what = "has no field" if text_column not in obj else "has a non-string"
                    raise InputError(f"{shard.path}: line {line_no} (row {line_no - 1}) {what} "
                                     f"{text_column!r}; choose the caption field with --text-column")
                rows.append(obj)
                acc += len(v) if v else 0
                if acc >= batch_bytes // 4 or len(rows) >= 65536:
                    yield from _rows_table(rows, shard, text_column, batch_bytes, line_no - len(rows))
                    rows, acc = [], 0
    except (UnicodeDecodeError, EOFError, OSError) as exc:
        raise InputError(f"{shard.path}: cannot read past line {line_no} ({exc}); the file is "
                         "truncated or not UTF-8") from None
    except Exception as exc:  # zstandard raises its own error type for truncated frames
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{shard.path}: cannot read past line {line_no} ({exc}); the file is "
                         "truncated or corrupt") from None
    if rows:
        yield from _rows_table(rows, shard, text_column, batch_bytes, line_no - len(rows))


def _rows_table(rows, shard, text_column, batch_bytes, first_row) -> Iterator[pa.Table]:
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InputError(f"{shard.path}: rows {first_row}..{first_row + len(rows) - 1} have "
                         f"fields of mixed types ({exc}); make each field one type") from None
    if pa.types.is_null(table.schema.field(text_column).type):
        i = table.column_names.index(text_column)
        table = table.set_column(i, text_column, table.column(i).cast(pa.large_string()))
    yield from _split(table, text_column, batch_bytes)


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
                base = os.path.basename(m.name)
                if "." not in base:
                    continue
                stem, ext = base.split(".", 1)
                key = os.path.join(os.path.dirname(m.name), stem)
                if key != cur_key:
                    flush_sample()
                    cur_key, cur = key, {}
                    if acc >= batch_bytes // 4 or len(rows) >= 65536:
                        yield from _rows_table(rows, shard, out_col, batch_bytes, emitted)
                        emitted += len(rows)
                        rows, acc = [], 0
                ext = ext.lower()
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


def read_batches(shard: Shard, text_column: str, batch_bytes: int) -> Iterator[pa.Table]:
    """Tables of the shard's rows in order (all columns), text checked."""
    reader = {"parquet": _parquet, "jsonl": _jsonl, "tar": _tar}[shard.fmt]
    for table in reader(shard, text_column, batch_bytes):
        check_text_column(table, shard, text_column)
        yield table


def read_table(path: str, text_column: str = "text") -> pa.Table:
    """A whole shard as one table (for the ``match`` command and tests)."""
    shard = Shard(0, os.path.realpath(path), os.path.basename(path), shard_format(path) or "")
    if not shard.fmt:
        raise InputError(f"{path}: unknown format; supported: .parquet, .jsonl, .jsonl.gz, "
                         ".jsonl.zst, .tar")
    tables = list(read_batches(shard, text_column, 1 << 62))
    if not tables:
        raise InputError(f"{path}: holds no rows")
    return pa.concat_tables(tables, promote_options="permissive")


# ---------------------------------------------------------------- writers
def atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def atomic_write_parquet(path: str, table: pa.Table) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
