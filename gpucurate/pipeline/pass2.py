"""Pass 2 of one shard: the keep decision per row, then its kept rows written."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import CurateConfig
from ..io import Shard, atomic_write_json, atomic_write_parquet
from ..log import Progress
from .batches import by_language, match_groups, row_keys, shard_batches, text_buffers
from .layout import ALL, OutputLayout


def read_saved(layout: OutputLayout, shard: Shard, langs: list) -> tuple:
    """The shard's saved inverted index: (text_id int64, entry_id int32, language
    index int16 into ``langs``, or None for a MetaCLIP 1 run)."""
    t = pq.read_table(layout.matches(shard.index))
    lang = None
    if "lang" in t.column_names:
        col = t.column("lang").combine_chunks()
        where = {c: i for i, c in enumerate(langs)}
        remap = np.array([where[c] for c in col.dictionary.to_pylist()] or [0], np.int16)
        lang = remap[col.indices.to_numpy(zero_copy_only=False)]
    return (t.column("text_id").to_numpy().astype(np.int64),
            t.column("entry_id").to_numpy().astype(np.int32), lang)


def saved_csr(saved: tuple, rows_abs: np.ndarray, lang_index: int | None = None):
    """CSR (offsets, sorted ids) of the rows ``rows_abs`` (ascending shard row
    numbers) from the saved inverted index, only the ids of language
    ``lang_index`` (worldwide)."""
    text_id, entry, lang = saved
    pos = np.searchsorted(rows_abs, text_id)
    ok = pos < rows_abs.size
    ok[ok] = rows_abs[pos[ok]] == text_id[ok]
    if lang_index is not None:
        ok &= lang == lang_index
    pos, entry = pos[ok], entry[ok]
    order = np.lexsort((entry, pos))
    off = np.zeros(rows_abs.size + 1, np.int64)
    np.cumsum(np.bincount(pos, minlength=rows_abs.size), out=off[1:])
    return off, entry[order]


def _probs(w, layout: OutputLayout) -> dict:
    """{language: device prob array} from work/prob.npz, read once per process."""
    path = layout.prob
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if w.prob_key != key:
        with np.load(path) as z:
            w.prob = {c: w.engines[c].to_device(z[c]) for c in w.langs}
        w.prob_key = key
    return w.prob


def pass2_shard(w, layout: OutputLayout, shard: Shard, max_rows: int | None) -> dict:
    """Balance one shard: write its kept rows and its stats (the marker)."""
    cfg = w.cfg
    marker = layout.stats(shard.index)
    if os.path.exists(marker):
        with open(marker) as f:
            return json.load(f)
    probs = _probs(w, layout)
    chosen = None
    if cfg.group_column:
        chosen = np.load(layout.groups(shard.index))
    use_saved = cfg.save_matches and os.path.exists(layout.matches(shard.index))
    saved = read_saved(layout, shard, w.langs) if use_saved else None
    lang_file = layout.pass1_lang(shard.index)
    routed = np.load(lang_file) if os.path.exists(lang_file) else None
    t0 = time.perf_counter()
    parts = []
    captions = nulls = matched = kept = 0
    per = {c: {"captions": 0, "matched": 0, "kept": 0} for c in w.langs}
    prog = Progress(f"pass 2 {shard.name}")
    for table, first in shard_batches(cfg, shard, max_rows):
        n = table.num_rows
        keys = row_keys(cfg, shard, table, first)
        keep = np.zeros(n, bool)
        off_all = np.zeros(n + 1, np.int64)
        lists_len = np.zeros(n, np.int64)
        id_parts: list = []
        if use_saved:  # pass 1's matches: no matching again
            valid = table.column(cfg.text_column).is_valid().to_numpy(zero_copy_only=False)
            if w.router is None:
                lang = None
                groups = [(ALL, None, None)]
            else:
                lang = (routed[first:first + n].astype(np.int32) if routed is not None else
                        w.router.route(w.router.codes(
                            table, table.column(cfg.text_column), shard.path)))
                groups = []
                for i, code in enumerate(w.langs):
                    rows = np.nonzero(lang == i)[0]
                    if rows.size:
                        groups.append((code, rows, i))
            results = []
            for code, rows, li in groups:
                eng = w.engines[code]
                h_off, h_ids = saved_csr(saved, first + (np.arange(n) if rows is None else rows),
                                         li)
                results.append((code, rows, h_off, h_ids, eng.to_device(h_off),
                                eng.to_device(h_ids)))
        else:
            tb, arr = text_buffers(table, cfg, shard, first)
            valid = tb.valid
            lang, groups = by_language(w, table, arr, shard, None if routed is None else
                                       routed[first:first + n].astype(np.int32))
            results = match_groups(w, groups, tb)
        nulls += n - int(np.count_nonzero(valid))
        for code, rows, h_off, h_ids, off, ids in results:
            eng = w.engines[code]
            k = keys if rows is None else keys[rows]
            dec = eng.to_host(eng.keep(ids, off, eng.to_device(k), probs[code],
                                       cfg.seed)).astype(bool)
            lens = np.diff(h_off)
            at = np.arange(n) if rows is None else rows
            keep[at] = dec
            lists_len[at] = lens
            id_parts.append((at, h_off, h_ids))
            m = int(np.count_nonzero(lens))
            matched += m
            per[code]["captions"] += lens.size
            per[code]["matched"] += m
        if chosen is not None:
            keep &= np.isin(np.arange(first, first + n), chosen)
        idx = np.nonzero(keep)[0]
        if lang is not None:
            for i, code in enumerate(w.langs):
                per[code]["kept"] += int(np.count_nonzero(lang[idx] == i))
        else:
            per[ALL]["kept"] += int(idx.size)
        kept += int(idx.size)
        captions += n
        if idx.size:
            if len(id_parts) == 1 and id_parts[0][0].size == n:
                off_all, flat = id_parts[0][1], id_parts[0][2]
            else:  # scatter each language's lists into row order
                np.cumsum(lists_len, out=off_all[1:])
                flat = np.empty(int(off_all[-1]), np.int32)
                for at, h_off, h_ids in id_parts:
                    lens = np.diff(h_off)
                    dest = np.repeat(off_all[at], lens) + (
                        np.arange(h_ids.size) - np.repeat(h_off[:-1], lens))
                    flat[dest] = h_ids
            lists = pa.ListArray.from_arrays(
                pa.array(off_all.astype(np.int32) if off_all[-1] < 2**31 else off_all),
                pa.array(flat, pa.int32()))
            sub = table.take(pa.array(idx)).append_column("entry_ids", lists.take(pa.array(idx)))
            if lang is not None:
                names = np.array(w.langs + ["other"], dtype=object)
                codes = pa.array(names[lang[idx]].tolist(), pa.string())
                if "lang" in sub.column_names:  # the input's own language column: routed codes
                    sub = sub.set_column(sub.column_names.index("lang"), "lang", codes)
                else:
                    sub = sub.append_column("lang", codes)
            parts.append(sub)
        prog.update(n)
    seconds = prog.close() if captions else time.perf_counter() - t0
    os.makedirs(layout.curated_dir, exist_ok=True)
    if parts:
        table = pa.concat_tables(parts, promote_options="permissive")
    else:
        table = empty_schema(cfg, shard)
    atomic_write_parquet(layout.curated(shard.index), table)
    p1 = layout.pass1_marker(shard.index)
    stats = {"shard": shard.name, "path": shard.path, "captions": captions,
             "null_captions": nulls, "matched": matched, "kept": kept,
             "seconds_pass2": seconds}
    if cfg.worldwide:
        stats["languages"] = per
    if os.path.exists(p1):
        with open(p1) as f:
            stats["seconds_pass1"] = json.load(f)["seconds_pass1"]
    atomic_write_json(marker, stats)
    return stats


def empty_schema(cfg: CurateConfig, shard: Shard) -> pa.Table:
    if shard.fmt == "parquet":
        schema = pq.read_schema(shard.path)
    else:
        schema = pa.schema([(cfg.text_column, pa.large_string())])
    t = schema.empty_table().append_column("entry_ids", pa.array([], pa.list_(pa.int32())))
    if cfg.worldwide:
        t = t.append_column("lang", pa.array([], pa.string()))
    return t
