"""Which files are shards: inputs given as files, directories and globs."""

from __future__ import annotations

import glob
import os
import stat
from dataclasses import dataclass

from ..errors import InputError

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".jsonl.zst": "jsonl",
           ".tar": "tar", ".tar.gz": "tar", ".tgz": "tar"}
KINDS = ".parquet, .jsonl[.gz|.zst] or .tar[.gz|.tgz]"


@dataclass(frozen=True)
class Shard:
    index: int
    path: str    # resolved absolute path
    name: str    # path relative to the input argument it came from
    fmt: str     # parquet | jsonl | tar
    compression: str | None = None  # jsonl: gz | zst (from the name it was given by)
    tar: str | None = None          # a download folder's tar beside this parquet (same stem)


def shard_format(path: str) -> str | None:
    """The format of a shard by its name (case-insensitive), or None."""
    low = path.lower()
    for ext in sorted(FORMATS, key=len, reverse=True):
        if low.endswith(ext):
            return FORMATS[ext]
    return None


def compression_of(path: str) -> str | None:
    low = path.lower()
    return "gz" if low.endswith(".gz") else "zst" if low.endswith(".zst") else None


def _glob_prefix(pattern: str) -> str:
    parts = pattern.split(os.sep)
    fixed = []
    for p in parts:
        if glob.has_magic(p):
            break
        fixed.append(p)
    return os.sep.join(fixed) or "."


def _regular(path: str) -> str:
    """The resolved path of a regular file (symlinks followed), else an error."""
    try:
        st = os.stat(path)
    except OSError as exc:
        why = "a symlink loop" if exc.errno == 40 else exc.strerror
        raise InputError(f"input {path}: cannot be opened ({why}); give regular files") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if
                stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise InputError(f"input {path} is {kind}, not a regular file; only regular files are "
                         f"shards: move it out of the input, or give the files one by one")
    return os.path.realpath(path)


def _unqueried(url: str) -> str:
    """An http(s) URL without its query (``?download=1``, a signature)."""
    return url.split("?", 1)[0] if url[:5].lower() in ("http:", "https") else url


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve_inputs(inputs, need_unique_names: bool = True,
                   exclude=None) -> list[Shard]:
    """Shards of files, directories and globs, in sorted order of resolved path.

    A shard's name is its path relative to the input argument it came from: a
    file argument gives its base name, a directory the path below it, a glob the
    path below the glob's fixed prefix. A shard's format comes from the name it
    is given by (a symlink's own name), case-insensitive; what it resolves to
    must be a regular file. Files under ``exclude`` (the run's output
    directory, or several directories) are never inputs.
    """
    from .fs import expand_braces, is_url, url_shards

    excludes = (exclude,) if isinstance(exclude, str) else tuple(exclude or ())
    skips = [os.path.realpath(e) for e in excludes if e and not is_url(e)]
    shown = ", ".join(e for e in excludes if e)
    found: dict[str, tuple[str, str]] = {}
    other: list[str] = []  # files of a directory or glob that are no shard: said, not dropped
    # brace patterns expand first (a local path that exists as written is taken as it is)
    for arg in [a for x in map(os.fspath, inputs)
                for a in ([x] if os.path.lexists(x) else expand_braces(x))]:
        if is_url(arg):  # objects: no symlinks, no FIFOs; the URL is the path
            # the format by the object's name (an http URL's query is no part of it)
            objs = url_shards(arg, exclude)
            kept = [(u, n) for u, n in objs if shard_format(_unqueried(u))]
            other += [n for u, n in objs if not shard_format(_unqueried(u))]
            if not kept:
                raise InputError(f"input {arg} holds no {KINDS} shard"
                                 + (f" outside the output {shown}" if shown else ""))
            for u, n in kept:
                found.setdefault(u, (n, _unqueried(u)))
            continue
        if glob.has_magic(arg):
            base = _glob_prefix(arg)
            pairs = []  # a directory it matches (Spark's x.parquet/ of parts) is walked
            for p in sorted(glob.glob(arg, recursive=True)):
                pairs += _walk(p, skips, base) if os.path.isdir(p) else \
                    [(p, os.path.relpath(p, base))]
        elif os.path.isdir(arg):
            pairs = _walk(arg, skips, arg)
        elif os.path.lexists(arg):
            pairs = [(arg, os.path.basename(arg))]
        else:
            raise InputError(f"input {arg} does not exist; give files, directories or globs "
                             f"of {KINDS} shards")
        kept = [(p, n) for p, n in pairs if shard_format(p)]
        other += [os.path.join(arg, n) if os.path.isdir(arg) else p
                  for p, n in pairs if not shard_format(p)
                  and not any(_under(os.path.realpath(p), sk) for sk in skips)]
        if not kept:
            if not os.path.isdir(arg) and not glob.has_magic(arg):
                raise InputError(f"input {arg}: unknown format; supported: .parquet, .jsonl, "
                                 ".jsonl.gz, .jsonl.zst, .tar, .tar.gz, .tgz")
            raise InputError(f"input {arg} holds no {KINDS} shard")
        n_kept = 0
        for p, n in kept:
            real = _regular(p)
            if any(_under(real, sk) for sk in skips):
                continue  # the run's own outputs are never inputs
            if real not in found or n < found[real][0]:  # reached twice: one name, any order
                found[real] = (n, p)
            n_kept += 1
        if not n_kept:
            raise InputError(f"input {arg} holds no shard outside the output directory {shown}")
    inodes: dict = {}  # hard links: one file by two names, read once (as a symlink is)
    for real in sorted(found, key=lambda r: found[r][0]):
        if is_url(real):
            continue
        st = os.stat(real)
        if (st.st_dev, st.st_ino) in inodes:
            del found[real]
        else:
            inodes[(st.st_dev, st.st_ino)] = real
    if other:
        from ..log import logger

        logger.warning("not read: %d input file%s of no shard format (%s%s); shards are %s "
                       "files (a shard named otherwise is read once renamed)", len(other),
                       "s" if len(other) > 1 else "", ", ".join(other[:5]),
                       ", ..." if len(other) > 5 else "", KINDS)
    paired = _download_pairs(found)
    paths = sorted(p for p in found if p not in paired.values())
    names: dict[str, str] = {}
    for p in paths:
        n = found[p][0]
        if need_unique_names and n in names:
            raise InputError(f"two shards have the same name {n!r} ({names[n]} and {p}); the "
                             "default sample key hashes the shard name, so pass --key-column "
                             "with a unique id column (or give the files distinct names)")
        names[n] = p
    return [Shard(i, p, found[p][0], shard_format(found[p][1]), compression_of(found[p][1]),
                  paired.get(p)) for i, p in enumerate(paths)]


def _walk(top: str, skips: list, rel_to: str) -> list:
    """(path, name relative to ``rel_to``) of every file below ``top``, in
    sorted order; linked directories are followed, each directory read once,
    and nothing under ``skips``."""
    pairs = []
    seen = set()
    for root, dirs, files in os.walk(top, followlinks=True):
        dirs.sort()
        files.sort()
        real = os.path.realpath(root)
        if real in seen or any(_under(real, sk) for sk in skips):
            dirs[:] = []
            continue
        seen.add(real)
        for f in files:
            p = os.path.join(root, f)
            pairs.append((p, os.path.relpath(p, rel_to)))
    return pairs


def _stem(path: str) -> str:
    low = os.path.basename(path)
    for ext in (".parquet", ".tar.gz", ".tgz", ".tar"):
        if low.lower().endswith(ext):
            return os.path.join(os.path.dirname(path), low[:-len(ext)])
    return path


def _download_pairs(found: dict) -> dict:
    """{parquet path: tar path} of the img2dataset or DataComp download
    folders among the inputs: a ``NAME.parquet`` with ``key`` and ``status``
    columns beside ``NAME.tar`` (named as given: links pair by their own
    names). The sample is read once, from the parquet; the tar holds its
    images. A parquet given without its tar is paired with the tar beside it
    all the same (its failed downloads are no captions); a parquet without
    those columns is no download folder's, and a tar beside it is a shard."""
    def stem(p):
        given = found[p][1]
        return _stem(given if "://" in given else os.path.abspath(given))

    tars = {stem(p): p for p in found if shard_format(found[p][1]) == "tar"}
    out = {}
    for p in found:
        if shard_format(found[p][1]) != "parquet":
            continue
        t = tars.get(stem(p))
        if t is None and "://" not in found[p][1]:
            beside = next((stem(p) + ext for ext in (".tar", ".tar.gz", ".tgz")
                           if os.path.isfile(stem(p) + ext)), None)
            t = os.path.realpath(beside) if beside else None
        # the footer is read only for a parquet with a tar of its name (a pool of
        # parquet shards alone costs no request per shard here)
        if t is not None and _is_download_parquet(found[p][1]):
            out[p] = t
    return out


def _is_download_parquet(path: str) -> bool:
    """A parquet of img2dataset's or DataComp's downloads: ``key`` and ``status`` columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .fs import is_url, open_input

    try:
        if is_url(path):
            with open_input(path, native=True) as f:
                names = pq.read_schema(f).names
        else:
            names = pq.read_schema(path).names
    except (pa.ArrowException, OSError, InputError):
        return False  # read as a shard, whose reader says what is wrong
    return "key" in names and "status" in names
