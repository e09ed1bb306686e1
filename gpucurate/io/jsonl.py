"""JSON-lines shards (plain, gzip, zstd): one object per line, one type per
field across the whole shard; a blank or broken line is an error."""

from __future__ import annotations

import io
import json
from typing import Iterator

import pyarrow as pa

from ..errors import InputError
from .common import json_value_problem, normal_text, rows_to_table, split
from .fs import open_gzip, open_input
from .shards import Shard

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _ZstdStream(io.RawIOBase):
    """A zstd file as a raw stream that raises EOFError when the last frame
    is cut short (zstandard's stream_reader ends silently there)."""

    def __init__(self, path: str):
        import zstandard

        self._zstd = zstandard
        self._f = open_input(path)
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


def open_lines(shard: Shard):
    """A binary stream of the shard's decompressed bytes. Compression is
    read from the magic bytes; a file named .gz or .zst must carry them (a
    zero-byte compressed file is a truncated one)."""
    path = shard.path
    with open_input(path) as f:
        head = f.read(4)
    if head[:2] == GZIP_MAGIC:
        return open_gzip(path)
    if head == ZSTD_MAGIC or (len(head) == 4 and head[1:] == b"\x2a\x4d\x18"
                              and head[0] & 0xF0 == 0x50):  # a frame, or a skippable frame
        return io.BufferedReader(_ZstdStream(path))
    if shard.compression:
        what = "is empty" if not head else f"does not start with {shard.compression}'s magic bytes"
        raise InputError(f"{path}: named .{shard.compression} but {what}; the file is truncated "
                         "or not compressed: re-create it")
    return open_input(path)


def count_lines(shard: Shard) -> int:
    n = 0
    try:
        with open_lines(shard) as f:
            for _ in f:
                n += 1
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - EOFError, OSError, zlib's and zstandard's own
        raise InputError(f"{shard.path}: cannot read past line {n} ({exc}); the file is "
                         "truncated or corrupt: re-create it") from None
    return n


DOUBLE_EXACT = 1 << 53  # integers a double holds exactly: |v| <= 2**53


def _where(shard: Shard, line_no: int) -> str:
    return f"{shard.path}: line {line_no} (row {line_no - 1})"


def _type_name(v) -> str:
    return "null" if v is None else type(v).__name__


def _parse_line(raw: bytes, shard: Shard, line_no: int, text_column: str, kinds: dict) -> dict:
    """One line as a dict, checked; ``kinds`` (field -> (JSON type, first
    line)) is updated only when the line is good."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{_where(shard, line_no)} is not valid UTF-8 (byte "
                         f"{exc.start} of the line: {raw[exc.start:exc.start + 4]!r}); "
                         "re-encode the file as UTF-8") from None
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise InputError(f"{_where(shard, line_no)} is not a JSON object "
                         f"({getattr(exc, 'msg', exc)}); fix or remove the line") from None
    except RecursionError:
        raise InputError(f"{_where(shard, line_no)} is nested deeper than JSON readers take; "
                         "fix or remove the line") from None
    if not isinstance(obj, dict):
        raise InputError(f"{_where(shard, line_no)} is a JSON {type(obj).__name__}, "
                         "not an object")
    v = obj.get(text_column)
    if text_column not in obj or not (v is None or isinstance(v, str)):
        what = "has no field" if text_column not in obj else "has a non-string"
        raise InputError(f"{_where(shard, line_no)} {what} {text_column!r}; choose "
                         "the caption field with --text-column")
    new = {}
    for k, x in obj.items():
        kind = _type_name(x)
        if kind != "null":
            seen = kinds.get(k)
            if seen is None:
                new[k] = (kind, line_no)
            elif seen[0] != kind and {seen[0], kind} != {"int", "float"}:
                raise InputError(
                    f"{_where(shard, line_no)}: field {k!r} is a JSON {kind}, but a "
                    f"{seen[0]} on line {seen[1]}; make each field one type in the "
                    "whole file")
        if isinstance(x, float) or (type(x) is int and abs(x) > DOUBLE_EXACT):
            # a double holds both only up to 2**53: in one table (one batch, or the
            # shard's batches unified) fractions and such integers do not fit
            mine, other = ("float", "wide") if isinstance(x, float) else ("wide", "float")
            was = kinds.get((k, other))
            if was is not None:
                said = {"float": "a fraction", "wide": "an integer past 2**53"}
                raise InputError(
                    f"{_where(shard, line_no)}: field {k!r} is {said[mine]}, but "
                    f"{said[other]} on line {was}: no column type holds both exactly (a "
                    "double cannot hold such an integer); make the field one type")
            if (k, mine) not in kinds:
                new[(k, mine)] = line_no
        if not isinstance(x, (bool, float)) and x is not None:
            why = json_value_problem(x) or json_value_problem(k)
            if why:
                raise InputError(f"{_where(shard, line_no)}: field {k!r} holds {why}")
    kinds.update(new)
    return obj


def read_jsonl(shard: Shard, text_column: str, batch_bytes: int,
               rejects: list | None = None) -> Iterator[pa.Table]:
    """Tables of the shard's lines. A bad line is an error; with ``rejects``
    (``--on-bad-row skip``) it is left out and recorded there instead (file,
    row, reason, raw bytes)."""
    rows: list[dict] = []
    lines: list = []  # each row's line number (and raw bytes, to record a reject)
    acc = 0
    line_no = 0
    # field -> (JSON type, first line holding it); (field, "float" | "wide") -> the
    # first line holding a fraction | an integer past 2**53
    kinds: dict = {}
    schema = None
    try:
        with open_lines(shard) as fh:
            for line_no, raw in enumerate(fh, 1):
                if line_no == 1 and raw[:3] == b"\xef\xbb\xbf":
                    raw = raw[3:]  # a byte-order mark: the file read as utf-8-sig
                try:
                    obj = _parse_line(raw, shard, line_no, text_column, kinds)
                except InputError as exc:
                    if rejects is None:
                        raise
                    rejects.append({"file": shard.path, "row": line_no - 1,
                                    "reason": str(exc), "raw": bytes(raw[:4096])})
                    continue
                rows.append(obj)
                lines.append((line_no, bytes(raw[:4096]) if rejects is not None else b""))
                # the whole line counts (a line's other fields may be most of it: an
                # image in base64); decoded, a line takes a few times its bytes
                acc += len(raw)
                if acc >= batch_bytes // 4 or len(rows) >= 65536:
                    table, schema = _rows_table(rows, shard, text_column, lines, schema,
                                                rejects)
                    yield from split(table, text_column, batch_bytes)
                    rows, lines, acc = [], [], 0
    except InputError:
        raise
    except (EOFError, OSError) as exc:
        raise InputError(f"{shard.path}: cannot read past line {line_no} ({exc}); the file is "
                         "truncated or corrupt: re-create it") from None
    except Exception as exc:  # noqa: BLE001 - zstandard's own error type for broken frames
        raise InputError(f"{shard.path}: cannot read past line {line_no} ({exc}); the file is "
                         "truncated or corrupt: re-create it") from None
    if rows:
        table, schema = _rows_table(rows, shard, text_column, lines, schema, rejects)
        yield from split(table, text_column, batch_bytes)


_TABLE_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


def _rows_table(rows, shard, text_column, lines, schema, rejects=None):
    """The rows as a table of the shard's schema (the first batch's, with
    types that were all null so far taken from later rows). A row whose
    values do not fit the rows before it (a nested value of another kind) is
    an error naming its line, or with ``rejects`` a rejected row."""
    while True:
        try:
            table = rows_to_table(rows)
            break
        except _TABLE_ERRORS as exc:
            k = _first_misfit(rows)
            line_no, raw = lines[k]
            why = (f"{_where(shard, line_no)}: a value does not fit the lines before it "
                   f"({exc}); make each field one type")
            if rejects is None:
                raise InputError(why) from None
            rejects.append({"file": shard.path, "row": line_no - 1, "reason": why, "raw": raw})
            rows, lines = rows[:k] + rows[k + 1:], lines[:k] + lines[k + 1:]
    table = normal_text(table, text_column)
    if schema is not None:
        table, schema = _conform(table, schema, shard, lines[0][0] - 1 if lines else 0)
    return table, _merge(schema, table.schema)


def _first_misfit(rows: list) -> int:
    """The first row that the rows before it cannot take into one table (a
    bisection: a prefix that reads reads whatever its length below)."""
    lo, hi = 0, len(rows) - 1  # rows[:lo] read; rows[:hi + 1] does not
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            rows_to_table(rows[:mid + 1])
            lo = mid + 1
        except _TABLE_ERRORS:
            hi = mid
    return lo


def _merge(schema, new):
    if schema is None:
        return new
    fields = []
    names = set()
    for f in schema:
        names.add(f.name)
        g = new.field(f.name) if f.name in new.names else None
        fields.append(g if g is not None and pa.types.is_null(f.type) else f)
    fields += [f for f in new if f.name not in names]
    return pa.schema(fields)


def _widens(src: pa.DataType, dst: pa.DataType) -> bool:
    """Whether a later batch's values of type ``src`` may take an earlier
    batch's type ``dst`` without changing kind: from nulls, between integers,
    integers to fractions, strings to strings, and so inside lists and
    structs. A number never becomes a string (one batch holding both is an
    error: so is a file read in several)."""
    t = pa.types
    if t.is_null(src) or src == dst:
        return True
    if t.is_integer(src):
        return t.is_integer(dst) or t.is_floating(dst)
    if t.is_floating(src):
        return t.is_floating(dst)
    if t.is_string(src) or t.is_large_string(src):
        return t.is_string(dst) or t.is_large_string(dst)
    if (t.is_list(src) or t.is_large_list(src)) and (t.is_list(dst) or t.is_large_list(dst)):
        return _widens(src.value_type, dst.value_type)
    if t.is_struct(src) and t.is_struct(dst):
        theirs = {dst.field(i).name: dst.field(i).type for i in range(dst.num_fields)}
        return all(src.field(i).name in theirs and
                   _widens(src.field(i).type, theirs[src.field(i).name])
                   for i in range(src.num_fields))
    return False


def _joined(a: pa.DataType, b: pa.DataType):
    """The type both ``a`` and ``b`` widen to (nulls inside lists and structs
    taking the other's type, a struct's fields the union of both), or None."""
    try:
        u = pa.unify_schemas([pa.schema([("x", a)]), pa.schema([("x", b)])],
                             promote_options="permissive").field("x").type
    except (pa.ArrowException, TypeError, ValueError):
        return None
    return u if _widens(a, u) and _widens(b, u) else None


def _conform(table, schema, shard, first_row):
    """Cast a later batch to the columns and types of the earlier ones, or
    both to a type they widen to (a list or struct whose values were null so
    far, a struct that gains a field): (the batch, the shard's schema so far),
    whatever the batch size."""
    cols, names, fields = [], [], []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            if col.type != f.type and not pa.types.is_null(f.type) and not (
                    pa.types.is_floating(col.type) and pa.types.is_integer(f.type)):
                # (fractions after integers stay fractions: the shard's columns are
                # unified as one batch would have read them, integers widened)
                try:
                    to = f.type if _widens(col.type, f.type) else _joined(f.type, col.type)
                    if to is None:  # a string read as a number, ...
                        raise ValueError("not the same kind of value")
                    col = col.cast(to)
                    f = f.with_type(to)
                except (pa.ArrowException, ValueError) as exc:
                    raise InputError(f"{shard.path}: field {f.name!r} in rows from {first_row} "
                                     f"is {col.type}, but {f.type} before ({exc}); make each "
                                     "field one type in the whole file") from None
        else:
            col = pa.nulls(table.num_rows, f.type)
        cols.append(col)
        names.append(f.name)
        fields.append(f)
    for name in table.column_names:
        if name not in schema.names:
            cols.append(table.column(name))
            names.append(name)
    return pa.table(cols, names=names), pa.schema(fields)
