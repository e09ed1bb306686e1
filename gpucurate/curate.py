"""The curation pipeline: pass 1 (match and count), merge, pass 2 (balance).

Stages are plain functions of (config, shard, ...) that a worker runs after a
once-per-process ``setup`` (metadata, tries and one engine per language; a
MetaCLIP 1 run has the one language ``all``). Executors only schedule them:
:class:`LocalExecutor` here, the Ray executor in ``gpucurate.ray_executor``.
Every file is written atomically (temporary file, then rename) and every shard
leaves a completion marker, so a rerun skips finished work and gives identical
outputs.

Layout of an output directory ``DIR``::

    config.json                      fingerprint of what decides the outputs
    work/pass1/shard-NNNNN.json      pass-1 marker and stats of shard NNNNN
    work/pass1/shard-NNNNN.parquet   its sparse entry counts (lang, entry_id, count)
    work/pass1/shard-NNNNN.lang.npy  worldwide, language ID: each row's language
    work/pass1/shard-NNNNN.groups.parquet  --group-column: (group, choice, row)
    work/groups/shard-NNNNN.npy      --group-column: the rows chosen for their group
    work/prob.npz                    prob per entry, per language
    matches/shard-NNNNN.parquet      with --save-matches: (entry_id, text_id) uint32
                                     (worldwide: and lang, the language of entry_id)
    entry_counts.parquet             entry_id, entry, count (uint64), prob
    entry_counts/<lang>.parquet      the same per language (worldwide)
    curated/part-NNNNN.parquet       kept rows of shard NNNNN, plus entry_ids (and lang)
    stats/shard-NNNNN.json           per-shard stats (the pass-2 marker)
    summary.json                     the funnel, t, timings, versions (per language)
    report/                          the HTML report
"""

from __future__ import annotations

import glob
import io
import json
import os
import platform
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .columns import buffers, chunks_of
from .config import CurateConfig
from .errors import ConfigError, InputError
from .io import (Shard, atomic_write_bytes, atomic_write_json, atomic_write_parquet, read_batches,
                 resolve_inputs)
from .keys import key_hashes, probabilities, row_key_hashes
from .log import Progress, logger
from .metadata import load_metadata

# ------------------------------------------------------------------ t rules


def p_to_t(counts, p: float) -> int:
    """MetaCLIP 2's ``p_to_t``: sort the counts ascending (zeros included), take
    the cumulative share of the total at each position; t is the count at the
    position whose share is nearest ``p`` (the first such position on ties)."""
    c = np.sort(np.asarray(counts, dtype=np.float64))
    total = c.sum()
    if total <= 0:
        raise ConfigError("--tail-fraction: the pool matched no entry, so no t can be derived")
    share = np.cumsum(c) / total
    return int(c[int(np.argmin(np.abs(share - p)))])


def t_to_p(counts, t: float) -> float:
    """MetaCLIP 2's ``t_to_p``: the share of all matches held by entries with count < t."""
    c = np.asarray(counts, dtype=np.float64)
    return float(c[c < t].sum() / c.sum())


# -------------------------------------------------------------- the worker

_WORKER: dict = {}
ALL = "all"  # the one "language" of a MetaCLIP 1 run


def load_worldwide(path: str) -> dict:
    """{language: Metadata} of every ``<lang>.json`` in a directory."""
    if not os.path.isdir(path):
        raise ConfigError(f"--worldwide {path}: not a directory of <lang>.json metadata files")
    files = sorted(f for f in os.listdir(path) if f.endswith(".json"))
    if not files:
        raise ConfigError(f"--worldwide {path}: holds no <lang>.json metadata file")
    return {f[:-5]: load_metadata(os.path.join(path, f)) for f in files}


def worker_state(cfg: CurateConfig) -> dict:
    """What a worker matches with: {language: (Metadata, MatchTables)}. Built
    once (the Ray driver ships it to every worker through its object store)."""
    from .tables import load_tables, load_tables_ww

    if cfg.worldwide:
        return {code: (md, load_tables_ww(md)) for code, md in load_worldwide(cfg.worldwide).items()}
    md = load_metadata(cfg.metadata)
    return {ALL: (md, load_tables(md))}


def _worker_key(cfg: CurateConfig):
    return (cfg.metadata, cfg.worldwide, cfg.lang_column, cfg.device, cfg.threads, cfg.reader)


def install_worker(cfg: CurateConfig, state: dict, device: str | None = None) -> dict:
    """Set this process up for ``cfg`` from a :func:`worker_state` (one engine
    per language; on a GPU every language's tables are uploaded once)."""
    from .cudf_io import resolve_reader
    from .engine import make_engine, resolve_device
    from .lang import Router

    key = _worker_key(cfg)
    if _WORKER.get("key") != key:
        device = device or resolve_device(cfg.device)
        reader = resolve_reader(cfg.reader, device)
        langs = sorted(state)
        _WORKER.clear()
        _WORKER.update(key=key, langs=langs, metadata={c: state[c][0] for c in langs},
                       engines={c: make_engine(state[c][1], device, cfg.threads) for c in langs},
                       router=Router(langs, cfg.lang_column) if cfg.worldwide else None,
                       reader=reader)
    return _WORKER


def setup(cfg: CurateConfig) -> dict:
    """Once per process: metadata, tries and engines (cached across shards)."""
    from .engine import resolve_device

    if _WORKER.get("key") != _worker_key(cfg):
        device = resolve_device(cfg.device)  # fail fast, before building anything
        install_worker(cfg, worker_state(cfg), device)
    return _WORKER


def _name(i: int, stem: str, ext: str) -> str:
    return f"{stem}-{i:05d}.{ext}"


def _keys(cfg: CurateConfig, shard: Shard, table: pa.Table, first_row: int) -> np.ndarray:
    if cfg.key_column is None:
        return row_key_hashes(shard.name, first_row, table.num_rows)
    if cfg.key_column not in table.column_names:
        raise InputError(f"{shard.path}: no key column {cfg.key_column!r} (columns: "
                         f"{', '.join(table.column_names)})")
    return key_hashes(table.column(cfg.key_column), where=shard.path, first_row=first_row)


def _batches(cfg: CurateConfig, shard: Shard, max_rows: int | None):
    """(table, first_row) of the shard, stopping after max_rows rows."""
    row = 0
    for table in read_batches(shard, cfg.text_column, cfg.batch_bytes):
        if max_rows is not None and row + table.num_rows > max_rows:
            table = table.slice(0, max_rows - row)
        if table.num_rows:
            for col in ("entry_ids",) + (("lang",) if cfg.worldwide else ()):
                if col in table.column_names and col != cfg.lang_column:
                    raise InputError(f"{shard.path}: already has a column {col!r}, which "
                                     "curation adds; rename or drop it")
            yield table, row
        row += table.num_rows
        if max_rows is not None and row >= max_rows:
            return


def _text(table: pa.Table, cfg: CurateConfig, shard: Shard, first_row: int):
    col = table.column(cfg.text_column)
    if pa.types.is_null(col.type):
        col = col.cast(pa.large_string())
    chunks = chunks_of(col)
    arr = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
    return buffers(arr, where=f"{shard.path} (rows from {first_row})"), arr


def _by_language(w: dict, table: pa.Table, arr: pa.Array, shard: Shard, li=None):
    """(language index per row or None, [(language, rows or None for all, buffers)]).
    ``li``: the routing already done (pass 1 keeps language-ID results for pass 2)."""
    if w["router"] is None:
        return None, [(ALL, None, None)]
    if li is None:
        li = w["router"].route(w["router"].codes(table, arr, shard.path))
    groups = []
    for i, code in enumerate(w["langs"]):
        rows = np.nonzero(li == i)[0]
        if rows.size:
            sub = buffers(arr.take(pa.array(rows)), validate=False)
            groups.append((code, rows, sub))
    return li, groups


def _match_groups(w, groups, tb):
    """Yield (language, rows, host offsets, host ids, device offsets, device ids)."""
    for code, rows, sub in groups:
        eng = w["engines"][code]
        off, ids = eng.match_native(tb if rows is None else sub)
        yield code, rows, eng.to_host(off), eng.to_host(ids), off, ids


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
        r["text_id"] = _text_ids(eng.to_host(lens), first)
    return r


def _text_ids(lens: np.ndarray, first: int, rows: np.ndarray | None = None) -> np.ndarray:
    """The inverted index's text ids: row ``first + rows[i]`` (``rows``: all the
    batch's rows when None) repeated ``lens[i]`` times."""
    if rows is None:
        rows = np.arange(lens.size, dtype=np.int64)
    return (np.repeat(rows, lens) + first).astype(np.uint32)


def pass1_shard(cfg: CurateConfig, out: str, shard: Shard, max_rows: int | None) -> dict:
    """Match and count one shard; write its sparse counts and marker."""
    marker = os.path.join(out, "work", "pass1", _name(shard.index, "shard", "json"))
    if os.path.exists(marker):
        with open(marker) as f:
            return json.load(f)
    w = setup(cfg)
    t0 = time.perf_counter()
    if "counts" not in w:  # one preallocated uint64 array per language and process
        w["counts"] = {c: w["engines"][c].zeros(len(w["metadata"][c]), np.uint64)
                       for c in w["langs"]}
    counts = w["counts"]
    for c in counts.values():
        c.fill(0)  # this shard's counts (the files are per shard, so that a rerun resumes)
    per = {c: {"captions": 0, "matched": 0} for c in w["langs"]}
    captions = nulls = matched = 0
    inv_e, inv_t, inv_l, grp, routed = [], [], [], [], []
    prog = Progress(f"pass 1 {shard.name}")
    on_device = (w["reader"] == "cudf" and shard.fmt == "parquet" and w["router"] is None
                 and not cfg.group_column)
    if on_device:  # cuDF reads the text onto the GPU; nothing of it comes back
        from .cudf_io import device_buffers, parquet_text_batches

        eng = w["engines"][ALL]
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
        for table, first in _batches(cfg, shard, max_rows):
            tb, arr = _text(table, cfg, shard, first)
            keys = (_keys(cfg, shard, table, first) if (cfg.key_column or cfg.group_column)
                    else None)
            li, groups = _by_language(w, table, arr, shard)
            if li is not None:
                routed.append(li.astype(np.int16))
            for code, rows, h_off, h_ids, off, ids in _match_groups(w, groups, tb):
                w["engines"][code].count_into(ids, counts[code])
                lens = np.diff(h_off)
                m = int(np.count_nonzero(lens))
                per[code]["captions"] += lens.size
                per[code]["matched"] += m
                matched += m
                if cfg.save_matches:
                    inv_e.append(h_ids.astype(np.uint32))
                    inv_t.append(_text_ids(lens, first, rows))
                    if w["router"] is not None:
                        inv_l.append(np.full(h_ids.size, w["langs"].index(code), np.int16))
            if cfg.group_column:
                ok = (li >= 0) & (tb.valid != 0)
                g = _group_keys(cfg, shard, table, first)
                grp.append((g[ok], choice_values(cfg.seed, g[ok], keys[ok]),
                            np.nonzero(ok)[0] + first))
            captions += len(tb)
            nulls += int(len(tb) - int(tb.valid.sum()))
            prog.update(len(tb))
    seconds = prog.close() if captions else time.perf_counter() - t0
    parts = []
    for code in w["langs"]:
        c = w["engines"][code].to_host(counts[code])
        nz = np.nonzero(c)[0]
        parts.append(pa.table({"lang": pa.array([code] * nz.size, pa.string()),
                               "entry_id": pa.array(nz.astype(np.int32)),
                               "count": pa.array(c[nz], pa.uint64())}))
    atomic_write_parquet(marker[:-5] + ".parquet", pa.concat_tables(parts))
    if cfg.worldwide and cfg.lang_column is None:  # language ID is slow: keep it for pass 2
        buf = io.BytesIO()
        np.save(buf, np.concatenate(routed) if routed else np.zeros(0, np.int16))
        atomic_write_bytes(marker[:-5] + ".lang.npy", buf.getvalue())
    if cfg.group_column:
        g, c, r = ([np.concatenate(x) for x in zip(*grp)] if grp else
                   [np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64)])
        atomic_write_parquet(marker[:-5] + ".groups.parquet", pa.table(
            {"group": pa.array(g, pa.uint64()), "choice": pa.array(c, pa.uint64()),
             "row": pa.array(r, pa.int64())}))
    if cfg.save_matches:
        os.makedirs(os.path.join(out, "matches"), exist_ok=True)
        e = np.concatenate(inv_e) if inv_e else np.zeros(0, np.uint32)
        t = np.concatenate(inv_t) if inv_t else np.zeros(0, np.uint32)
        cols = {"entry_id": pa.array(e), "text_id": pa.array(t)}
        if w["router"] is not None:  # worldwide: each id is of its caption's language
            li = np.concatenate(inv_l) if inv_l else np.zeros(0, np.int16)
            cols["lang"] = pa.DictionaryArray.from_arrays(pa.array(li, pa.int16()),
                                                          pa.array(w["langs"], pa.string()))
        atomic_write_parquet(os.path.join(out, "matches", _name(shard.index, "shard", "parquet")),
                             pa.table(cols))
    stats = {"shard": shard.name, "path": shard.path, "captions": captions,
             "null_captions": nulls, "matched": matched, "seconds_pass1": seconds}
    if cfg.worldwide:
        stats["languages"] = per
    atomic_write_json(marker, stats)
    return stats


def _group_keys(cfg: CurateConfig, shard: Shard, table: pa.Table, first: int) -> np.ndarray:
    if cfg.group_column not in table.column_names:
        raise InputError(f"{shard.path}: no group column {cfg.group_column!r} (columns: "
                         f"{', '.join(table.column_names)})")
    return key_hashes(table.column(cfg.group_column), where=f"{shard.path} (group column)",
                      first_row=first)


def choice_values(seed: int, groups: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The pinned draw that picks one caption per group: the caption with the
    smallest mix(mix(mix(seed) ^ group) ^ mix(key)) (ties: shard, then row)."""
    from .kernels.keys import choice_values as cv

    out = np.empty(groups.size, np.uint64)
    cv(np.uint64(seed), groups, keys, out)
    return out


def _choose_groups(out: str, plan) -> None:
    """After pass 1: the chosen row of every group, per shard (work/groups)."""
    g, c, sh, row = [], [], [], []
    for shard, _ in plan:
        t = pq.read_table(os.path.join(out, "work", "pass1",
                                       _name(shard.index, "shard", "groups.parquet")))
        g.append(t.column("group").to_numpy())
        c.append(t.column("choice").to_numpy())
        row.append(t.column("row").to_numpy())
        sh.append(np.full(t.num_rows, shard.index, np.int64))
    g, c, sh, row = (np.concatenate(x) for x in (g, c, sh, row))
    order = np.lexsort((row, sh, c, g))
    first = np.ones(order.size, bool)
    first[1:] = g[order][1:] != g[order][:-1]
    win = order[first]
    os.makedirs(os.path.join(out, "work", "groups"), exist_ok=True)
    for shard, _ in plan:
        rows = np.sort(row[win][sh[win] == shard.index])
        buf = io.BytesIO()
        np.save(buf, rows)
        atomic_write_bytes(os.path.join(out, "work", "groups", _name(shard.index, "shard", "npy")),
                           buf.getvalue())


def _read_saved(out: str, shard: Shard, langs: list) -> tuple:
    """The shard's saved inverted index: (text_id int64, entry_id int32, language
    index int16 into ``langs``, or None for a MetaCLIP 1 run)."""
    t = pq.read_table(os.path.join(out, "matches", _name(shard.index, "shard", "parquet")))
    lang = None
    if "lang" in t.column_names:
        col = t.column("lang").combine_chunks()
        where = {c: i for i, c in enumerate(langs)}
        remap = np.array([where[c] for c in col.dictionary.to_pylist()] or [0], np.int16)
        lang = remap[col.indices.to_numpy(zero_copy_only=False)]
    return (t.column("text_id").to_numpy().astype(np.int64),
            t.column("entry_id").to_numpy().astype(np.int32), lang)


def _saved_csr(saved: tuple, rows_abs: np.ndarray, lang_index: int | None = None):
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


def _probs(w: dict, out: str) -> dict:
    """{language: device prob array} from work/prob.npz, read once per process."""
    path = os.path.join(out, "work", "prob.npz")
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if w.get("prob_key") != key:
        with np.load(path) as z:
            w["prob"] = {c: w["engines"][c].to_device(z[c]) for c in w["langs"]}
        w["prob_key"] = key
    return w["prob"]


def pass2_shard(cfg: CurateConfig, out: str, shard: Shard, max_rows: int | None) -> dict:
    """Balance one shard: write its kept rows and its stats (the marker)."""
    marker = os.path.join(out, "stats", _name(shard.index, "shard", "json"))
    if os.path.exists(marker):
        with open(marker) as f:
            return json.load(f)
    w = setup(cfg)
    probs = _probs(w, out)
    chosen = None
    if cfg.group_column:
        chosen = np.load(os.path.join(out, "work", "groups", _name(shard.index, "shard", "npy")))
    use_saved = cfg.save_matches and os.path.exists(
        os.path.join(out, "matches", _name(shard.index, "shard", "parquet")))
    saved = _read_saved(out, shard, w["langs"]) if use_saved else None
    lang_file = os.path.join(out, "work", "pass1", _name(shard.index, "shard", "lang.npy"))
    routed = np.load(lang_file) if os.path.exists(lang_file) else None
    t0 = time.perf_counter()
    parts = []
    captions = nulls = matched = kept = 0
    per = {c: {"captions": 0, "matched": 0, "kept": 0} for c in w["langs"]}
    prog = Progress(f"pass 2 {shard.name}")
    for table, first in _batches(cfg, shard, max_rows):
        n = table.num_rows
        keys = _keys(cfg, shard, table, first)
        keep = np.zeros(n, bool)
        off_all = np.zeros(n + 1, np.int64)
        lists_len = np.zeros(n, np.int64)
        id_parts: list = []
        if use_saved:  # pass 1's matches: no matching again
            valid = table.column(cfg.text_column).is_valid().to_numpy(zero_copy_only=False)
            if w["router"] is None:
                lang = None
                groups = [(ALL, None, None)]
            else:
                lang = (routed[first:first + n].astype(np.int32) if routed is not None else
                        w["router"].route(w["router"].codes(
                            table, table.column(cfg.text_column), shard.path)))
                groups = []
                for i, code in enumerate(w["langs"]):
                    rows = np.nonzero(lang == i)[0]
                    if rows.size:
                        groups.append((code, rows, i))
            results = []
            for code, rows, li in groups:
                eng = w["engines"][code]
                h_off, h_ids = _saved_csr(saved, first + (np.arange(n) if rows is None else rows),
                                          li)
                results.append((code, rows, h_off, h_ids, eng.to_device(h_off),
                                eng.to_device(h_ids)))
        else:
            tb, arr = _text(table, cfg, shard, first)
            valid = tb.valid
            lang, groups = _by_language(w, table, arr, shard, None if routed is None else
                                        routed[first:first + n].astype(np.int32))
            results = _match_groups(w, groups, tb)
        nulls += n - int(np.count_nonzero(valid))
        for code, rows, h_off, h_ids, off, ids in results:
            eng = w["engines"][code]
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
            for i, code in enumerate(w["langs"]):
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
                names = np.array(w["langs"] + ["other"], dtype=object)
                codes = pa.array(names[lang[idx]].tolist(), pa.string())
                if "lang" in sub.column_names:  # the input's own language column: routed codes
                    sub = sub.set_column(sub.column_names.index("lang"), "lang", codes)
                else:
                    sub = sub.append_column("lang", codes)
            parts.append(sub)
        prog.update(n)
    seconds = prog.close() if captions else time.perf_counter() - t0
    os.makedirs(os.path.join(out, "curated"), exist_ok=True)
    if parts:
        table = pa.concat_tables(parts, promote_options="permissive")
    else:
        table = _empty_schema(cfg, shard)
    atomic_write_parquet(os.path.join(out, "curated", _name(shard.index, "part", "parquet")), table)
    p1 = os.path.join(out, "work", "pass1", _name(shard.index, "shard", "json"))
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


def _empty_schema(cfg: CurateConfig, shard: Shard) -> pa.Table:
    if shard.fmt == "parquet":
        schema = pq.read_schema(shard.path)
    else:
        schema = pa.schema([(cfg.text_column, pa.large_string())])
    t = schema.empty_table().append_column("entry_ids", pa.array([], pa.list_(pa.int32())))
    if cfg.worldwide:
        t = t.append_column("lang", pa.array([], pa.string()))
    return t


# ------------------------------------------------------------- executors


class LocalExecutor:
    """Runs stage calls one after another in this process (the engine itself
    is parallel: CPU threads, or the GPU)."""

    name = "local"

    def map(self, fn, cfg: CurateConfig, out: str, calls: list[tuple]) -> list:
        return [fn(cfg, out, *args) for args in calls]

    def close(self) -> None:
        pass


def make_executor(cfg: CurateConfig):
    if cfg.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(cfg)
    return LocalExecutor()


# ------------------------------------------------------------ the runs


def _versions() -> dict:
    import numba

    v = {"gpucurate": __version__, "python": platform.python_version(),
         "numpy": np.__version__, "pyarrow": pa.__version__, "numba": numba.__version__}
    for mod in ("cupy", "cudf", "rmm", "numba_cuda", "ray"):
        try:
            m = __import__(mod)
            v[mod] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001 - absent or broken optional package
            pass
    return v


_OUTPUTS = ("config.json", "work", "matches", "entry_counts.parquet", "curated", "stats",
            "summary.json", "report")


def _prepare_out(cfg: CurateConfig, out: str, fingerprint: str, stage: str) -> None:
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        done = [p for d in ("work/pass1", "stats") for p in
                glob.glob(os.path.join(out, d, "*.json"))]
        if old.get("config_fingerprint") != fingerprint and (done or os.path.exists(
                os.path.join(out, "summary.json"))):
            if not cfg.overwrite:
                raise ConfigError(f"{out} holds a run with another configuration "
                                  f"(fingerprint {old.get('config_fingerprint', '?')[:12]} != "
                                  f"{fingerprint[:12]}); pass --overwrite to replace it, or "
                                  "choose another --out")
            for name in _OUTPUTS:
                p = os.path.join(out, name)
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.remove(p)
    for tmp in glob.glob(os.path.join(out, "**", "*.tmp-*"), recursive=True):
        os.remove(tmp)  # leftovers of an interrupted run
    for d in ("work/pass1", "stats"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    atomic_write_json(path, {"config_fingerprint": fingerprint, "stage": stage,
                             "config": cfg.as_dict()})


def _plan(cfg: CurateConfig, shards: list[Shard]) -> list[tuple[Shard, int | None]]:
    """Shards with their row budget under --limit (shards past it are dropped)."""
    if cfg.limit is None:
        return [(s, None) for s in shards]
    plan, left = [], cfg.limit
    for s in shards:
        if left <= 0:
            break
        n = _count_rows(s)
        plan.append((s, min(n, left)))
        left -= n
    return plan


def _count_rows(shard: Shard) -> int:
    from .io import _open_text

    if shard.fmt == "parquet":
        return pq.ParquetFile(shard.path).metadata.num_rows
    if shard.fmt == "jsonl":
        with _open_text(shard.path) as f:
            return sum(1 for _ in f)
    return sum(1 for _ in _tar_keys(shard))


def _tar_keys(shard: Shard):
    import tarfile

    last = None
    with tarfile.open(shard.path, "r|*") as tf:
        for m in tf:
            if not m.isfile() or "." not in os.path.basename(m.name):
                continue
            key = os.path.join(os.path.dirname(m.name), os.path.basename(m.name).split(".", 1)[0])
            if key != last:
                last = key
                yield key


def write_entry_counts(out: str, mds: dict, counts: dict, probs: dict | None) -> None:
    """entry_counts.parquet (MetaCLIP 1) or entry_counts/<lang>.parquet (worldwide)."""
    os.makedirs(os.path.join(out, "entry_counts"), exist_ok=True) if ALL not in mds else None
    for code, md in mds.items():
        cols = {"entry_id": pa.array(np.arange(len(md), dtype=np.int32)),
                "entry": pa.array(list(md.entries), pa.string()),
                "count": pa.array(counts[code], pa.uint64())}
        if probs is not None:
            cols["prob"] = pa.array(probs[code], pa.float64())
        path = os.path.join(out, "entry_counts.parquet") if code == ALL else \
            os.path.join(out, "entry_counts", f"{code}.parquet")
        atomic_write_parquet(path, pa.table(cols))


def read_counts(path: str, metadata) -> np.ndarray:
    """Pool counts from an ``entry_counts.parquet`` (aligned by entry_id) or a
    MetaCLIP ``entry_counts_*.json`` (a mapping entry -> count)."""
    md = load_metadata(metadata)
    n = len(md)
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                mapping = json.load(f)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read counts ({exc})") from None
        if not isinstance(mapping, dict):
            raise InputError(f"{path}: a counts .json maps entry -> count; this holds a "
                             f"{type(mapping).__name__}")
        counts = np.zeros(n, np.uint64)
        for i, e in enumerate(md.entries):
            v = mapping.get(e, 0)
            if not isinstance(v, int) or v < 0:
                raise InputError(f"{path}: count of entry {e!r} is {v!r}, not an integer >= 0")
            counts[i] = v
        return counts
    try:
        t = pq.read_table(path, columns=["entry_id", "count"])
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise InputError(f"{path}: cannot read entry counts ({exc}); expected an "
                         "entry_counts.parquet with entry_id and count columns") from None
    ids = t.column("entry_id").to_numpy()
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise InputError(f"{path}: entry ids run to {ids.max()}, but the metadata has {n} "
                         "entries; use the counts made with this metadata")
    counts = np.zeros(n, np.uint64)
    np.add.at(counts, ids, t.column("count").to_numpy().astype(np.uint64))
    return counts


def read_counts_all(path: str, mds: dict) -> dict:
    """{language: counts}: one file (MetaCLIP 1), or a directory of <lang>.parquet
    (or <lang>.json) files for a worldwide run (a language without one counts 0)."""
    if ALL in mds:
        return {ALL: read_counts(path, mds[ALL])}
    if not os.path.isdir(path):
        raise InputError(f"--counts {path}: a worldwide run takes a directory of "
                         "<lang>.parquet count files (an entry_counts/ directory)")
    out = {}
    for code, md in mds.items():
        for ext in (".parquet", ".json"):
            p = os.path.join(path, code + ext)
            if os.path.exists(p):
                out[code] = read_counts(p, md)
                break
        else:
            out[code] = np.zeros(len(md), np.uint64)
    return out


def merge_count_files(paths, metadata, out_path: str, worldwide: str | None = None) -> np.ndarray:
    """Sum count files from independent jobs into one entry_counts.parquet; with
    ``worldwide``, sum entry_counts/ directories into one directory."""
    mds = load_worldwide(worldwide) if worldwide else {ALL: load_metadata(metadata)}
    total = {c: np.zeros(len(md), np.uint64) for c, md in mds.items()}
    for p in paths:
        for c, v in read_counts_all(p, mds).items():
            total[c] += v
    if worldwide:
        os.makedirs(out_path, exist_ok=True)
        for c, md in mds.items():
            _write_counts_file(os.path.join(out_path, f"{c}.parquet"), md, total[c])
        return np.concatenate(list(total.values()))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    _write_counts_file(out_path, mds[ALL], total[ALL])
    return total[ALL]


def _write_counts_file(path: str, md, counts) -> None:
    atomic_write_parquet(path, pa.table({
        "entry_id": pa.array(np.arange(len(md), dtype=np.int32)),
        "entry": pa.array(list(md.entries), pa.string()),
        "count": pa.array(counts, pa.uint64())}))


def _pool_counts(out: str, mds: dict, plan) -> dict:
    counts = {c: np.zeros(len(md), np.uint64) for c, md in mds.items()}
    for shard, _ in plan:
        t = pq.read_table(os.path.join(out, "work", "pass1",
                                       _name(shard.index, "shard", "parquet")))
        langs = t.column("lang").to_numpy(zero_copy_only=False)
        ids = t.column("entry_id").to_numpy()
        cnt = t.column("count").to_numpy().astype(np.uint64)
        for c in counts:
            sel = langs == c
            counts[c][ids[sel]] += cnt[sel]
    return counts


def language_t(cfg: CurateConfig, counts: dict) -> dict:
    """t per language. MetaCLIP 1: --t, or p_to_t(counts, --tail-fraction).
    Worldwide (MetaCLIP 2): --t is t_en; p = t_to_p(counts_en, t_en) and every
    other language gets p_to_t(counts_lang, p) (or p = --tail-fraction for all);
    --t-lang LANG=T overrides one language. A language with no match gets no t
    (nothing of it is balanced)."""
    if ALL in counts:
        t = cfg.t if cfg.t is not None else p_to_t(counts[ALL], cfg.tail_fraction)
        if t < 1:
            raise ConfigError(f"--tail-fraction {cfg.tail_fraction} gives t = {t}, below 1; "
                              "choose a larger fraction or give --t")
        return {ALL: int(t)}
    over = dict(cfg.t_lang or ())
    if cfg.t is not None:
        if "en" not in counts:
            raise ConfigError("--t sets t for en, but the worldwide metadata has no en.json; "
                              "use --tail-fraction, or --t-lang for each language")
        if counts["en"].sum() == 0:
            raise ConfigError("--t: no English caption matched, so p = t_to_p(counts_en, t) "
                              "is undefined; use --tail-fraction or --t-lang")
        p = t_to_p(counts["en"], cfg.t)
    else:
        p = cfg.tail_fraction
    ts = {}
    for code, c in counts.items():
        if code in over:
            ts[code] = int(over[code])
        elif code == "en" and cfg.t is not None:
            ts[code] = int(cfg.t)
        elif c.sum() == 0:
            ts[code] = None
        else:
            ts[code] = p_to_t(c, p)
            if ts[code] < 1:
                raise ConfigError(f"language {code}: p = {p:.4g} gives t = {ts[code]}, below 1; "
                                  f"give it one with --t-lang {code}=T")
    return ts


def _metadata_of(cfg: CurateConfig) -> tuple[dict, str]:
    """{language: Metadata} and one hash of all of it."""
    import hashlib

    mds = load_worldwide(cfg.worldwide) if cfg.worldwide else {ALL: load_metadata(cfg.metadata)}
    if ALL in mds:
        return mds, mds[ALL].sha256
    h = hashlib.sha256("".join(f"{c}:{md.sha256};" for c, md in sorted(mds.items())).encode())
    return mds, h.hexdigest()


def run(cfg: CurateConfig, stage: str = "curate") -> dict:
    """Run ``curate`` (pass 1 + pass 2), ``count`` (pass 1) or ``balance``
    (pass 2 from ``cfg.counts_file``) into ``cfg.out``; return the summary."""
    if stage in ("curate", "balance"):
        cfg.require_t()
    if stage == "balance" and not cfg.counts_file:
        raise ConfigError("balance needs --counts FILE (an entry_counts.parquet or a MetaCLIP "
                          "entry_counts_*.json; worldwide: an entry_counts/ directory)")
    if stage == "balance" and cfg.group_column:
        raise ConfigError("--group-column needs the whole pool's pass 1 to choose one caption "
                          "per group: run curate (or count and balance without it)")
    mds, md_sha = _metadata_of(cfg)
    shards = resolve_inputs(cfg.inputs, need_unique_names=cfg.key_column is None)
    counts_sha = None
    if stage == "balance":
        import hashlib

        h = hashlib.sha256()
        for f in ([cfg.counts_file] if os.path.isfile(cfg.counts_file) else
                  sorted(glob.glob(os.path.join(cfg.counts_file, "*")))):
            h.update(open(f, "rb").read())
        counts_sha = h.hexdigest()
    fp = cfg.fingerprint(md_sha, [s.path for s in shards], stage, counts_sha)
    out = cfg.out
    _prepare_out(cfg, out, fp, stage)
    plan = _plan(cfg, shards)
    ex = make_executor(cfg)
    seconds = {}
    try:
        if stage in ("curate", "count"):
            t0 = time.perf_counter()
            p1 = ex.map(pass1_shard, cfg, out, [(s, m) for s, m in plan])
            seconds["pass1"] = time.perf_counter() - t0
            counts = _pool_counts(out, mds, plan)
        else:
            p1 = None
            counts = read_counts_all(cfg.counts_file, mds)
        if stage == "count":
            write_entry_counts(out, mds, counts, None)
            summary = _summary(cfg, stage, fp, p1, None, counts, None, seconds, ex)
            atomic_write_json(os.path.join(out, "summary.json"), summary)
            return summary
        ts = language_t(cfg, counts)
        for code, t in ts.items():
            logger.info("t%s = %s", "" if code == ALL else f" ({code})",
                        "none (no match)" if t is None else f"{t:,}")
        probs = {c: probabilities(counts[c], ts[c]) if ts[c] else np.ones(counts[c].size)
                 for c in counts}
        write_entry_counts(out, mds, counts, probs)
        buf = io.BytesIO()
        np.savez(buf, **probs)
        atomic_write_bytes(os.path.join(out, "work", "prob.npz"), buf.getvalue())
        if cfg.group_column:
            _choose_groups(out, plan)
        t0 = time.perf_counter()
        p2 = ex.map(pass2_shard, cfg, out, [(s, m) for s, m in plan])
        seconds["pass2"] = time.perf_counter() - t0
        summary = _summary(cfg, stage, fp, p1, p2, counts, ts, seconds, ex)
        atomic_write_json(os.path.join(out, "summary.json"), summary)
    finally:
        ex.close()
    if cfg.report and stage in ("curate", "balance"):
        try:
            from .report import write_report
        except ImportError:
            write_report = None
        if write_report is not None:
            write_report(out)
    return summary


def _summary(cfg, stage, fp, p1, p2, counts: dict, ts: dict | None, seconds, ex) -> dict:
    src = p2 if p2 is not None else p1
    pool = sum(s["captions"] for s in src)
    allc = np.concatenate(list(counts.values()))
    engines = _WORKER.get("engines") or {}
    s = {"stage": stage, "pool": pool, "null_captions": sum(x["null_captions"] for x in src),
         "matched": sum(x["matched"] for x in src),
         "t": (ts.get(ALL, ts.get("en")) if ts else None),
         "tail_fraction": cfg.tail_fraction, "seed": int(cfg.seed),
         "device": (next(iter(engines.values())).name if engines else
                    (getattr(ex, "workers", None) or [{}])[0].get("engine", cfg.device)),
         "reader": _WORKER.get("reader", "arrow") if engines else cfg.reader,
         "executor": ex.name, "shards": len(src), "seconds": seconds,
         "captions_per_s": {k: (pool / v if v > 0 else None) for k, v in seconds.items()},
         "entries": int(allc.size), "entries_matched": int(np.count_nonzero(allc)),
         "matches": int(allc.sum()), "versions": _versions(), "config_fingerprint": fp,
         "inputs": list(cfg.inputs),
         "metadata": str(cfg.worldwide or (cfg.metadata if isinstance(cfg.metadata, str)
                                           else "<list>"))}
    if p2 is not None:
        s["curated"] = sum(x["kept"] for x in p2)
    if cfg.worldwide:
        langs = {}
        for code, c in counts.items():
            d = {"entries": int(c.size), "matches": int(c.sum()),
                 "t": ts.get(code) if ts else None}
            for key in ("captions", "matched", "kept"):
                d[{"captions": "pool", "kept": "curated"}.get(key, key)] = sum(
                    x.get("languages", {}).get(code, {}).get(key, 0) for x in src)
            if p2 is None:
                d.pop("curated", None)
            langs[code] = d
        s["languages"] = langs
        s["unrouted"] = pool - s["null_captions"] - sum(d["pool"] for d in langs.values())
        s["group_column"] = cfg.group_column
    return s


def curate(metadata, inputs, out, *, t=None, tail_fraction=None, **kw) -> dict:
    """Python API of ``python -m gpucurate curate`` (same keywords as the flags)."""
    cfg = CurateConfig(metadata=os.fspath(metadata) if isinstance(metadata, os.PathLike)
                       else metadata, inputs=inputs, out=os.fspath(out), t=t,
                       tail_fraction=tail_fraction, **kw)
    return run(cfg, "curate")


__all__ = ["curate", "run", "p_to_t", "t_to_p", "pass1_shard", "pass2_shard", "setup",
           "LocalExecutor", "merge_count_files", "read_counts"]
