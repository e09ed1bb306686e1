"""The output directory's life: taken by one run at a time (a lock), checked
against the run it holds (the fingerprint, and what differs), cleared of
exactly the run's outputs on ``--overwrite``, and swept of temporary files
that interrupted writers left. Nothing outside DIR is ever touched: symlinks
under DIR are removed as links, never followed."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import stat

from ..config import CurateConfig
from ..errors import ConfigError
from ..io import Shard, atomic_write_json
from ..io.atomic import TMP
from ..io.fs import is_url, remote_of, remote_out, stage_dir, unpublish, url_identity
from ..log import logger
from .layout import OutputLayout

_TMP_NAME = re.compile(re.escape(TMP) + r"\d+$")


def resolve_out(out: str) -> str:
    """The output directory as a real path; a symlink is resolved once, and said.
    For an ``s3://`` or ``gs://`` URL, the local staging directory whose
    files are uploaded as they are committed (``gpucurate.io.fs``)."""
    if is_url(out):
        return stage_dir(out)
    real = os.path.realpath(out)
    if os.path.islink(out.rstrip(os.sep) or out):
        logger.info("--out %s is a symlink: writing to %s", out, real)
    ensure_dir(real, "--out", out)
    if not os.access(real, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: the directory is not writable; give a writable place")
    return real


class OutLock:
    """An exclusive lock on DIR for a run's whole life (``DIR/.lock``, holding
    the holder's pid and host). Released when the process ends, however."""

    def __init__(self, layout: OutputLayout):
        self.path = layout.lock
        self.fd = None
        self.remote = remote_out(layout.root)  # OUT on s3:// or gs://: the lock object too

    def __enter__(self):
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot take the lock {self.path} ({exc.strerror}); is it a "
                              "symlink? remove it, or choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "another run"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                where = self.remote.url if self.remote else os.path.dirname(self.path)
                raise ConfigError(f"{where} is in use by {holder} (lock "
                                  f"{self.path}); wait for that run to end, or choose another "
                                  "--out") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"the run of pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        if self.remote is not None:
            try:
                self.remote.acquire()
            except BaseException:
                self.__exit__()
                raise
        return self

    def __exit__(self, *exc):
        if self.remote is not None:
            self.remote.release()
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            finally:
                os.close(self.fd)  # closing releases the lock
            self.fd = None


def ensure_dir(path: str, flag: str, given: str | None = None) -> None:
    """Make the directory ``path`` (the value ``given`` of ``flag``), or a
    ConfigError saying why it cannot be."""
    given = given or path
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag} {given} exists and is not a directory; give a directory "
                          "(it is created when missing)")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {given}: cannot create the directory ({exc.strerror}); give "
                          "a writable place") from None


def sweep_tmp(layout: OutputLayout, keep_own: bool = False) -> None:
    """Remove the temporary files (``*.tmp-<pid>``) that interrupted writers
    left under DIR: regular files only, symlinked directories not entered.
    With ``keep_own`` (between passes), this process's own (``.tmp-<its
    pid>``) are kept: they are live writes of a thread of this run (entry
    counts are written beside pass 2)."""
    own = f".tmp-{os.getpid()}" if keep_own else None
    # only what the run writes: a user's file, or a run into a folder inside DIR
    # (its own lock), is never touched
    tops = {os.path.basename(p) for p in layout.outputs()}
    for root, dirs, files in os.walk(layout.root, followlinks=False):
        if root == layout.root:
            dirs[:] = [d for d in dirs if d in tops or _TMP_NAME.sub("", d) in tops]
            files = [f for f in files if _TMP_NAME.sub("", f) in tops]
        for d in list(dirs):  # a directory an interrupted writer left (work/rows)
            p = os.path.join(root, d)
            if _TMP_NAME.search(d) and not (own and d.endswith(own)) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
                dirs.remove(d)
        for f in files:
            if _TMP_NAME.search(f) and not (own and f.endswith(own)):
                p = os.path.join(root, f)
                try:
                    if stat.S_ISREG(os.lstat(p).st_mode):
                        os.remove(p)
                except FileNotFoundError:
                    pass


def gather(layout: OutputLayout) -> None:
    """After a pass of workers on other nodes into a URL: what they published
    and this machine reads (markers, counts, stats, routing, kept counts),
    into its staging directory. The curated parts and saved matches stay in
    the bucket; the few readers of a part fetch it (``io.fs.fetch``)."""
    ro = remote_out(layout.root)
    if ro is not None:
        big = tuple(os.path.relpath(d, layout.root).replace(os.sep, "/") + "/"
                    for d in (layout.curated_dir, layout.matches_dir, layout.work_matches_dir))
        ro.pull_missing(skip=big)


def _remove(path: str) -> None:
    """Remove one output: a symlink or a file as itself, a directory's tree
    (``rmtree`` removes the links it holds without following them)."""
    unpublish(path)  # its objects, when DIR is staged for s3:// or gs://
    if os.path.islink(path) or (os.path.exists(path) and not os.path.isdir(path)):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def shard_identity(shard: Shard, verify: bool) -> dict:
    """What the fingerprint knows of an input shard: its path, size and
    modification time, and its content's SHA-256 with ``--verify-inputs``."""
    if is_url(shard.path):
        return url_identity(shard.path, verify)
    st = os.stat(shard.path)
    d = {"path": shard.path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if verify:
        h = hashlib.sha256()
        with open(shard.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        d["sha256"] = h.hexdigest()
    return d


def describe_change(old: dict, new: dict) -> str:
    """What differs between the fingerprints of two runs, in words."""
    said = []
    for k in sorted(set(old) | set(new)):
        if k == "inputs":
            continue
        if old.get(k) != new.get(k):
            said.append(f"{k} {old.get(k)!r} -> {new.get(k)!r}")
    a = {d["path"]: d for d in old.get("inputs", []) if isinstance(d, dict)}
    b = {d["path"]: d for d in new.get("inputs", []) if isinstance(d, dict)}
    hashed = (any("sha256" in d for d in a.values()), any("sha256" in d for d in b.values()))
    if hashed[0] != hashed[1]:  # not a change of the inputs: of how they are known
        said.append(f"--verify-inputs was given to {'that' if hashed[0] else 'this'} run only")
        a = {p: {k: v for k, v in d.items() if k != "sha256"} for p, d in a.items()}
        b = {p: {k: v for k, v in d.items() if k != "sha256"} for p, d in b.items()}
    for p in sorted(set(b) - set(a))[:3]:
        said.append(f"input {p} is new")
    for p in sorted(set(a) - set(b))[:3]:
        said.append(f"input {p} is gone")
    for p in sorted(set(a) & set(b)):
        if a[p] != b[p]:
            what = [k for k in ("size", "mtime_ns", "sha256") if a[p].get(k) != b[p].get(k)]
            said.append(f"input {p} changed since that run ({', '.join(what)})")
            if len(said) > 8:
                break
    return "; ".join(said) or "the configuration differs"


# what only pass 2 uses: a curate run that stopped before pass 2 (t came out
# below 1, no caption of a language matched) may go on with other values
BALANCING = ("t", "tail_fraction", "t_lang")


def _same_but(a: dict, b: dict, keys) -> bool:
    """Whether two fingerprint documents agree but for ``keys``."""
    return {k: v for k, v in a.items() if k not in keys} == \
        {k: v for k, v in b.items() if k not in keys}


def _balancing_only(old: dict, doc: dict, layout: OutputLayout, stage: str) -> bool:
    """Whether DIR's run differs from this one in t alone (BALANCING), and
    stopped before any of its pass 2 and summary: its pass 1 stands."""
    was = old.get("fingerprint_doc")
    if stage != "curate" or not isinstance(was, dict) or old.get("stage") != "curate":
        return False
    if os.path.exists(layout.summary) or (os.path.isdir(layout.stats_dir) and any(
            f.endswith(".json") for f in os.listdir(layout.stats_dir))):
        return False
    if not _same_but(was, doc, BALANCING):
        return False
    from ..log import logger

    logger.info("%s stopped before pass 2: its pass 1 is kept, balanced with this run's %s",
                _shown(layout), ", ".join(k for k in BALANCING if was.get(k) != doc.get(k)))
    return True


def _not_ours(layout: OutputLayout, why: str) -> None:
    """Refuse a DIR whose paths of gpucurate's output names are not known as a
    run's: they may be the user's own files."""
    names = [os.path.basename(p.rstrip("/")) for p in layout.outputs() if os.path.lexists(p)]
    raise ConfigError(
        f"{_shown(layout)} {why}, but holds {', '.join(names[:6])}: gpucurate would write "
        "there, and they may be files of your own. Choose another --out (a new or empty "
        "directory), or pass --overwrite to remove those paths")


def _unfinished_inputs_only(old: dict, doc: dict, layout: OutputLayout) -> bool:
    """Whether DIR's run differs from this one only in inputs that it never
    finished (no marker of pass 1 or pass 2: a shard it stopped on, e.g. at a
    bad row that has since been fixed): those are read anew, the shards done
    stand. With --limit, also no shard after the first changed one is done
    (what a shard takes depends on the rows before it)."""
    was = old.get("fingerprint_doc")
    if not isinstance(was, dict):
        return False
    a, b = was.get("inputs") or [], doc.get("inputs") or []
    if not _same_but(was, doc, ("inputs",)) or len(a) != len(b) or \
            any(not isinstance(x, dict) or x.get("path") != y.get("path") for x, y in zip(a, b)):
        return False
    changed = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if not changed:
        return False
    done = lambda i: os.path.exists(layout.pass1_marker(i)) or \
        os.path.exists(layout.stats(i))  # noqa: E731
    check = range(changed[0], len(b)) if doc.get("limit") else changed
    if any(done(i) for i in check):
        return False
    from ..log import logger

    logger.info("%s: %s changed since that run stopped, which never finished %s: read anew, "
                "the shards done stand", _shown(layout),
                ", ".join(b[i]["path"] for i in changed[:3]) +
                (f" and {len(changed) - 3} more" if len(changed) > 3 else ""),
                "it" if len(changed) == 1 else "them")
    return True


def _shown(layout: OutputLayout) -> str:
    """DIR as the user gave it: an output URL rather than its staging directory."""
    return remote_of(layout.root) or layout.root


def prepare_out(cfg: CurateConfig, layout: OutputLayout, doc: dict, stage: str) -> str:
    """Check DIR against the run it holds, clear it on --overwrite, sweep it,
    and write this run's config.json; return the fingerprint. Call with the
    lock held."""
    fingerprint = CurateConfig.fingerprint_of(doc)
    path = layout.config
    done = any(os.path.isdir(d) and any(f.endswith(".json") for f in os.listdir(d))
               for d in layout.marker_dirs()) or os.path.exists(layout.summary)
    if os.path.exists(path):
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = None
        if not (isinstance(old, dict) and "config_fingerprint" in old):
            # a config.json gpucurate did not write: DIR is the user's, and
            # its work/, report/, ... may be too; nothing is removed unasked
            if not cfg.overwrite:
                _not_ours(layout, "has a config.json that is not a gpucurate run's")
            old = {}
        if old.get("config_fingerprint") != fingerprint and \
                not (done and _balancing_only(old, doc, layout, stage)) and \
                not (done and _unfinished_inputs_only(old, doc, layout)):
            if done and not cfg.overwrite:
                change = describe_change(old.get("fingerprint_doc") or {}, doc) \
                    if old.get("fingerprint_doc") else "the configuration differs"
                raise ConfigError(f"{_shown(layout)} holds another run: {change}. Pass "
                                  "--overwrite to replace it, or choose another --out")
            # replaced (--overwrite), or another run's leftovers that completed no
            # shard (a spill, saved matches, parsed rows): none is this run's
            for p in layout.outputs():
                _remove(p)
    elif done or any(os.path.lexists(p) for p in layout.outputs()):
        # outputs without the config.json that says whose they are
        if done and not cfg.overwrite:
            raise ConfigError(f"{_shown(layout)} holds outputs of a run whose config.json is "
                              "gone, so they cannot be known as this run's. Pass --overwrite "
                              "to replace them, or choose another --out")
        if not cfg.overwrite:  # gpucurate writes config.json first: these are not its
            _not_ours(layout, "has no gpucurate config.json")
        for p in layout.outputs():
            _remove(p)
    sweep_tmp(layout)
    # config.json first: whatever the run writes after it is known as the run's
    # (cwd: where the config's relative paths lead; rebalance reads them from elsewhere)
    atomic_write_json(path, {"config_fingerprint": fingerprint, "stage": stage,
                             "fingerprint_doc": doc, "config": cfg.as_dict(),
                             "cwd": os.getcwd()})
    for d in layout.marker_dirs():
        os.makedirs(d, exist_ok=True)
    return fingerprint
