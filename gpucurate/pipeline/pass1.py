"""Pass 1 of one shard: match and count; write its sparse counts and marker."""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pyarrow as pa

import pyarrow.parquet as pq

from ..errors import InputError
from ..io import Shard, atomic_write_bytes, atomic_write_json, atomic_write_parquet, shard_schema
from ..io.atomic import commit, tmp_path
from ..log import Progress
from .batches import (by_language, check_added, check_keys, group_keys, lists_in_row_order,
                      match_groups, pass1_columns, row_keys, shard_batches, text_buffers,
                      text_ids, union_schema, write_rejects)
from .groups import choice_values, write_group_choices
from .layout import ALL, OutputLayout
from .spill import RowsCache, SpillWriter
from .stream import Behind, prefetch


def count_device_batch(eng, data, offsets, valid, counts, first: int, where: str,
                       save_matches: bool = False) -> dict:
    """Pass 1 of one batch of captions already on the GPU (Arrow-layout device
    buffers, e.g. a cuDF column's): UTF-8 check, match and count into the
    device array ``counts``; only scalars come back (and, with ``save_matches``,
    the batch's lists: each row's length and the entry ids, uint32)."""
    eng.check_utf8(data, offsets, valid, where, first)
    m_off, m_ids = eng.match_device(data, offsets, valid)
    eng.count_into(m_ids, counts)
    n = int(valid.size)
    lens = eng.xp.diff(m_off)
    r = {"captions": n, "nulls": n - int(valid.sum()),
         "matched": int(eng.xp.count_nonzero(lens))}
    if save_matches:
        r["lens"] = eng.to_host(lens)
        r["entry_id"] = _u32(eng.to_host(m_ids))
    return r


class MatchIndex:
    """MetaCLIP's inverted index of a shard for ``--save-matches``:
    (entry_id, text_id) uint32 (and lang when worldwide), written batch by
    batch as one row group each (text ids rise from row group to row group),
    on a thread of its own, to a temporary file renamed when whole."""

    def __init__(self, path: str, langs: list | None):
        self.path, self.langs = path, langs
        self.tmp = tmp_path(path)
        fields = [("entry_id", pa.uint32()), ("text_id", pa.uint32())]
        if langs is not None:
            fields.append(("lang", pa.dictionary(pa.int16(), pa.string())))
        self.schema = pa.schema(fields)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # text ids rise: delta-encoded; entry ids repeat: a dictionary. On
        # 3.5M generated pairs (Zipf entry ids): 0.17 s and 9.1 MB with
        # dictionaries on both, 0.10 s and 5.1 MB so
        self.writer = pq.ParquetWriter(
            self.tmp, self.schema, compression="zstd",
            use_dictionary=["entry_id"] + (["lang"] if langs is not None else []),
            column_encoding={"text_id": "DELTA_BINARY_PACKED"})
        # a batch is one row group, whatever its number of pairs (the writer's
        # default limit would end a group inside a caption's pairs)
        self.behind = Behind(lambda t: self.writer.write_table(t, row_group_size=max(
            1, t.num_rows)), name="gpucurate-matches")

    def write(self, lens: np.ndarray, ids: np.ndarray, li: np.ndarray | None,
              first: int) -> None:
        """One batch of rows from ``first``: their list lengths, their ids in
        row order and (worldwide) each row's language index."""
        cols = [pa.array(_u32(ids), pa.uint32()), pa.array(text_ids(lens, first), pa.uint32())]
        if self.langs is not None:
            cols.append(pa.DictionaryArray.from_arrays(
                pa.array(np.repeat(li.astype(np.int16), lens), pa.int16()),
                pa.array(self.langs, pa.string())))
        self.behind.put(pa.Table.from_arrays(cols, schema=self.schema))

    def close(self) -> None:
        self.behind.close()
        self.writer.close()
        commit(self.tmp, self.path)

    def abort(self) -> None:
        self.behind.abort()
        try:
            self.writer.close()
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)


def _read_stage(w, cfg, shard: Shard, batches):
    """(table, first row, text buffers, text array, language indices) per
    batch. With language ID, the reading stage checks the captions and has
    them identified, so that the language-ID processes work on the next batch
    while this one is matched; otherwise those are left to the matching stage
    (None)."""
    lid = w.router is not None and cfg.lang_column is None
    for table, first in batches:
        if not lid:
            yield table, first, None, None, None
            continue
        tb, arr = text_buffers(table, cfg, shard, first)  # checked UTF-8 before LID reads it
        yield table, first, tb, arr, w.router.indices(table, arr, shard.path)


class _Both:
    """Pass 1's lists written to several writers (MetaCLIP's index, kept, and
    the spill pass 2 reads)."""

    def __init__(self, writers: list):
        self.writers = writers

    def write(self, *a) -> None:
        for w in self.writers:
            w.write(*a)

    def close(self) -> None:
        for w in self.writers:
            w.close()

    def abort(self) -> None:
        for w in self.writers:
            w.abort()


def _u32(ids: np.ndarray) -> np.ndarray:
    """Entry ids (< 2**30) as uint32: the same bits, no copy, when int32."""
    return ids.view(np.uint32) if ids.dtype == np.int32 else ids.astype(np.uint32)


def _check_keys_on_host(cfg, shard: Shard, names, max_rows: int | None) -> None:
    """The key column of a shard the GPU reads (the text alone), checked on
    the host as the arrow path checks it: there, of integers or strings, with
    no null (a null key stopped the run only in pass 2, after pass 1's outputs)."""
    if cfg.key_column not in names:
        raise InputError(f"{shard.path}: no key column {cfg.key_column!r} (columns: "
                         f"{', '.join(names)})")
    from ..io.parquet import open_parquet

    first = 0
    for b in open_parquet(shard.path).iter_batches(batch_size=1 << 20,
                                                   columns=[cfg.key_column]):
        if max_rows is not None and first >= max_rows:
            break
        t = pa.Table.from_batches([b])
        check_keys(cfg, shard, t if max_rows is None else t.slice(0, max_rows - first), first)
        first += b.num_rows


def pass1_shard(w, layout: OutputLayout, shard: Shard, max_rows: int | None,
                spill: bool = False) -> dict:
    """Match and count one shard (``w``: this process's
    :class:`~gpucurate.pipeline.worker.Worker`); write its sparse counts and
    marker. A shard whose marker exists is not read again. Its matches are
    written batch by batch to ``matches/`` with --save-matches, and when
    ``spill`` (pass 2 follows) to ``work/matches/`` too, in the raw form pass 2
    reads fastest."""
    cfg = w.cfg
    layout = w.local(layout)
    marker = layout.pass1_marker(shard.index)
    if os.path.exists(marker):
        with open(marker) as f:
            return json.load(f)
    ww = w.router is not None
    writers = []
    if cfg.save_matches:
        writers.append(MatchIndex(layout.matches(shard.index), w.langs if ww else None))
    if spill:
        writers.append(SpillWriter(layout.work_matches(shard.index), ww))
    inv = None if not writers else writers[0] if len(writers) == 1 else _Both(writers)
    spans = None
    if shard.fmt == "tar" and "webdataset" in cfg.outputs:  # the WebDataset writer then
        from .wds_out import SpanWriter  # reads the kept samples' bytes alone

        spans = SpanWriter(layout.wds_spans(shard.index))
    rows = RowsCache(layout.work_rows(shard.index)) if spill and shard.fmt in ("jsonl", "tar") \
        else None
    try:
        return _pass1(w, cfg, layout, shard, max_rows, inv, rows, spans)
    except BaseException:
        if inv is not None:
            inv.abort()
        if rows is not None:
            rows.abort()
        if spans is not None:
            spans.abort()
        raise


def _pass1(w, cfg, layout: OutputLayout, shard: Shard, max_rows, inv, rows_cache,
           spans=None) -> dict:
    t0 = time.perf_counter()
    counts = w.lang_counts()  # this shard's counts (the files are per shard, so a rerun resumes)
    per = {c: {"captions": 0, "matched": 0} for c in w.langs}
    captions = nulls = matched = 0
    grp, routed = [], []
    tally: dict = {}
    keep = inv is not None
    schema = None
    prog = Progress(f"pass 1 {shard.name}")
    # cuDF reads every row of the text column: not for a download folder's parquet
    # (only its rows downloaded count) nor with --on-bad-row skip (rows left out)
    on_device = (w.reader == "cudf" and shard.fmt == "parquet" and w.router is None
                 and not cfg.group_column and "://" not in shard.path and shard.tar is None
                 and cfg.on_bad_row != "skip")
    if on_device:  # cuDF reads the text onto the GPU; nothing of it comes back
        from ..cudf_io import device_buffers, parquet_text_batches

        names = shard_schema(shard).names  # what the arrow path checks before any output
        check_added(cfg, shard, names)
        if cfg.key_column and cfg.key_column in pass1_columns(cfg, shard, names):
            _check_keys_on_host(cfg, shard, names, max_rows)
        eng = w.engines[ALL]
        for series, first in parquet_text_batches(shard, cfg.text_column, cfg.batch_bytes,
                                                  max_rows):
            r = count_device_batch(eng, *device_buffers(series, eng.xp), counts[ALL], first,
                                   shard.path, keep)
            matched += r["matched"]
            per[ALL]["captions"] += r["captions"]
            per[ALL]["matched"] += r["matched"]
            if keep:
                inv.write(r["lens"], r["entry_id"], None, first)
            captions += r["captions"]
            nulls += r["nulls"]
            prog.update(r["captions"])
    else:
        file_schema = shard_schema(shard)
        if file_schema is not None:
            check_added(cfg, shard, file_schema.names)
        cols = pass1_columns(cfg, shard, file_schema.names) if file_schema is not None else None
        rejects = [] if cfg.on_bad_row == "skip" else None
        # --outputs uids: a parquet shard's keys are checked before the run; a jsonl or
        # tar shard's as pass 1 reads them (they were checked only when uids.npy was
        # written, after the whole run, by their row in the curated part)
        uids = "uids" in cfg.outputs and file_schema is None
        if uids:
            from .outputs import uid_pairs
        batches = _read_stage(w, cfg, shard, shard_batches(cfg, shard, max_rows, cols, tally,
                                                          rejects, spans))
        for table, first, tb, arr, li in prefetch(batches):
            if file_schema is None:  # jsonl, tar: the columns pass 2 will write
                schema = table.schema if schema is None else union_schema(schema, table.schema,
                                                                           shard, first)
            if rows_cache is not None:  # parsed once: pass 2 reads these, not the file
                rows_cache.write(table)
            if tb is None:
                tb, arr = text_buffers(table, cfg, shard, first)
            if cfg.group_column:
                keys = row_keys(cfg, shard, table, first)
            elif cfg.key_column and (file_schema is None or cfg.key_column in (cols or [])):
                check_keys(cfg, shard, table, first)  # a null key stops the run here
            if uids and cfg.key_column in table.column_names:  # before any output is written
                uid_pairs(table.column(cfg.key_column),
                          f"{shard.path} (key column {cfg.key_column!r})", first)
            li, groups = by_language(w, table, arr, shard, li)
            if li is not None:
                routed.append(li.astype(np.int16))
            lists = []
            for code, rows, h_off, h_ids, off, ids in match_groups(w, groups, tb):
                w.engines[code].count_into(ids, counts[code])
                lens = np.diff(h_off)
                m = int(np.count_nonzero(lens))
                per[code]["captions"] += lens.size
                per[code]["matched"] += m
                matched += m
                if keep:
                    lists.append((rows, h_off, h_ids))
            if keep:
                r_off, r_ids = lists_in_row_order(len(tb), lists)
                inv.write(np.diff(r_off), r_ids, li, first)
            if cfg.group_column:
                ok = (tb.valid != 0) if li is None else ((li >= 0) & (tb.valid != 0))
                g = group_keys(cfg, shard, table, first)
                grp.append((g[ok], choice_values(cfg.seed, g[ok], keys[ok]),
                            np.nonzero(ok)[0] + first))
            captions += len(tb)
            nulls += int(len(tb) - int(tb.valid.sum()))
            prog.update(len(tb))
    seconds = prog.close() if captions else time.perf_counter() - t0
    if cfg.lang_column and schema is not None and cfg.lang_column not in schema.names and captions:
        raise InputError(f"{shard.path}: no row has the language field {cfg.lang_column!r} "
                         f"(fields: {', '.join(schema.names)}); give --lang-column the field "
                         "that holds each caption's language")
    parts = []
    for code in w.langs:
        c = w.engines[code].to_host(counts[code])
        nz = np.nonzero(c)[0]
        parts.append(pa.table({"lang": pa.array([code] * nz.size, pa.string()),
                               "entry_id": pa.array(nz.astype(np.int32)),
                               "count": pa.array(c[nz], pa.uint64())}))
    atomic_write_parquet(layout.pass1_counts(shard.index), pa.concat_tables(parts))
    if cfg.worldwide and cfg.lang_column is None:  # language ID is slow: keep it for pass 2
        buf = io.BytesIO()
        np.save(buf, np.concatenate(routed) if routed else np.zeros(0, np.int16))
        atomic_write_bytes(layout.pass1_lang(shard.index), buf.getvalue())
    if cfg.group_column:
        write_group_choices(layout, shard.index, grp)
    if schema is not None:
        atomic_write_bytes(layout.pass1_schema(shard.index), schema.serialize().to_pybytes())
    if spans is not None:
        spans.close()
    n_rejected = 0
    if cfg.on_bad_row == "skip" and not on_device:
        n_rejected = len(rejects)
        write_rejects(layout, shard, rejects)
    if keep:
        inv.close()
    if rows_cache is not None:
        rows_cache.close()
    stats = {"shard": shard.name, "path": shard.path, "captions": captions,
             "null_captions": nulls, "matched": matched, "seconds_pass1": seconds,
             "failed_downloads": tally.get("failed_downloads", 0), "rejected": n_rejected,
             "reader": "cudf" if on_device else "arrow"}
    if cfg.worldwide:
        stats["languages"] = per
    atomic_write_json(layout.pass1_marker(shard.index), stats)
    return stats

