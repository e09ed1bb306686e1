"""Entry-count files: pass 1's per-shard counts summed, ``entry_counts``
written and read (also MetaCLIP's ``entry_counts_*.json`` mappings), and the
counts of independent jobs merged."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ConfigError, InputError
from ..io import atomic_write_parquet
from ..io.fs import is_url, local_path
from ..metadata import load_metadata
from .layout import ALL, OutputLayout
from .worker import load_worldwide


def write_entry_counts(layout: OutputLayout, mds: dict, counts: dict,
                       probs: dict | None) -> None:
    """entry_counts.parquet (MetaCLIP 1) or entry_counts/<lang>.parquet (worldwide)."""
    if ALL not in mds:
        os.makedirs(layout.entry_counts_dir, exist_ok=True)
    for code, md in mds.items():
        cols = {"entry_id": pa.array(np.arange(len(md), dtype=np.int32)),
                "entry": md.arrow(),
                "count": pa.array(counts[code], pa.uint64())}
        if probs is not None:
            cols["prob"] = pa.array(probs[code], pa.float64())
        # the entries are unique: no dictionary (it overflows) and no min/max;
        # worldwide's 2.6M entries: 0.38 s and 30.3 MB -> 0.25 s and 24.4 MB
        atomic_write_parquet(layout.entry_counts_of(code), _stamped(pa.table(cols), md),
                             use_dictionary=False,
                             write_statistics=[c for c in cols if c != "entry"])


SHA_KEY = b"gpucurate.metadata_sha256"
SOURCE_KEY = b"gpucurate.metadata_source"


def _stamped(table: pa.Table, md) -> pa.Table:
    """The counts table carrying the SHA-256 (and source) of its metadata list
    in its schema metadata, so that counts are never read against another list."""
    return table.replace_schema_metadata({SHA_KEY: md.sha256.encode(),
                                          SOURCE_KEY: str(md.source).encode()})


def read_counts(path: str, metadata) -> np.ndarray:
    """Pool counts from an ``entry_counts.parquet`` (aligned by entry_id) or a
    MetaCLIP ``entry_counts_*.json`` (a mapping entry -> count)."""
    md = load_metadata(metadata)
    n = len(md)
    if not os.path.exists(path):
        raise InputError(f"counts {path} do not exist; give the entry_counts.parquet of a "
                         "count or curate run (or a MetaCLIP entry_counts_*.json)")
    if os.path.isdir(path):
        raise InputError(f"counts {path} is a directory; give an entry_counts.parquet file "
                         "(a directory of <lang>.parquet files goes with --worldwide)")
    if path.lower().endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                mapping = json.load(f)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read counts ({exc})") from None
        if not isinstance(mapping, dict):
            raise InputError(f"{path}: a counts .json maps entry -> count; this holds a "
                             f"{type(mapping).__name__}")
        known = set(md.entries)
        unknown = [e for e in mapping if e not in known]
        if unknown:
            raise InputError(f"{path}: {len(unknown):,} of its entries are not in the metadata "
                             f"list {md.source} (e.g. {unknown[0]!r}): its counts were made "
                             "with another list; use the counts made with this one")
        counts = np.zeros(n, np.uint64)
        for i, e in enumerate(md.entries):
            v = mapping.get(e, 0)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**64:
                raise InputError(f"{path}: count of entry {e!r} is {v!r}, not an integer in "
                                 "[0, 2**64)")
            counts[i] = v
        return counts
    try:
        names = pq.read_schema(path).names
        t = pq.read_table(path, columns=["entry_id", "count"] +
                          (["entry"] if "entry" in names else []))
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise InputError(f"{path}: cannot read entry counts ({exc}); expected an "
                         "entry_counts.parquet with entry_id and count columns") from None
    meta = t.schema.metadata or {}
    sha = meta.get(SHA_KEY, b"").decode()
    if sha and sha != md.sha256:
        src = meta.get(SOURCE_KEY, b"?").decode()
        raise InputError(f"{path}: these counts were made with the metadata list {src} "
                         f"(sha256 {sha[:12]}), not with {md.source} (sha256 "
                         f"{md.sha256[:12]}); use the counts made with this list, or this "
                         "list with those counts")
    for col in ("entry_id", "count"):  # whole numbers, none null and none negative
        c = t.column(col)
        if not pa.types.is_integer(c.type) or c.null_count:
            raise InputError(f"{path}: its {col} column is {c.type}"
                             f"{' with nulls' if c.null_count else ''}, not integers; use an "
                             "entry_counts.parquet written by count or curate")
        if len(c) and pc.min(c).as_py() < 0:
            raise InputError(f"{path}: its {col} column holds a negative value; use an "
                             "entry_counts.parquet written by count or curate")
    ids = t.column("entry_id").to_numpy()
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise InputError(f"{path}: entry ids run to {ids.max()}, but the metadata has {n} "
                         "entries; use the counts made with this metadata")
    if "entry" in t.column_names and ids.size:  # the entries named, as this list has them
        ours = md.arrow().take(pa.array(ids))
        theirs = t.column("entry").combine_chunks().cast(ours.type)
        same = pc.fill_null(pc.equal(ours, theirs), False).to_numpy(zero_copy_only=False)
        if not same.all():
            i = int(np.argmin(same))
            raise InputError(f"{path}: entry {int(ids[i])} is {theirs[i].as_py()!r} there but "
                             f"{ours[i].as_py()!r} in {md.source}: its counts were made with "
                             "another list; use the counts made with this one")
    counts = np.zeros(n, np.uint64)
    np.add.at(counts, ids, t.column("count").to_numpy().astype(np.uint64))
    u, k = np.unique(ids, return_counts=True)
    if (k > 1).any():  # an entry listed twice: summed exactly, never past 2**64 - 1
        vals = t.column("count").to_pylist()
        for e in u[k > 1]:
            if sum(vals[i] for i in np.flatnonzero(ids == e)) >= 2 ** 64:
                raise InputError(f"{path}: entry {int(e)} is listed more than once and its "
                                 "counts sum past 2**64 - 1 (uint64); they cannot be counts "
                                 "of real captions: check the file")
    return counts


def exact_sum(c: np.ndarray) -> int:
    """The sum of uint64 counts, exact (as Python ints where it could wrap)."""
    if c.size and int(c.max()) > (2 ** 64 - 1) // c.size:
        return sum(int(x) for x in c[c > 0])
    return int(c.sum())


def read_counts_all(path: str, mds: dict) -> dict:
    """{language: counts}: one file (MetaCLIP 1), or a directory of <lang>.parquet
    (or <lang>.json) files for a worldwide run (a language without one counts 0)."""
    if ALL in mds:
        return {ALL: read_counts(path, mds[ALL])}
    if not os.path.exists(path):
        raise InputError(f"counts {path} do not exist; give the entry_counts/ directory of "
                         "a worldwide count or curate run")
    if not os.path.isdir(path):
        raise InputError(f"counts {path}: a worldwide run takes a directory of "
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
    files = [f for f in os.listdir(path) if f.lower().endswith((".parquet", ".json"))]
    strangers = sorted(f for f in files if f.rsplit(".", 1)[0] not in mds)
    if strangers:
        raise InputError(f"{path}: {strangers[0]} counts a language the worldwide metadata "
                         f"has no list for (its languages: {', '.join(sorted(mds))}); give the "
                         "counts made with this metadata")
    if not files:
        raise InputError(f"{path} holds no <lang>.parquet count file; give the entry_counts/ "
                         "directory of a worldwide count or curate run")
    return out


def merge_count_files(paths, metadata, out_path: str, worldwide: str | None = None) -> np.ndarray:
    """Sum count files from independent jobs into one entry_counts.parquet; with
    ``worldwide``, sum entry_counts/ directories into one directory."""
    if is_url(out_path):
        raise ConfigError(f"merge-counts --out {out_path}: the merged counts are written to a "
                          "local path; give one, then upload the file if needed (balance "
                          "--counts reads s3://, gs://, hf:// and http(s):// too)")
    mds = load_worldwide(worldwide) if worldwide else {ALL: load_metadata(metadata)}
    total = {c: np.zeros(len(md), np.uint64) for c, md in mds.items()}
    seen: dict = {}
    for p in paths:  # one file given twice would be counted twice
        if is_url(p) or not os.path.exists(p):
            ident = p
        else:
            st = os.stat(p)
            ident = (st.st_dev, st.st_ino)
        if ident in seen:
            raise ConfigError(f"merge-counts: {seen[ident]} and {p} are the same file, whose "
                              "counts would be summed twice; give each job's counts once")
        seen[ident] = p
    for p in paths:
        with local_path(p) as local:  # s3://, gs://, hf://, http(s)://: a local copy
            for c, v in read_counts_all(local, mds).items():
                s = total[c] + v
                if (s < v).any():  # wrapped past 2**64 - 1
                    i = int(np.flatnonzero(s < v)[0])
                    raise InputError(f"{p}: entry {i}'s count sums past 2**64 - 1 (uint64) "
                                     "with the files before it; they cannot be counts of real "
                                     "captions: check the files")
                total[c] = s
    if worldwide:
        from .outdir import ensure_dir

        ensure_dir(out_path, "merge-counts --out")  # worldwide: a directory of <lang>.parquet
        for c, md in mds.items():
            _write_counts_file(os.path.join(out_path, f"{c}.parquet"), md, total[c])
        return np.concatenate(list(total.values()))
    if os.path.isdir(out_path):
        raise ConfigError(f"merge-counts --out {out_path} is a directory; give the file to "
                          f"write, e.g. {out_path}/entry_counts.parquet")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"merge-counts --out {out_path}: cannot make its directory ({exc})"
                          ) from None
    _write_counts_file(out_path, mds[ALL], total[ALL])
    return total[ALL]


def _write_counts_file(path: str, md, counts) -> None:
    atomic_write_parquet(path, _stamped(pa.table({
        "entry_id": pa.array(np.arange(len(md), dtype=np.int32)),
        "entry": md.arrow(),
        "count": pa.array(counts, pa.uint64())}), md))


def pool_counts(layout: OutputLayout, mds: dict, plan) -> dict:
    """The pool's counts: every shard's pass-1 counts summed, per language."""
    counts = {c: np.zeros(len(md), np.uint64) for c, md in mds.items()}
    for shard, _ in plan:
        # the language as a dictionary: its codes compared once, not once per row
        t = pq.read_table(layout.pass1_counts(shard.index), read_dictionary=["lang"])
        lang = t.column("lang").combine_chunks()
        if not pa.types.is_dictionary(lang.type):
            lang = lang.dictionary_encode()
        codes = lang.indices.to_numpy(zero_copy_only=False)
        ids = t.column("entry_id").to_numpy()
        cnt = t.column("count").to_numpy().astype(np.uint64)
        for j, c in enumerate(lang.dictionary.to_pylist()):
            if c in counts:
                sel = codes == j
                counts[c][ids[sel]] += cnt[sel]
    return counts
