"""``rebalance``: curate again the samples that survived download, NSFW
filtering and dedup, from a run's saved matches, without matching again.

The run in DIR (made with ``--save-matches``) gives the inputs and each
shard's matches, (entry_id, text_id). The survivors are keys of
``--key-column``. For every shard the survivors' rows are found (exactly: a
64-bit hash finds the candidates, the values are compared), the counts are
summed over the survivors' matches alone, t follows (``--t``,
``--tail-fraction`` or ``--target-size``), and pass 2 writes the kept
survivors, reading the saved matches beside each shard. The result is that of
a ``curate`` of the survivors alone with the same key column and seed. A
survivor key found in no shard is counted (``summary.json``: survivors.
not_in_pool) and logged, with examples.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import CurateConfig
from ..errors import ConfigError, InputError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_parquet, resolve_inputs
from ..io import shard_schema
from ..io.fs import is_url
from ..keys import key_hashes, probabilities
from ..log import logger
from .batches import group_keys, pass1_columns, row_keys, shard_batches
from .counts import pool_counts, write_entry_counts
from .groups import choice_values, choose_groups, write_group_choices
from .layout import ALL, OutputLayout
from .outdir import OutLock, prepare_out, resolve_out, shard_identity, sweep_tmp
from .outputs import check_outputs, drop_unrequested, write_outputs
from .plan import SizeModel, iter_matches, saved_match_files
from .trules import language_t


# ---------------------------------------------------------------- survivors
def load_survivors(path: str, key_column: str) -> pa.Array:
    """The distinct survivor keys of a parquet file or directory of parquet
    parts, a jsonl file (``.jsonl``, ``.json``, ``.ndjson``, gzip allowed; its
    other fields are not read) or a text file (one key per line, UTF-8, a
    byte-order mark allowed)."""
    if not os.path.exists(path):
        raise ConfigError(f"--survivors {path} does not exist; give the parquet, jsonl or text "
                          "file of the keys that survived")
    low = path.lower()
    if os.path.isdir(path) or low.endswith(".parquet"):
        try:
            names = pq.read_schema(path).names if os.path.isfile(path) else \
                pq.ParquetDataset(path).schema.names
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"--survivors {path}: cannot read parquet ({exc})") from None
        if key_column not in names:
            raise ConfigError(f"--survivors {path} has no column {key_column!r} (columns: "
                              f"{', '.join(names)}); name its key column with --key-column, or "
                              "write the survivors' keys under that name")
        col = pq.read_table(path, columns=[key_column]).column(0)
    elif low.endswith((".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")):
        col = _jsonl_keys(path, key_column)
    else:
        with open(path, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise InputError(f"--survivors {path}: line {line} is not UTF-8 "
                             f"({raw[exc.start:exc.start + 4]!r}); write the keys as UTF-8 "
                             "text, one per line") from None
        lines = [ln.strip() for ln in text.split("\n")]
        col = pa.chunked_array([pa.array([ln for ln in lines if ln], pa.large_string())])
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if col.null_count:
        row = int(pc.index(pc.is_null(col), True).as_py())
        raise InputError(f"--survivors {path}: row {row} has no {key_column!r}; every survivor "
                         "needs its key (drop the row or fill it)")
    return pc.unique(col)


def _jsonl_keys(path: str, key_column: str) -> pa.ChunkedArray:
    """The key field of every object of a jsonl file, as integers or else
    strings, the other fields skipped unread (their types may vary)."""
    import pyarrow.json as pj

    err = None
    for typ in (pa.int64(), pa.large_string()):
        opts = pj.ParseOptions(explicit_schema=pa.schema([(key_column, typ)]),
                               unexpected_field_behavior="ignore")
        try:
            t = pj.read_json(path, parse_options=opts)
        except pa.ArrowException as exc:
            err = exc
            continue
        if t.column(0).null_count == t.num_rows and t.num_rows:
            raise ConfigError(f"--survivors {path} has no field {key_column!r}; name its key "
                              "field with --key-column, or write the survivors' keys under "
                              "that name")
        return t.column(0)
    raise InputError(f"--survivors {path}: not newline-delimited JSON objects whose "
                     f"{key_column!r} is an integer or a string in every line ({err})")


_INT_TEXT = r"^[+-]?[0-9]{1,38}$"


def _as_integers(col: pa.Array, signed: bool) -> tuple:
    """(values, ok): ``col`` as int64 (``signed``) or uint64 numbers, and
    which of them are integers of that type (integers, or strings that read
    as decimal integers, blanks around them and a sign allowed). Nulls are
    not ok."""
    n = len(col)
    dt = np.int64 if signed else np.uint64
    t = col.type
    if pa.types.is_integer(t):
        ok = np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), bool)
        v = col.fill_null(0).to_numpy(zero_copy_only=False)
        if signed and pa.types.is_unsigned_integer(t):
            ok &= v <= np.iinfo(np.int64).max
        elif not signed and pa.types.is_signed_integer(t):
            ok &= v >= 0
        return np.where(ok, v, 0).astype(dt), ok
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return np.zeros(n, dt), np.zeros(n, bool)
    txt = pc.utf8_trim_whitespace(col.cast(pa.large_string()))
    ok = np.asarray(pc.fill_null(pc.match_substring_regex(txt, _INT_TEXT), False)
                    .to_numpy(zero_copy_only=False), bool)
    num = pc.cast(pc.replace_substring_regex(txt.filter(pa.array(ok)), r"^\+", ""),
                  pa.decimal128(38, 0))
    from decimal import Decimal

    lo, hi = (-(2 ** 63), 2 ** 63 - 1) if signed else (0, 2 ** 64 - 1)
    fits = pc.and_(pc.greater_equal(num, pa.scalar(Decimal(lo), pa.decimal128(38, 0))),
                   pc.less_equal(num, pa.scalar(Decimal(hi), pa.decimal128(38, 0))))
    fits = np.asarray(fits.to_numpy(zero_copy_only=False), bool)
    out = np.zeros(n, dt)
    where = np.flatnonzero(ok)
    out[where[fits]] = num.filter(pa.array(fits)).cast(pa.int64() if signed else pa.uint64()) \
        .to_numpy(zero_copy_only=False)
    ok[where[~fits]] = False
    return out, ok


def _as_bytes(col: pa.Array) -> pa.Array:
    """Keys compared as bytes: strings and binaries as they are, integers as
    their decimal text."""
    if pa.types.is_integer(col.type):
        col = col.cast(pa.large_string())
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
            or pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)
            or pa.types.is_string_view(col.type)):
        raise InputError(f"keys must be integers or strings, not {col.type}")
    return col.cast(pa.large_binary())


class KeySet:
    """Exact membership of pool keys among the survivors.

    The survivors are compared as each shard's key column holds its keys:
    integers (compared as numbers; a survivor that is no integer of the
    column's signedness, as ``x``, ``1.5`` or 2**64 for int64 keys, matches no
    such key) or bytes (strings by their UTF-8 bytes, found by 64-bit hash and
    binary search, then compared); a pool whose shards hold keys of both kinds
    is compared shard by shard. :meth:`lookup` gives each pool row the class
    of the survivors equal to it (``1000`` and ``01000`` are one integer), a
    number fixed by the survivors alone (so a resumed run's classes are the
    same); :meth:`missing` the survivors of no class found."""

    KINDS = ("int", "bytes", "uint")  # class numbers: kind k's from k * len(survivors)

    def __init__(self, keys: pa.Array):
        if pa.types.is_floating(keys.type):
            raise ConfigError("the survivor keys are floating-point numbers; write them as "
                              "integers or strings, as the pool holds them")
        self.raw = keys
        self.kind = None   # the kind of the last column compared
        self.sub: dict = {}  # kind -> its index: {"cls": per survivor its class or -1, ...}

    def _prepare(self, kind: str) -> dict:
        if kind in self.sub:
            return self.sub[kind]
        base = self.KINDS.index(kind) * len(self.raw)
        if kind != "bytes":
            v, ok = _as_integers(self.raw, kind == "int")
            u, inv = np.unique(v[ok], return_inverse=True)
            cls = np.full(len(self.raw), -1, np.int64)
            cls[ok] = inv + base
            d = {"u": u, "cls": cls, "base": base}
        else:
            values = _as_bytes(self.raw)  # distinct as the survivors are
            h = key_hashes(values, where="survivors")
            order = np.argsort(h, kind="stable")
            d = {"values": values, "order": order, "h": h[order], "base": base,
                 "cls": np.arange(len(self.raw), dtype=np.int64) + base}
        self.sub[kind] = d
        return d

    def __len__(self) -> int:
        return len(self.raw)

    def lookup(self, col, where: str, first: int) -> np.ndarray:
        """Per row of ``col`` (the pool's keys): the class of the survivors
        equal to it, or -1 (a null key is no survivor's)."""
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_dictionary(col.type):  # (a pandas category): its values
            col = col.cast(col.type.value_type)
        typ = col.type
        self.kind = ("int" if pa.types.is_signed_integer(typ) else "uint") \
            if pa.types.is_integer(typ) else "bytes"
        d = self._prepare(self.kind)
        n = len(col)
        out = np.full(n, -1, np.int64)
        if not n or not len(self.raw):
            return out
        if self.kind != "bytes":
            u = d["u"]
            v, ok = _as_integers(col, self.kind == "int")
            if not u.size:
                return out
            pos = np.minimum(np.searchsorted(u, v), u.size - 1)
            hit = ok & (u[pos] == v)
            out[hit] = pos[hit] + d["base"]
            return out
        values, order, h, base = d["values"], d["order"], d["h"], d["base"]
        valid = np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), bool)
        rows = np.flatnonzero(valid)
        b = _as_bytes(col.filter(pa.array(valid)) if rows.size < n else col)
        hp = key_hashes(b, where=where, first_row=first)
        pos = np.minimum(np.searchsorted(h, hp), h.size - 1)
        ci = np.flatnonzero(h[pos] == hp)
        if ci.size:
            eq = pc.equal(values.take(pa.array(order[pos[ci]])),
                          b.take(pa.array(ci))).to_numpy(zero_copy_only=False)
            out[rows[ci[eq]]] = order[pos[ci[eq]]] + base
            for i in ci[~eq]:  # a 64-bit hash shared by two survivors: the rest of the run
                p = int(pos[i]) + 1
                while p < h.size and h[p] == hp[i]:
                    if values[int(order[p])] == b[int(i)]:
                        out[rows[i]] = order[p] + base
                        break
                    p += 1
        return out

    def missing(self, found: np.ndarray) -> np.ndarray:
        """The survivors (indices into the keys given) whose class is not
        among ``found`` (in every kind of key compared with them)."""
        n = len(self.raw)
        if not n:
            return np.zeros(0, np.int64)
        for k in np.unique(np.asarray(found, np.int64) // n):  # (found by an earlier run)
            self._prepare(self.KINDS[int(k)])
        hit = np.zeros(len(self.KINDS) * n, bool)
        hit[found] = True
        seen = np.zeros(n, bool)
        for kind in sorted(self.sub):
            cls = self.sub[kind]["cls"]
            seen |= (cls >= 0) & hit[np.maximum(cls, 0)]
        return np.flatnonzero(~seen)


# ---------------------------------------------------------------- the run
def _source(root: str) -> dict:
    path = OutputLayout(root).config
    if not os.path.exists(path):
        raise ConfigError(f"{root} holds no run (no config.json); give the --out of a count or "
                          "curate run made with --save-matches")
    with open(path) as f:
        return json.load(f)


def _survivor_file(layout: OutputLayout, kind: str, i: int) -> str:
    return layout.join("work", "survivors", f"{kind}-{i:05d}.npy")


def _save_npy(path: str, a: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, a)
    atomic_write_bytes(path, buf.getvalue())


def rebalance(root: str, survivors: str, key_column: str, out: str, *, t=None,
              tail_fraction=None, target_size=None, outputs=("parquet",),
              samples_per_shard: int = 10000, device=None, threads=None,
              executor: str = "local", address=None, overwrite: bool = False,
              report: bool = True, batch_bytes: int | None = None) -> dict:
    """Curate the survivors of the run in ``root`` into ``out`` (see the module)."""
    given = [x is not None for x in (t, tail_fraction, target_size)]
    if sum(given) != 1:
        raise ConfigError("give exactly one of --t T, --tail-fraction P and --target-size N")
    if target_size is not None and (isinstance(target_size, bool) or int(target_size) < 1):
        raise ConfigError(f"--target-size must be an integer >= 1, not {target_size!r}")
    src = _source(root)
    files = dict(saved_match_files(root))
    base = src.get("config") or {}
    if base.get("worldwide"):
        raise ConfigError(f"{root} is a worldwide run; rebalance covers MetaCLIP 1 runs")
    if not isinstance(base.get("metadata"), str) or base["metadata"].startswith("<"):
        raise ConfigError(f"{root}: its metadata was given as a list in Python, not a file; "
                          "rerun it with a metadata file")
    cwd = src.get("cwd")  # the run's paths are as given to it, relative to where it ran

    def at(p: str) -> str:
        return p if cwd is None or is_url(p) or os.path.isabs(p) else os.path.join(cwd, p)

    metadata = at(base["metadata"])
    if not is_url(metadata) and not os.path.exists(metadata):
        raise ConfigError(f"the run in {root} matched against --metadata {base['metadata']} "
                          f"(its config.json), and {metadata} does not exist"
                          + ("" if cwd else "; run rebalance from the directory that run "
                             "ran in, where its relative paths lead") +
                          ", or restore the list there")
    keys = load_survivors(survivors, key_column)
    kw = {} if batch_bytes is None else {"batch_bytes": batch_bytes}
    cfg = CurateConfig(
        metadata=metadata, inputs=tuple(at(p) for p in base["inputs"]), out=out, t=t,
        tail_fraction=tail_fraction, text_column=base.get("text_column"),
        key_column=key_column, seed=int(base.get("seed", 0)), device=device, threads=threads,
        limit=base.get("limit"), overwrite=overwrite, report=report, executor=executor,
        address=address, group_column=base.get("group_column"), outputs=outputs,
        samples_per_shard=samples_per_shard, on_bad_row=base.get("on_bad_row", "error"),
        extra={"row_subset": True, "source_key_column": base.get("key_column")}, **kw)
    from .run import plan_shards
    from .worker import metadata_of

    mds, md_sha = metadata_of(cfg)
    was = src.get("fingerprint_doc") or {}
    if was.get("metadata") not in (None, md_sha):
        raise ConfigError(f"the metadata list {cfg.metadata} is not the one the run in {root} "
                          "matched against (its content differs): its saved entry ids would "
                          "name other entries; run rebalance where that run's paths lead to "
                          "its files (they are as given to it), or restore the list")
    layout = OutputLayout(resolve_out(out))
    if os.path.realpath(layout.root) == os.path.realpath(root):
        raise ConfigError(f"--out {out} is the run being rebalanced; choose another directory")
    shards = resolve_inputs(cfg.inputs, need_unique_names=False, exclude=(layout.root, root))
    ident = [shard_identity(s, False) for s in shards]
    old = {d["path"]: d for d in was.get("inputs", [])}
    for d in ident:
        o = old.get(d["path"])
        if o is None or o.get("size") != d["size"] or o.get("mtime_ns") != d["mtime_ns"]:
            raise ConfigError(f"input {d['path']} is {'new' if o is None else 'changed'} since "
                              f"the run in {root}, so its saved matches do not describe it; "
                              "rerun that run (with --save-matches) first")
    gone = sorted(set(old) - {d["path"] for d in ident})
    if gone:  # the saved matches are named by each shard's place among the run's inputs
        raise ConfigError(f"input {gone[0]} of the run in {root} is gone"
                          f"{f' (and {len(gone) - 1} more)' if len(gone) > 1 else ''}; its "
                          "saved matches and those of the shards after it no longer line up "
                          "with the inputs: restore it, or rerun that run without it")
    plan = plan_shards(cfg, shards)
    missing = [s.path for s, _ in plan if s.index not in files]
    if missing:
        raise ConfigError(f"{root} has no saved matches for {missing[0]}; rerun it with "
                          "--save-matches")
    check_outputs(cfg, shards)
    h = hashlib.sha256()
    files_ = [survivors] if not os.path.isdir(survivors) else sorted(
        os.path.join(r, f) for r, _, fs in os.walk(survivors) for f in fs)
    for path in files_:  # a directory of parts: each part's name and bytes
        if path != survivors:
            h.update(os.path.relpath(path, survivors).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    h.update(json.dumps([src.get("config_fingerprint"), target_size]).encode())
    doc = cfg.fingerprint_doc(md_sha, ident, "rebalance", h.hexdigest())
    with OutLock(layout):
        return _locked(cfg, layout, root, mds, doc, plan, files, KeySet(keys), survivors,
                       target_size)


def _scan_shard(cfg, layout: OutputLayout, shard, max_rows, match_file: str,
                keyset: KeySet, n_entries: int) -> dict:
    """The survivors of one shard: their rows, the survivor keys found, their
    counts (over the saved matches) and, with a group column, their choices."""
    marker = layout.pass1_marker(shard.index)
    if os.path.exists(marker):
        with open(marker) as f:
            return json.load(f)
    t0 = time.perf_counter()
    schema = shard_schema(shard)
    cols = None
    if schema is not None:
        cols = pass1_columns(cfg, shard, schema.names)
        if cfg.key_column not in cols:  # pass 1 may leave it unread; here it is the point
            cols.append(cfg.key_column)
        if cfg.key_column not in schema.names:
            raise InputError(f"{shard.path}: no key column {cfg.key_column!r} (columns: "
                             f"{', '.join(schema.names)}); give --key-column the pool's key")
    rows, found, grp = [], [], []
    captions = nulls = 0
    for table, first in shard_batches(cfg, shard, max_rows, cols):
        if cfg.key_column not in table.column_names:
            raise InputError(f"{shard.path}: no key column {cfg.key_column!r} (columns: "
                             f"{', '.join(table.column_names)}); give --key-column the pool's key")
        idx = keyset.lookup(table.column(cfg.key_column), shard.path, first)
        sel = np.flatnonzero(idx >= 0)
        valid = table.column(cfg.text_column).is_valid().to_numpy(zero_copy_only=False)
        rows.append(sel + first)
        found.append(idx[sel])
        captions += sel.size
        nulls += int(sel.size - np.count_nonzero(valid[sel]))
        if cfg.group_column:
            ok = sel[valid[sel]]
            sub = table.take(pa.array(ok))
            g = group_keys(cfg, shard, sub, first)
            k = row_keys(cfg, shard, sub, first)
            grp.append((g, choice_values(cfg.seed, g, k), ok + first))
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    is_surv = np.zeros(int(rows.max()) + 1 if rows.size else 0, bool)
    is_surv[rows] = True
    counts = np.zeros(n_entries, np.uint64)
    matched_rows = []
    for e, tid in iter_matches(match_file):
        tid = tid.astype(np.int64)
        m = tid < is_surv.size
        m[m] = is_surv[tid[m]]
        if m.any():
            counts += np.bincount(e[m], minlength=n_entries).astype(np.uint64)
            matched_rows.append(np.unique(tid[m]))
    matched = int(np.unique(np.concatenate(matched_rows)).size) if matched_rows else 0
    nz = np.flatnonzero(counts)
    atomic_write_parquet(layout.pass1_counts(shard.index), pa.table({
        "lang": pa.array([ALL] * nz.size, pa.string()),
        "entry_id": pa.array(nz.astype(np.int32)), "count": pa.array(counts[nz], pa.uint64())}))
    if cfg.group_column:
        write_group_choices(layout, shard.index, grp)
    os.makedirs(layout.join("work", "survivors"), exist_ok=True)
    _save_npy(_survivor_file(layout, "rows", shard.index), rows)
    _save_npy(_survivor_file(layout, "found", shard.index),
              np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64))
    stats = {"shard": shard.name, "path": shard.path, "captions": captions,
             "null_captions": nulls, "matched": matched,
             "seconds_pass1": time.perf_counter() - t0,
             "failed_downloads": 0}  # survivors were downloaded: none is a failed row
    atomic_write_json(marker, stats)
    return stats


def _survivor_model(cfg, layout, plan, files, counts) -> SizeModel:
    """The expected curated size of the captions that may be kept: the
    survivors', or with a group column each group's chosen one."""
    model = SizeModel(counts)
    for shard, _ in plan:
        rows = np.load(layout.groups(shard.index) if cfg.group_column else
                       _survivor_file(layout, "rows", shard.index))
        is_surv = np.zeros(int(rows.max()) + 1 if rows.size else 0, bool)
        is_surv[rows] = True
        for e, tid in iter_matches(files[shard.index]):
            tid = tid.astype(np.int64)
            m = tid < is_surv.size
            m[m] = is_surv[tid[m]]
            model.add(e[m], tid[m])
    return model.finish()


def _link(src: str, dst: str) -> None:
    if os.path.exists(dst):
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        os.symlink(os.path.abspath(src), dst)


def _locked(cfg, layout, root, mds, doc, plan, files, keyset, survivors_path,
            target_size) -> dict:
    from .pass2 import drop_pass1_scratch, pass2_shard
    from .run import _keep_timings, _run_pass, _summary, describe_workers, make_executor
    from .worker import WorkerSetup

    fp = prepare_out(cfg, layout, doc, "rebalance")
    n_entries = len(mds[ALL])
    seconds: dict = {}
    t0 = time.perf_counter()
    p1 = [_scan_shard(cfg, layout, s, m, files[s.index], keyset, n_entries) for s, m in plan]
    seconds["survivors"] = time.perf_counter() - t0
    counts = pool_counts(layout, mds, plan)
    os.makedirs(layout.groups_dir, exist_ok=True)
    if cfg.group_column:  # among the survivors' captions (the choice does not depend on t)
        choose_groups(layout, plan)
    else:
        for s, _ in plan:
            _save_npy(layout.groups(s.index), np.load(_survivor_file(layout, "rows", s.index)))
    if target_size is not None:
        model = _survivor_model(cfg, layout, plan, files, counts[ALL])
        t = model.solve(float(target_size))
        logger.info("--target-size %s: t = %s (expected curated %s)", f"{target_size:,}",
                    f"{t:,}", f"{model.expected(t):,.0f}")
        cfg = replace(cfg, t=int(t))
    cfg.require_t()
    ts = language_t(cfg, counts)
    logger.info("t = %s", f"{ts[ALL]:,}")
    probs = {ALL: probabilities(counts[ALL], ts[ALL])}
    write_entry_counts(layout, mds, counts, probs)
    buf = io.BytesIO()
    np.savez(buf, **probs)
    atomic_write_bytes(layout.prob, buf.getvalue())
    src_layout = OutputLayout(root)
    for s, _ in plan:
        if not os.path.exists(layout.stats(s.index)):
            _link(files[s.index], layout.work_matches_index(s.index))
        spans = src_layout.wds_spans(s.index)  # DIR's pass 1 found where its samples lie
        if "webdataset" in cfg.outputs and os.path.exists(spans):
            _link(spans, layout.wds_spans(s.index))
    ex = make_executor(cfg)
    setup = WorkerSetup(cfg, sha=doc.get("metadata"))
    if ex.remote:
        setup = setup.with_tables()
    done: dict = {}
    try:
        p2 = _run_pass(ex, pass2_shard, [(layout, s, m) for s, m in plan], setup, layout.stats,
                       "pass2", seconds, done)
        for s, _ in plan:  # what a stop between a marker and its clean-up left here
            drop_pass1_scratch(layout, s)
        for (s, _), a, b in zip(plan, p1, p2):  # pass 2 counted every row it read
            mine = {k: a[k] for k in ("captions", "null_captions", "matched")}
            if any(b.get(k) != v for k, v in mine.items()):
                b.update(mine)
                atomic_write_json(layout.stats(s.index), b)
        describe_workers(ex, setup, layout)
        summary = _summary(cfg, "rebalance", fp, p1, p2, counts, ts, seconds, ex)
        gone = keyset.missing(np.concatenate(
            [np.zeros(0, np.int64)] + [np.load(_survivor_file(layout, "found", s.index))
                                       for s, _ in plan]))
        missing = int(gone.size)
        summary.update({"pool": sum(x["captions"] for x in p1),
                        "null_captions": sum(x["null_captions"] for x in p1),
                        "matched": sum(x["matched"] for x in p1), "source": root,
                        "survivors": {"file": survivors_path, "keys": len(keyset),
                                      "rows": sum(x["captions"] for x in p1),
                                      "not_in_pool": missing}})
        if missing:
            ex_keys = keyset.raw.take(pa.array(gone[:5])).to_pylist()
            logger.warning("%s of %s survivor keys are in no shard of the pool (e.g. %s); "
                           "they are counted in summary.json (survivors.not_in_pool)",
                           f"{missing:,}", f"{len(keyset):,}", ", ".join(map(repr, ex_keys)))
        write_outputs(cfg, layout, [s for s, _ in plan], p2, summary, ex, setup)
        if ex.remote:  # a worker lost while writing an output left its temporary files
            sweep_tmp(layout, keep_own=True)
        _keep_timings(layout, summary, done)
        atomic_write_json(layout.summary, summary)
    finally:
        ex.close()
    if cfg.report:
        try:
            from .report import write_report
        except ImportError:
            write_report = None
        if write_report is not None:
            write_report(layout.root)
    drop_unrequested(cfg, layout)
    return summary
