"""A worker's state, built once per process by one :class:`WorkerSetup`.

A worker matches with one engine per language (a MetaCLIP 1 run has the one
language ``all``); on a GPU every language's tables are uploaded once. The
executors receive a :class:`WorkerSetup` (picklable: the configuration, and
for executors that ship it, the tables already loaded by the driver) and call
it once in each worker process; the stages then take the :class:`Worker` it
returns as their first argument.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace

import numpy as np

from ..config import CurateConfig, threads_choice
from ..errors import ConfigError
from ..io.fs import is_url, stage_dir
from ..metadata import load_metadata
from .layout import ALL, OutputLayout


def worldwide_files(path: str) -> dict:
    """{language: path} of every ``<lang>.json`` in a directory, in order."""
    if not os.path.isdir(path):
        raise ConfigError(f"--worldwide {path}: not a directory of <lang>.json metadata files")
    files = sorted(f for f in os.listdir(path) if f.lower().endswith(".json"))
    if not files:
        raise ConfigError(f"--worldwide {path}: holds no <lang>.json metadata file")
    if any(f[:-5] == ALL for f in files):
        raise ConfigError(f"--worldwide {path}: {ALL}.json names no language ({ALL!r} stands "
                          "for the whole pool in the outputs); rename it after its language")
    return {f[:-5]: os.path.join(path, f) for f in files}


def load_worldwide(path: str) -> dict:
    """{language: Metadata} of every ``<lang>.json`` in a directory."""
    return {code: load_metadata(f) for code, f in worldwide_files(path).items()}


def metadata_of(cfg: CurateConfig) -> tuple[dict, str]:
    """{language: Metadata} and one hash of all of it."""
    import hashlib

    mds = load_worldwide(cfg.worldwide) if cfg.worldwide else {ALL: load_metadata(cfg.metadata)}
    if ALL in mds:
        return mds, mds[ALL].sha256
    h = hashlib.sha256("".join(f"{c}:{md.sha256};" for c, md in sorted(mds.items())).encode())
    return mds, h.hexdigest()


def worker_tables(cfg: CurateConfig) -> dict:
    """What a worker matches with: {language: (Metadata, MatchTables)}."""
    from ..tables import load_tables, load_tables_ww

    if cfg.worldwide:
        return {code: (md, load_tables_ww(md)) for code, md in load_worldwide(cfg.worldwide).items()}
    md = load_metadata(cfg.metadata)
    return {ALL: (md, load_tables(md))}


@dataclass
class Worker:
    """One process's engines and the state the stages keep between shards."""

    cfg: CurateConfig
    langs: list
    metadata: dict           # {language: Metadata}
    engines: dict            # {language: engine}
    router: object | None    # worldwide: routes captions to languages
    reader: str              # pass 1's parquet reader: arrow or cudf
    prob: dict | None = None                       # pass 2: {language: prob array}
    prob_key: tuple | None = None
    key: tuple = field(default=())
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def local(self, layout: OutputLayout) -> OutputLayout:
        """``layout`` on this machine: for an output URL, this node's staging
        directory (made here; the driver's path need not be this node's, and
        only files under it are published)."""
        if is_url(self.cfg.out):
            root = stage_dir(self.cfg.out)
            if root != layout.root:
                layout = OutputLayout(root)
                for d in layout.marker_dirs():  # as the driver made them in its own
                    os.makedirs(d, exist_ok=True)
        return layout

    @property
    def engine_name(self) -> str:
        return sorted({e.name for e in self.engines.values()})[0]

    @property
    def shards_at_once(self) -> int:
        """How many shards an executor may run at once in this worker: on the
        CPU, one per engine thread (at most 4), so that one shard's reading and
        writing overlap another's matching (the engines' thread pools are
        shared, so matching never uses more than ``threads`` cores); on a GPU,
        one (the device already overlaps the copies of one shard)."""
        engines = list(self.engines.values())
        if not engines or any(e.name != "cpu" for e in engines):
            return 1
        return max(1, min(4, min(e.threads for e in engines)))

    def describe(self) -> dict:
        return {"pid": os.getpid(), "engine": self.engine_name, "reader": self.reader,
                "shards_at_once": self.shards_at_once}

    def lang_counts(self) -> dict:
        """Zeroed uint64 counts per language for one shard (its own arrays:
        shards may run at once in one worker)."""
        return {c: self.engines[c].zeros(len(self.metadata[c]), np.uint64) for c in self.langs}


def _key(cfg: CurateConfig) -> tuple:
    return (cfg.metadata, cfg.worldwide, cfg.lang_column, cfg.device, cfg.threads, cfg.reader)


def _tables_identity(cfg: CurateConfig, tables: dict | None, sha: str | None) -> tuple:
    """What a worker's tables come from, so that a list rewritten between two
    runs of one process is read again, never matched with its old tables:
    the hash of the lists' content the driver read for the run's fingerprint
    (``sha``), or of the lists it shipped; else each metadata file as the
    file system has it now (path, size, modification time, inode)."""
    if sha is not None:
        return (sha,)
    if tables is not None:
        return tuple(sorted((c, md.sha256) for c, (md, _) in tables.items()))
    if cfg.worldwide:
        paths = list(worldwide_files(cfg.worldwide).values())
    elif isinstance(cfg.metadata, (str, os.PathLike)):
        paths = [os.fspath(cfg.metadata)]
    else:  # a list given in Python: the configuration holds it, and the key compares it
        return ()
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((p, st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            out.append((p, None))
    return tuple(out)


_CURRENT: list = []  # this process's worker (one at a time), reused across runs of one config


@dataclass(frozen=True)
class WorkerSetup:
    """Builds (or reuses) this process's :class:`Worker` for ``cfg``.

    ``tables``: the {language: (Metadata, MatchTables)} the driver loaded, so
    that remote workers do not load them again; None loads them here.
    ``sha``: the hash of the metadata the run's fingerprint holds; a worker
    built from another content is not reused.
    ``device`` and ``threads``, when given to the call, override the
    configuration's (an executor placing CPU workers sets them)."""

    cfg: CurateConfig
    tables: dict | None = None
    sha: str | None = None  # the metadata's content hash, as the driver read it for the run

    def with_tables(self) -> "WorkerSetup":
        return self if self.tables is not None else replace(self, tables=worker_tables(self.cfg))

    def __call__(self, device: str | None = None, threads: int | None = None) -> Worker:
        from ..engine import resolve_device
        from ..lang import Router

        cfg = self.cfg
        if device is not None or threads is not None:
            cfg = replace(cfg, device=device or cfg.device, threads=threads or cfg.threads)
        key = _key(cfg) + (_tables_identity(cfg, self.tables, self.sha),)
        if _CURRENT and _CURRENT[0].key == key:
            w = _CURRENT[0]
            w.cfg = cfg
            return w
        dev = resolve_device(cfg.device)  # fail fast, before building anything
        # the router first: it reads the language-ID model on a thread of its
        # own while the tables load
        router = Router(sorted(self.tables) if self.tables is not None else
                        sorted(worldwide_files(cfg.worldwide)), cfg.lang_column,
                        threads_choice(cfg.threads)) if cfg.worldwide else None
        try:
            w = self._build(cfg, dev, key, router)
        except BaseException:
            if router is not None:
                router.close()
            raise
        for old in _CURRENT:  # the worker of another configuration: its language ID ends
            if old.router is not None:
                old.router.close()
        _CURRENT[:] = [w]
        return w

    def _build(self, cfg: CurateConfig, dev: str, key: tuple, router) -> Worker:
        from ..cudf_io import resolve_reader
        from ..engine import make_engine

        warming = None
        if dev == "cpu":  # numba's set-up and the table-free kernels, beside the tables' load
            from ..engine import prewarm_kernels
            from .stream import Aside

            warming = Aside(prewarm_kernels, name="gpucurate-prewarm")
        try:
            tables = self.tables if self.tables is not None else worker_tables(cfg)
        finally:
            if warming is not None:
                warming.join()
        tables = {c: (md, t.writable()) for c, (md, t) in tables.items()}
        langs = sorted(tables)
        return Worker(cfg=cfg, langs=langs, metadata={c: tables[c][0] for c in langs},
                      engines={c: make_engine(tables[c][1], dev, cfg.threads) for c in langs},
                      router=router, reader=resolve_reader(cfg.reader, dev), key=key)


def setup(cfg: CurateConfig) -> Worker:
    """This process's worker for ``cfg`` (built once, then reused)."""
    return WorkerSetup(cfg)()
