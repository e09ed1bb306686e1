"""Pass 1 of one shard: match and count; write its sparse counts and marker."""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pyarrow as pa

from ..io import Shard, atomic_write_bytes, atomic_write_json, atomic_write_parquet
from ..log import Progress
from .batches import (by_language, group_keys, match_groups, row_keys, shard_batches,
                      text_buffers, text_ids)
from .groups import choice_values
from .layout import ALL, OutputLayout


def count_device_batch(eng, data, offsets, valid, counts, first: int, where: str,
                       save_matches: bool = False) -> dict:
    """Pass 1 of one batch of captions already on the GPU (Arrow-layout device
    buffers, e.g. a cuDF column's): UTF-8 check, match and count into the
    device array ``counts``; only scalars come back (and, with ``save_matches``,
    the batch's inverted index, (entry_id, text_id) uint32)."""
    eng.check_utf8(data, offsets, valid, where, first)
    m_off, m_ids = eng.match_device(data, offsets, valid)
    eng.count_into(m_ids, counts)
    n = int(valid.size)
    lens = eng.xp.diff(m_off)
    r = {"captions": n, "nulls": n - int(valid.sum()),
         "matched": int(eng.xp.count_nonzero(lens))}
    if save_matches:
        r["entry_id"] = eng.to_host(m_ids).astype(np.uint32)
        r["text_id"] = text_ids(eng.to_host(lens), first)
    return r


def pass1_shard(w, layout: OutputLayout, shard: Shard, max_rows: int | None) -> dict:
    """Match and count one shard (``w``: this process's
    :class:`~gpucurate.pipeline.worker.Worker`); write its sparse counts and
    marker. A shard whose marker exists is not read again."""
    cfg = w.cfg
    marker = layout.pass1_marker(shard.index)
    if os.path.exists(marker):
        with open(marker) as f:
            return json.load(f)
    t0 = time.perf_counter()
    counts = w.lang_counts()  # this shard's counts (the files are per shard, so a rerun resumes)
    per = {c: {"captions": 0, "matched": 0} for c in w.langs}
    captions = nulls = matched = 0
    inv_e, inv_t, inv_l, grp, routed = [], [], [], [], []
    prog = Progress(f"pass 1 {shard.name}")
    on_device = (w.reader == "cudf" and shard.fmt == "parquet" and w.router is None
                 and not cfg.group_column)
    if on_device:  # cuDF reads the text onto the GPU; nothing of it comes back
        from ..cudf_io import device_buffers, parquet_text_batches

        eng = w.engines[ALL]
        for series, first in parquet_text_batches(shard, cfg.text_column, cfg.batch_bytes,
                                                  max_rows):
            r = count_device_batch(eng, *device_buffers(series, eng.xp), counts[ALL], first,
                                   shard.path, cfg.save_matches)
            matched += r["matched"]
            per[ALL]["captions"] += r["captions"]
            per[ALL]["matched"] += r["matched"]
            if cfg.save_matches:
                inv_e.append(r["entry_id"])
                inv_t.append(r["text_id"])
            captions += r["captions"]
            nulls += r["nulls"]
            prog.update(r["captions"])
    else:
        for table, first in shard_batches(cfg, shard, max_rows):
            tb, arr = text_buffers(table, cfg, shard, first)
            keys = (row_keys(cfg, shard, table, first) if (cfg.key_column or cfg.group_column)
                    else None)
            li, groups = by_language(w, table, arr, shard)
            if li is not None:
                routed.append(li.astype(np.int16))
            for code, rows, h_off, h_ids, off, ids in match_groups(w, groups, tb):
                w.engines[code].count_into(ids, counts[code])
                lens = np.diff(h_off)
                m = int(np.count_nonzero(lens))
                per[code]["captions"] += lens.size
                per[code]["matched"] += m
                matched += m
                if cfg.save_matches:
                    inv_e.append(h_ids.astype(np.uint32))
                    inv_t.append(text_ids(lens, first, rows))
                    if w.router is not None:
                        inv_l.append(np.full(h_ids.size, w.langs.index(code), np.int16))
            if cfg.group_column:
                ok = (tb.valid != 0) if li is None else ((li >= 0) & (tb.valid != 0))
                g = group_keys(cfg, shard, table, first)
                grp.append((g[ok], choice_values(cfg.seed, g[ok], keys[ok]),
                            np.nonzero(ok)[0] + first))
            captions += len(tb)
            nulls += int(len(tb) - int(tb.valid.sum()))
            prog.update(len(tb))
    seconds = prog.close() if captions else time.perf_counter() - t0
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
        g, c, r = ([np.concatenate(x) for x in zip(*grp)] if grp else
                   [np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64)])
        atomic_write_parquet(layout.pass1_groups(shard.index), pa.table(
            {"group": pa.array(g, pa.uint64()), "choice": pa.array(c, pa.uint64()),
             "row": pa.array(r, pa.int64())}))
    if cfg.save_matches:
        os.makedirs(layout.matches_dir, exist_ok=True)
        e = np.concatenate(inv_e) if inv_e else np.zeros(0, np.uint32)
        t = np.concatenate(inv_t) if inv_t else np.zeros(0, np.uint32)
        cols = {"entry_id": pa.array(e), "text_id": pa.array(t)}
        if w.router is not None:  # worldwide: each id is of its caption's language
            li = np.concatenate(inv_l) if inv_l else np.zeros(0, np.int16)
            cols["lang"] = pa.DictionaryArray.from_arrays(pa.array(li, pa.int16()),
                                                          pa.array(w.langs, pa.string()))
        atomic_write_parquet(layout.matches(shard.index), pa.table(cols))
    stats = {"shard": shard.name, "path": shard.path, "captions": captions,
             "null_captions": nulls, "matched": matched, "seconds_pass1": seconds}
    if cfg.worldwide:
        stats["languages"] = per
    atomic_write_json(marker, stats)
    return stats
