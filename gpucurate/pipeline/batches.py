"""What both passes do to a batch of a shard's rows: read it, key it, take
its text column as buffers, route it by language and match it."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..columns import buffers, chunks_of
from ..config import CurateConfig
from ..errors import InputError
from ..io import Shard, atomic_write_parquet, read_batches
from ..io.common import without_views
from ..keys import is_key_type, key_hashes, row_key_hashes
from .layout import ALL, OutputLayout


ADDED = ("entry_ids",)  # columns curation adds (and "lang" when worldwide)


def check_added(cfg: CurateConfig, shard: Shard, names) -> None:
    for col in ADDED + (("lang",) if cfg.worldwide else ()):
        if col in names and col != cfg.lang_column:
            raise InputError(f"{shard.path}: already has a column {col!r}, which "
                             "curation adds; rename or drop it")


def pass1_columns(cfg: CurateConfig, shard: Shard, names) -> list:
    """The columns pass 1 reads: the text, and the key (checked here, before
    any output is written), group and language columns (and a download
    folder's status)."""
    cols = [cfg.text_column]
    if shard.tar is not None and "status" in names:
        cols.append("status")
    if cfg.key_column and (cfg.group_column or cfg.key_column not in names
                           or not _no_nulls(shard, cfg.key_column, names)):
        cols.append(cfg.key_column)  # a key column the footer does not vouch for is read
    if cfg.group_column:
        cols.append(cfg.group_column)
    if cfg.lang_column:
        cols.append(cfg.lang_column)
    return list(dict.fromkeys(cols))


def _no_nulls(shard: Shard, column: str, names) -> bool:
    """A parquet key column of integers or strings whose footer shows no null:
    pass 1 need not read it (pass 2 hashes it, and would still refuse a null)."""
    from ..io.parquet import no_nulls
    from ..io import shard_schema

    t = shard_schema(shard).field(column).type
    ok_type = (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
               or pa.types.is_binary(t) or pa.types.is_large_binary(t))
    return ok_type and no_nulls(shard.path, column)


def shard_batches(cfg: CurateConfig, shard: Shard, max_rows: int | None,
                  columns: list | None = None, tally: dict | None = None,
                  rejects: list | None = None, spans=None):
    """(table, first_row) of the shard, stopping after max_rows rows (only
    ``columns`` of a parquet shard when given). The parquet of a download
    folder gives only its rows whose ``status`` is ``success`` (the others,
    failed downloads, are counted in ``tally["failed_downloads"]``); rows are
    numbered among those given. With ``--on-bad-row skip`` the bad rows
    are left out (so that both passes number the same rows) and recorded in
    ``rejects`` when given; every column is then read, to check them all.
    ``spans``: a tar shard's samples' byte ranges (``io.read_batches``)."""
    row = 0
    skip = cfg.on_bad_row == "skip"
    if skip:
        rejects = [] if rejects is None else rejects
        columns = None
    # the rows are numbered as the run that matched them numbered them
    # (rebalance: its source run's key column, which may be none)
    kc = cfg.extra["source_key_column"] if "source_key_column" in cfg.extra else cfg.key_column
    # --limit with skip: the readers record the bad rows of a whole batch (jsonl: of
    # every batch of a chunk) before the limit cuts it; each bad row is placed by the
    # good rows read before it (readers number rows from the file's first, every row
    # good or bad), so that those past the last row taken are no part of the run
    placed: list = []   # (index in rejects, good rows the reader gave before it)
    mark = 0            # rejects up to here are placed
    given = 0           # good rows the reader gave before this batch
    for table in read_batches(shard, cfg.text_column, cfg.batch_bytes, columns,
                              rejects if skip else None, spans):
        if skip:
            for i in range(mark, len(rejects)):
                placed.append((i, rejects[i]["row"] - len(placed)))
            mark = len(rejects)
        n_read = table.num_rows
        where = None  # rows of the batch as read that remain (None: all)
        # a download folder's failed rows first: the rows are numbered among those
        # downloaded, the null keys' rows too (whatever the batch size)
        failed = None
        if shard.tar is not None and "status" in table.column_names:
            ok = pc.fill_null(pc.equal(table.column("status").cast(pa.string()), "success"),
                              False)
            n_ok = int(pc.sum(ok).as_py() or 0)
            if n_ok < table.num_rows:
                okn = np.asarray(ok.to_numpy(zero_copy_only=False), bool)
                failed, where = np.flatnonzero(~okn), np.flatnonzero(okn)
                table = without_views(table).filter(ok)
        null_at = mark
        if skip and kc and kc in table.column_names and table.column(kc).null_count:
            nulls = pc.is_null(table.column(kc)).to_numpy(zero_copy_only=False)
            befores = np.sort(np.array([b for _, b in placed], np.int64))
            for r in np.nonzero(nulls)[0]:
                read = int(r if where is None else where[r])
                # its row in the file: the rows the reader gave before it, and the
                # bad rows among them
                g = given + read
                rejects.append({"file": shard.path,
                                "row": g + int(np.searchsorted(befores, g, side="right")),
                                "reason": f"null key in column {kc!r}", "raw": b"",
                                "_read": read})
            table = without_views(table).filter(pa.array(~nulls))
            kept = np.flatnonzero(~nulls)
            where = kept if where is None else where[kept]
            mark = len(rejects)
        last = None  # the limit is reached in this batch: the last row taken, as read
        if max_rows is not None and row + table.num_rows >= max_rows:
            if row + table.num_rows > max_rows:
                table = table.slice(0, max_rows - row)
            k = max_rows - row - 1
            last = (int(where[k]) if where is not None else k) if k >= 0 else -1
        if tally is not None and failed is not None:
            tally["failed_downloads"] = tally.get("failed_downloads", 0) + int(
                failed.size if last is None else np.count_nonzero(failed <= last))
        if last is not None and skip:
            # the bad rows after the last row taken: not read, as far as the run goes
            cut = given + last  # good rows given before the first one dropped, less one
            drop = {i for i, before in placed if before > cut}
            drop |= {i for i in range(null_at, len(rejects)) if rejects[i]["_read"] > last}
            if drop:
                rejects[:] = [r for i, r in enumerate(rejects) if i not in drop]
        given += n_read
        if skip:
            for r in rejects[null_at:]:
                r.pop("_read", None)
        if table.num_rows:
            check_added(cfg, shard, table.column_names)
            yield table, row
        row += table.num_rows
        if max_rows is not None and row >= max_rows:
            return


def row_keys(cfg: CurateConfig, shard: Shard, table: pa.Table, first_row: int,
             nulls_ok: bool = False) -> np.ndarray:
    """The draw key of every row: the key column's hash, or shard name and
    row. ``nulls_ok``: a row of null key gets 0 (rows that are no sample's:
    rebalance's rows of no survivor), else it is an error naming the row."""
    if cfg.key_column is None:
        return row_key_hashes(shard.name, first_row, table.num_rows)
    if cfg.key_column not in table.column_names:
        raise InputError(f"{shard.path}: no key column {cfg.key_column!r} (columns: "
                         f"{', '.join(table.column_names)})")
    col = table.column(cfg.key_column)
    if nulls_ok and col.null_count:
        valid = pc.is_valid(col)
        out = np.zeros(table.num_rows, np.uint64)
        out[np.asarray(valid.to_numpy(zero_copy_only=False), bool)] = key_hashes(
            col.filter(valid), where=shard.path, first_row=first_row)
        return out
    return key_hashes(col, where=shard.path, first_row=first_row)


def check_keys(cfg: CurateConfig, shard: Shard, table: pa.Table, first_row: int) -> None:
    """The key column is there, of integers or strings, with no null (pass 1
    checks it before any output is written; pass 2 hashes it)."""
    if cfg.key_column not in table.column_names:
        raise InputError(f"{shard.path}: no key column {cfg.key_column!r} (columns: "
                         f"{', '.join(table.column_names)})")
    col = table.column(cfg.key_column)
    if not is_key_type(col.type):
        key_hashes(col, where=shard.path, first_row=first_row)  # its error names the type
    if col.null_count:
        key_hashes(col, where=shard.path, first_row=first_row)  # its error names the row


def group_keys(cfg: CurateConfig, shard: Shard, table: pa.Table, first: int) -> np.ndarray:
    if cfg.group_column not in table.column_names:
        raise InputError(f"{shard.path}: no group column {cfg.group_column!r} (columns: "
                         f"{', '.join(table.column_names)})")
    return key_hashes(table.column(cfg.group_column), where=f"{shard.path} (group column)",
                      first_row=first, fix=f"give every row its group in {cfg.group_column!r}")


def text_buffers(table: pa.Table, cfg: CurateConfig, shard: Shard, first_row: int):
    """(TextBuffers, Arrow array) of the batch's text column, checked UTF-8."""
    col = table.column(cfg.text_column)
    if pa.types.is_null(col.type):
        col = col.cast(pa.large_string())
    chunks = chunks_of(col)
    arr = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
    return buffers(arr, where=shard.path, row_base=first_row), arr


def by_language(w, table: pa.Table, arr: pa.Array, shard: Shard, li=None):
    """(language index per row or None, [(language, rows or None for all, buffers)]).
    ``li``: the routing already done (pass 1 keeps language-ID results for pass 2)."""
    if w.router is None:
        return None, [(ALL, None, None)]
    if li is None:
        li = w.router.indices(table, arr, shard.path)
    groups = []
    for i, code in enumerate(w.langs):
        rows = np.nonzero(li == i)[0]
        if rows.size:
            sub = buffers(arr.take(pa.array(rows)), validate=False)
            groups.append((code, rows, sub))
    return li, groups


def match_groups(w, groups, tb):
    """Yield (language, rows, host offsets, host ids, device offsets, device ids)."""
    for code, rows, sub in groups:
        eng = w.engines[code]
        off, ids = eng.match_native(tb if rows is None else sub)
        yield code, rows, eng.to_host(off), eng.to_host(ids), off, ids


def lists_in_row_order(n: int, parts: list) -> tuple:
    """The CSR (offsets int64, ids int32) of a batch of ``n`` rows from its
    per-language CSRs ``(rows, offsets, ids)`` (``rows``: the batch's rows of
    that language; None: all of them, in order); rows of no language have
    empty lists."""
    if len(parts) == 1 and parts[0][0] is None:
        _, off, ids = parts[0]
        return off, ids
    off = np.zeros(n + 1, np.int64)
    lens = np.zeros(n, np.int64)
    for rows, h_off, _ in parts:
        lens[rows] = np.diff(h_off)
    np.cumsum(lens, out=off[1:])
    flat = np.empty(int(off[-1]), np.int32)
    for rows, h_off, h_ids in parts:
        g = np.diff(h_off)
        flat[np.repeat(off[rows] - h_off[:-1], g) + np.arange(h_ids.size)] = h_ids
    return off, flat


def text_ids(lens: np.ndarray, first: int, rows: np.ndarray | None = None) -> np.ndarray:
    """The inverted index's text ids: row ``first + rows[i]`` (``rows``: all the
    batch's rows when None) repeated ``lens[i]`` times."""
    ids = np.arange(first, first + lens.size, dtype=np.uint32) if rows is None else \
        (rows + first).astype(np.uint32)
    return np.repeat(ids, lens)  # one pass over the pairs, already uint32


def write_rejects(layout: OutputLayout, shard: Shard, rejects: list) -> None:
    """The rows ``--on-bad-row skip`` left out of a shard: rejected/part-N.parquet."""
    os.makedirs(layout.rejected_dir, exist_ok=True)
    rejects = sorted(rejects, key=lambda r: r["row"])  # in file order, whatever the batches
    atomic_write_parquet(layout.rejected(shard.index), pa.table({
        "file": pa.array([r["file"] for r in rejects], pa.string()),
        "row": pa.array([r["row"] for r in rejects], pa.int64()),
        "reason": pa.array([r["reason"] for r in rejects], pa.string()),
        "raw": pa.array([r["raw"] for r in rejects], pa.binary())}))


def union_schema(a: pa.Schema, b: pa.Schema, shard: Shard, first: int) -> pa.Schema:
    """The columns of two batches of a jsonl or tar shard, in order of first
    appearance (a column all null so far takes a later batch's type), as one
    batch of every row would have them: a tar shard's caption column stays
    last, after ``.json`` fields that first appear in a later batch."""
    if a.equals(b):
        return a
    try:
        u = pa.unify_schemas([a, b], promote_options="permissive")
    except (pa.ArrowException, TypeError, ValueError) as exc:
        bad = [f.name for f in b if f.name in a.names and a.field(f.name).type != f.type]
        raise InputError(f"{shard.path}: field {bad[0] if bad else '?'!r} in rows from {first} "
                         f"is of another type than before ({exc}); make each field one type in "
                         "the whole shard") from None
    if shard.fmt == "tar" and a.names and u.names[-1] != a.names[-1]:
        text = a.names[-1]  # the tar reader's columns: __key__, the json fields, the caption
        u = pa.schema([f for f in u if f.name != text] + [u.field(text)])
    return u
