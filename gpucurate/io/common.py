"""What every reader shares: the text column's checks and its normal form,
and slicing tables to at most ``batch_bytes`` of caption text."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError


def _text_bytes(col) -> int:
    if len(col) == 0:
        return 0
    return int(pc.sum(pc.binary_length(col)).as_py() or 0)


def split(table: pa.Table, text_column: str, batch_bytes: int) -> Iterator[pa.Table]:
    """Slices of ``table`` with at most ``batch_bytes`` of caption text each
    (a single larger caption makes a slice of its own)."""
    col = table.column(text_column)
    if _text_bytes(col) <= batch_bytes:
        if table.num_rows:
            yield table
        return
    lens = pc.binary_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    ends = np.cumsum(lens)
    start, base = 0, 0
    n = len(lens)
    while start < n:
        # the last row that keeps the slice within batch_bytes (at least one row)
        stop = int(np.searchsorted(ends, base + batch_bytes, side="right"))
        stop = max(stop, start + 1)
        yield table.slice(start, stop - start)
        base = int(ends[stop - 1])
        start = stop


def rows_to_table(rows: list) -> pa.Table:
    """A table of dicts with a column for every key of any row (in order of
    first appearance; ``pa.Table.from_pylist`` would keep the first row's keys
    only and drop the others' silently)."""
    if not rows:
        return pa.table({})
    return pa.Table.from_struct_array(pa.array(rows))


INT64 = (-(1 << 63), (1 << 63) - 1)


def json_value_problem(v) -> str | None:
    """What keeps a decoded JSON value from a faithful Arrow column, or None:
    a lone surrogate in a string (not Unicode text), or an integer outside
    int64 (it would silently become a float)."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (f"a lone surrogate ({v[exc.start:exc.end]!r}), which is not Unicode text; "
                    "fix the \\u escape")
        return None
    if isinstance(v, bool) or v is None or isinstance(v, float):
        return None
    if isinstance(v, int):
        if not INT64[0] <= v <= INT64[1]:
            return f"the integer {v}, outside the 64-bit range; store it as a string"
        return None
    if isinstance(v, dict):
        for k, x in v.items():
            why = json_value_problem(k) or json_value_problem(x)
            if why:
                return why
        return None
    if isinstance(v, list):
        for x in v:
            why = json_value_problem(x)
            if why:
                return why
    return None


def is_text_type(t) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
            or pa.types.is_null(t) or (pa.types.is_dictionary(t) and is_text_type(t.value_type)
                                       and not pa.types.is_null(t.value_type)))


def check_text_column(schema: pa.Schema, where: str, text_column: str) -> None:
    names = schema.names
    if names.count(text_column) > 1:
        raise InputError(f"{where}: has {names.count(text_column)} columns named "
                         f"{text_column!r}; rename the duplicates so the caption column is one")
    if text_column not in names:
        raise InputError(f"{where}: no column {text_column!r} (columns: "
                         f"{', '.join(names)}); choose one with --text-column")
    t = schema.field(text_column).type
    if not is_text_type(t):
        raise InputError(f"{where}: column {text_column!r} is {t}, not a string column; "
                         "choose the caption column with --text-column")


def normal_text(table: pa.Table, text_column: str) -> pa.Table:
    """The table with its text column as plain ``string``/``large_string``
    (dictionary-encoded, ``string_view`` and all-null columns decoded)."""
    i = table.column_names.index(text_column)
    t = table.schema.field(i).type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return table
    return table.set_column(i, text_column, table.column(i).cast(pa.large_string()))


def first_bad_utf8(arr: pa.Array) -> int:
    """Row of the first non-UTF-8 value of a string array, or -1 (pyarrow
    trusts a file's string columns; this checks their bytes)."""
    from ..columns import buffers

    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary.take(arr.indices) if len(arr) else arr.dictionary[:0]
    if pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.large_binary()).cast(pa.large_string(), safe=False)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return -1
    from ..kernels.cpu import first_invalid_utf8

    tb = buffers(arr, validate=False)
    return int(first_invalid_utf8(tb.data, tb.offsets, tb.valid))


def bad_utf8_rows(arr: pa.Array) -> list:
    """Every row of a string array whose value is not UTF-8."""
    out, base = [], 0
    while base < len(arr):
        bad = first_bad_utf8(arr.slice(base))
        if bad < 0:
            break
        out.append(base + bad)
        base += bad + 1
    return out


def unviewed(t: pa.DataType) -> pa.DataType:
    """View types as their large twins: pyarrow 26 has no take/filter kernel for
    string_view or binary_view (the parquet pages are the same)."""
    if pa.types.is_string_view(t):
        return pa.large_string()
    if pa.types.is_binary_view(t):
        return pa.large_binary()
    return t


def without_views(table: pa.Table) -> pa.Table:
    """The table with its view columns as their large twins (to filter or take)."""
    for i, f in enumerate(table.schema):
        if unviewed(f.type) is not f.type:
            table = table.set_column(i, f.name, table.column(i).cast(unviewed(f.type)))
    return table


def _is_text(t) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _holds_text(t) -> bool:
    """Whether values of type ``t`` hold strings (at any depth)."""
    if _is_text(t):
        return True
    if pa.types.is_dictionary(t):
        return _holds_text(t.value_type)
    if pa.types.is_map(t):
        return _holds_text(t.key_type) or _holds_text(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _holds_text(t.value_type)
    if pa.types.is_struct(t):
        return any(_holds_text(t.field(i).type) for i in range(t.num_fields))
    return False


def bad_utf8_rows_deep(arr: pa.Array) -> list:
    """Every row of ``arr`` holding a non-UTF-8 string, at any depth (in a
    list's values, a struct's fields, a map's keys and items, a dictionary)."""
    t = arr.type
    if _is_text(t) or (pa.types.is_dictionary(t) and _is_text(t.value_type)):
        return bad_utf8_rows(arr)
    if not _holds_text(t) or not len(arr):
        return []
    if pa.types.is_dictionary(t):
        bad = bad_utf8_rows_deep(arr.dictionary)
        if not bad:
            return []
        hit = np.zeros(len(arr.dictionary), bool)
        hit[bad] = True
        idx = arr.indices.fill_null(0).to_numpy(zero_copy_only=False)
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), bool)
        return np.flatnonzero(valid & hit[idx]).tolist()
    if pa.types.is_map(t):
        arr = arr.view(pa.list_(pa.field("entries", pa.struct([t.key_field, t.item_field]),
                                         nullable=False)))
        t = arr.type
    if pa.types.is_struct(t):
        out: set = set()
        for i in range(t.num_fields):
            out.update(bad_utf8_rows_deep(arr.field(i)))
        return sorted(out)
    bad = bad_utf8_rows_deep(arr.flatten())  # lists: each bad value's row
    if not bad:
        return []
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
    return sorted(set(parents[bad].tolist()))


def drop_bad_strings(table: pa.Table, where: str, first_row: int, rejects: list) -> pa.Table:
    """The table without its rows holding a non-UTF-8 string (in any string
    column); each such row is recorded in ``rejects`` (``--on-bad-row skip``)."""
    bad: dict = {}
    for name, col in zip(table.column_names, table.columns):
        if not _holds_text(col.type):
            continue
        row = 0
        for chunk in col.chunks:
            for r in bad_utf8_rows_deep(chunk):
                bad.setdefault(row + r, name)
            row += len(chunk)
    if not bad:
        return table
    for r in sorted(bad):
        raw = table.column(bad[r])[r].cast(pa.large_binary()).as_py() if _is_text(
            table.schema.field(bad[r]).type) else None  # (a nested value: its row alone)
        rejects.append({"file": where, "row": first_row + r,
                        "reason": f"column {bad[r]!r} is not valid UTF-8",
                        "raw": (raw or b"")[:4096]})
    keep = np.ones(table.num_rows, bool)
    keep[sorted(bad)] = False
    return without_views(table).filter(pa.array(keep))


def check_other_strings(table: pa.Table, text_column: str, where: str, first_row: int) -> None:
    """Every string column other than the caption holds UTF-8 (they are
    copied into the curated parquet, which must stay valid)."""
    for name, col in zip(table.column_names, table.columns):
        if name == text_column:
            continue
        if not _holds_text(col.type):
            continue
        row = 0
        for chunk in col.chunks:
            bad = next(iter(bad_utf8_rows_deep(chunk)), -1)
            if bad >= 0:
                raise InputError(f"{where}: column {name!r}, row {first_row + row + bad} is not "
                                 "valid UTF-8; re-encode the column as UTF-8 (or store it as "
                                 "binary) and re-export the file")
            row += len(chunk)
