"""Per-column facts of a parquet file (sizes, null counts), read from its
footer's Thrift bytes.

pyarrow's per-column metadata (``RowGroupMetaData.column``) builds Arrow's C++
``ColumnChunkMetaData``, which checks the chunk's size statistics against the
schema and throws a C++ exception that pyarrow 26 does not turn into a Python
one: a footer whose histograms do not fit its schema (a flipped bit, a faulty
writer) ends the whole process with ``std::terminate``, where reading the same
column raises ``OSError``. So the project never asks pyarrow for a user file's
column metadata: it serializes the footer (``FileMetaData.write_metadata_file``
copies the Thrift structure and builds no column metadata) and reads the few
fields it needs here, in Thrift's compact protocol. Whether a column is whole
is left to the read, which raises.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

# Thrift compact protocol types
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = \
    range(1, 13)


@dataclass(frozen=True)
class ColumnFacts:
    path: str  # path_in_schema, dotted ("tags.list.element")
    uncompressed: int | None  # total_uncompressed_size
    null_count: int | None  # the statistics' null count, when the writer wrote one


@dataclass(frozen=True)
class RowGroupFacts:
    num_rows: int
    total_byte_size: int
    columns: tuple


class _Compact:
    """A reader of Thrift's compact protocol over bytes."""

    def __init__(self, buf: bytes):
        self.b = buf
        self.p = 0

    def byte(self) -> int:
        c = self.b[self.p]
        self.p += 1
        return c

    def varint(self) -> int:
        out = shift = 0
        while True:
            c = self.byte()
            out |= (c & 0x7F) << shift
            if c < 0x80:
                return out
            shift += 7
            if shift > 70:
                raise ValueError("varint too long")

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def binary(self) -> bytes:
        n = self.varint()
        if n < 0 or self.p + n > len(self.b):
            raise ValueError("binary past the end")
        v = self.b[self.p:self.p + n]
        self.p += n
        return v

    def list_header(self) -> tuple:
        h = self.byte()
        n = h >> 4
        if n == 15:
            n = self.varint()
        return n, h & 0x0F

    def fields(self):
        """(field id, type) of a struct's fields, to its stop byte."""
        last = 0
        while True:
            h = self.byte()
            if h == 0:
                return
            t = h & 0x0F
            d = h >> 4
            fid = last + d if d else self.zigzag()
            last = fid
            yield fid, t

    def skip(self, t: int, depth: int = 0, in_list: bool = False) -> None:
        if depth > 64:
            raise ValueError("nested too deep")
        if t in (_TRUE, _FALSE):
            if in_list:  # a list's booleans take a byte each; a field's none
                self.p += 1
        elif t == _BYTE:
            self.p += 1
        elif t in (_I16, _I32, _I64):
            self.varint()
        elif t == _DOUBLE:
            self.p += 8
        elif t == _BINARY:
            self.binary()
        elif t in (_LIST, _SET):
            n, et = self.list_header()
            for _ in range(n):
                self.skip(et, depth + 1, True)
        elif t == _MAP:
            n = self.varint()
            if n:
                kv = self.byte()
                for _ in range(n):
                    self.skip(kv >> 4, depth + 1, True)
                    self.skip(kv & 0x0F, depth + 1, True)
        elif t == _STRUCT:
            for _, ft in self.fields():
                self.skip(ft, depth + 1)
        else:
            raise ValueError(f"unknown Thrift type {t}")
        if self.p > len(self.b):
            raise ValueError("past the end")


def _statistics(r: _Compact) -> int | None:
    null_count = None
    for fid, t in r.fields():
        if fid == 3 and t == _I64:
            null_count = r.zigzag()
        else:
            r.skip(t)
    return null_count


def _column_meta(r: _Compact) -> tuple:
    path, size, nulls = "", None, None
    for fid, t in r.fields():
        if fid == 3 and t == _LIST:
            n, _ = r.list_header()
            path = ".".join(r.binary().decode("utf-8", "replace") for _ in range(n))
        elif fid == 6 and t == _I64:
            size = r.zigzag()
        elif fid == 12 and t == _STRUCT:
            nulls = _statistics(r)
        else:
            r.skip(t)
    return path, size, nulls


def _column_chunk(r: _Compact) -> ColumnFacts:
    facts = ("", None, None)
    for fid, t in r.fields():
        if fid == 3 and t == _STRUCT:
            facts = _column_meta(r)
        else:
            r.skip(t)  # an encrypted column's metadata (field 9) stays unknown
    return ColumnFacts(*facts)


def _row_group(r: _Compact) -> RowGroupFacts:
    cols: list = []
    rows = size = 0
    for fid, t in r.fields():
        if fid == 1 and t == _LIST:
            n, _ = r.list_header()
            cols = [_column_chunk(r) for _ in range(n)]
        elif fid == 2 and t == _I64:
            size = r.zigzag()
        elif fid == 3 and t == _I64:
            rows = r.zigzag()
        else:
            r.skip(t)
    return RowGroupFacts(rows, size, tuple(cols))


def parse_footer(thrift: bytes) -> list:
    """[RowGroupFacts] of a serialized FileMetaData (Thrift compact bytes)."""
    r = _Compact(thrift)
    groups: list = []
    for fid, t in r.fields():
        if fid == 4 and t == _LIST:
            n, _ = r.list_header()
            groups = [_row_group(r) for _ in range(n)]
        else:
            r.skip(t)
    return groups


def row_group_facts(metadata) -> list | None:
    """[RowGroupFacts] of a ``pyarrow.parquet.FileMetaData``, or None when its
    footer cannot be read here (encrypted, or not what the format says)."""
    try:
        sink = pa.BufferOutputStream()
        metadata.write_metadata_file(sink)
        buf = sink.getvalue().to_pybytes()
        # "PAR1", the Thrift FileMetaData, its 4-byte little-endian length, "PAR1"
        if len(buf) < 12 or buf[:4] != b"PAR1" or buf[-4:] != b"PAR1":
            return None
        n = int.from_bytes(buf[-8:-4], "little")
        if n != len(buf) - 12:
            return None
        return parse_footer(buf[4:4 + n])
    except (pa.ArrowException, OSError, ValueError, IndexError):
        return None
