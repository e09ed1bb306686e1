"""Inputs and outputs at URLs, and brace patterns.

``--input`` takes ``s3://``, ``gs://``, ``hf://`` and ``http(s)://`` URLs (a
file, a "directory" prefix, or a glob), ``--out`` takes ``s3://`` and
``gs://``. S3 and GCS are read through pyarrow's filesystems, ``hf://`` and
``http(s)://`` through fsspec (the ``cloud`` extra). Credentials and endpoints
come from each backend's standard configuration: for S3 the ``AWS_*``
variables (``AWS_ENDPOINT_URL`` included) and ``~/.aws``, for GCS the
application-default credentials, for ``hf://`` ``HF_TOKEN``.

Brace patterns (``{00000..00999}``, ``{a,b}``, nested) expand as WebDataset's
do, for local paths and URLs alike, before globs are matched.

Outputs on an object store (:class:`RemoteOut`) are made in a local staging
directory, ``$TMPDIR/gpucurate-out/<hash of the URL>``, by the very code that
writes local outputs. Every file committed whole there (``atomic.commit``) is
then uploaded as one object under the URL, so an object appears only once it
is complete (S3: one PUT, or a multipart upload that shows nothing until it
completes; GCS: an upload that shows nothing until it is finalised); a
completion marker is uploaded after the data it marks, so a marker object never
exists without its data. The run's lock is the object ``OUT/.lock``, created
conditionally (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``) holding
the holder's pid, host and start time, and deleted when the run ends; a second
run fails at once naming the holder (a run killed outright leaves it: delete
it once that run is gone). With the lock held, the start-up sweep deletes
temporary objects and aborts unfinished multipart uploads under ``OUT/`` (never
outside it), and the staging directory is refilled from the objects under
``OUT/`` (all but ``report/``, ``curated-wds/`` and ``rejected/``), so a rerun
resumes where the last one stopped.
"""

from __future__ import annotations

import contextlib
import functools
import fnmatch
import hashlib
import io
import os
import posixpath
import re
import shutil
import socket
import tempfile
import time
import threading
from urllib.parse import quote, unquote, urlsplit

from ..errors import ConfigError, InputError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
INPUT_SCHEMES = ("s3", "gs", "gcs", "hf", "http", "https")
OUTPUT_SCHEMES = ("s3", "gs", "gcs")


# ------------------------------------------------------------------ braces
def expand_braces(pattern: str) -> list[str]:
    """The strings a brace pattern stands for, in order: ``{a,b}`` lists
    (nested, possibly empty items), ``{0..9}`` and ``{00000..00999}`` numeric
    ranges (zero-padded to the wider bound when a bound has a leading zero, as
    WebDataset's braceexpand does), ``{0..10..2}`` with a step. A brace with
    neither a comma nor a range (``{a}``) is kept as it is."""
    start = _first_brace(pattern)
    if start is None:
        return [pattern]
    i, j, items = start
    head, tail = pattern[:i], pattern[j + 1:]
    out = []
    for item in items:
        for rest in expand_braces(tail):
            for mid in expand_braces(item):
                out.append(head + mid + rest)
    return out


_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$")


def _first_brace(s: str):
    """(start, end, items) of the first expandable brace, or None."""
    pos = 0
    while True:
        i = s.find("{", pos)
        if i < 0:
            return None
        depth, j, cuts = 0, i, []
        while j < len(s):
            c = s[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            elif c == "," and depth == 1:
                cuts.append(j)
            j += 1
        if j >= len(s):
            return None  # unbalanced: literal
        body = s[i + 1:j]
        if cuts:
            edges = [i] + cuts + [j]
            return i, j, [s[a + 1:b] for a, b in zip(edges, edges[1:])]
        m = _RANGE.match(body)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            step = abs(int(m.group(3) or 1)) or 1
            lo, hi = m.group(1).lstrip("-"), m.group(2).lstrip("-")
            pad = max(len(m.group(1)), len(m.group(2))) if (
                (len(lo) > 1 and lo[0] == "0") or (len(hi) > 1 and hi[0] == "0")) else 0
            seq = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
            return i, j, [f"{v:0{pad}d}" for v in seq]
        pos = i + 1  # {a} or {}: literal, look further


# ------------------------------------------------------------------ URLs
def is_url(s) -> bool:
    return isinstance(s, str) and _SCHEME.match(s) is not None


def scheme_of(url: str) -> str:
    return _SCHEME.match(url).group(1).lower()


def _need(module: str, what: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ConfigError(f"{what} needs the Python package {module.split('.')[0]!r}; install "
                          "gpucurate[cloud] (pip install 'gpucurate[cloud]', or pip install -e "
                          "'.[cloud]' from a checkout)") from None


class _Arrow:
    """S3 and GCS through pyarrow's filesystems; paths are ``bucket/key``."""

    def __init__(self, fs, scheme: str):
        self.fs, self.scheme = fs, scheme

    def url(self, path: str) -> str:
        return f"{self.scheme}://{path}"

    def info(self, path: str):
        """('file' | 'dir' | None, size, mtime_ns)."""
        import pyarrow.fs as pf

        fi = self.fs.get_file_info(path)
        kind = {pf.FileType.File: "file", pf.FileType.Directory: "dir"}.get(fi.type)
        return kind, fi.size, fi.mtime_ns

    def find(self, path: str) -> list[str]:
        import pyarrow.fs as pf

        sel = pf.FileSelector(path.rstrip("/"), recursive=True, allow_not_found=True)
        return sorted(fi.path for fi in self.fs.get_file_info(sel) if fi.type == pf.FileType.File)

    def open(self, path: str):
        return self.fs.open_input_file(path)


class _Fsspec:
    """hf:// and http(s):// through fsspec."""

    def __init__(self, fs, scheme: str):
        self.fs, self.scheme = fs, scheme

    def url(self, path: str) -> str:
        return path if is_url(path) else f"{self.scheme}://{path}"

    def info(self, path: str):
        try:
            d = self.fs.info(path)
        except (FileNotFoundError, OSError):
            return None, None, None
        kind = "dir" if d.get("type") == "directory" else "file"
        return kind, d.get("size"), _version_of(d)

    def find(self, path: str) -> list[str]:
        return sorted(self.fs.find(path))

    def open(self, path: str):
        return self.fs.open(path, "rb")


def _version_of(d: dict):
    """What an fsspec ``info`` tells of an object's version: its modification
    time in ns, else a version tag (HTTP: the ``ETag``, ``Last-Modified``,
    ``Content-MD5`` or ``Digest`` header; hf://: the git blob id, or the LFS
    file's SHA-256); None when the backend gives none (then the run
    fingerprint knows the size alone: ``--verify-inputs`` hashes the content)."""
    mtime = d.get("mtime") or d.get("last_modified") or d.get("LastModified")
    if hasattr(mtime, "timestamp"):
        return int(mtime.timestamp() * 1e9)
    if isinstance(mtime, (int, float)):
        return int(mtime * 1e9)
    if d.get("ETag") or d.get("etag"):
        return d.get("ETag") or d.get("etag")
    tags = [f"{k}={d[k]}" for k in ("Last-Modified", "Content-MD5", "Digest", "blob_id")
            if d.get(k)]
    lfs = d.get("lfs")
    if isinstance(lfs, dict) and lfs.get("sha256"):
        tags.append(f"sha256={lfs['sha256']}")
    if not tags and d.get("last_commit"):
        tags.append(f"last_commit={d['last_commit']}")
    return " ".join(tags) or None


@functools.lru_cache(maxsize=None)
def _store_for(scheme: str, netloc: str, pid: int):
    """One filesystem per (scheme, bucket or host) and process."""
    if scheme in ("s3", "gs", "gcs"):
        import pyarrow.fs as pf

        uri = f"{'gs' if scheme == 'gcs' else scheme}://{netloc}"
        try:
            fs, _ = pf.FileSystem.from_uri(uri)
        except (OSError, ValueError) as exc:
            raise InputError(f"{uri}: cannot reach the bucket ({exc}); check its name and the "
                             "credentials and endpoint (for S3 the AWS_* variables, "
                             "AWS_ENDPOINT_URL included)") from None
        return _Arrow(fs, "gs" if scheme == "gcs" else scheme)
    if scheme in ("hf", "http", "https"):
        fsspec = _need("fsspec", f"{scheme}:// input")
        if scheme == "hf":
            _need("huggingface_hub", "hf:// input")
        return _Fsspec(fsspec.filesystem(scheme), scheme)
    raise InputError(f"{scheme}:// is not a supported URL scheme; give a local path or an "
                     f"{', '.join(s + '://' for s in INPUT_SCHEMES)} URL")


def filesystem(url: str):
    """(store, path) of a URL: ``store`` wraps a pyarrow (S3, GCS) or fsspec
    (hf, http) filesystem; ``path`` is what that filesystem calls the object."""
    scheme = scheme_of(url)
    rest = url[len(scheme) + 3:]
    if scheme in ("http", "https"):
        host = rest.split("/", 1)[0]
        return _store_for(scheme, host, os.getpid()), url
    netloc = rest.split("/", 1)[0]
    store = _store_for(scheme, netloc, os.getpid())
    return store, rest if scheme != "hf" else rest


def open_input(path: str, native: bool = False):
    """A binary file object of a local path or a URL (seekable where the
    backend allows: S3, GCS and local files are; http(s) is by range
    requests). With ``native``, S3 and GCS objects come as pyarrow's own
    random-access files (for pyarrow's readers), else as buffered Python
    files (lines, ``read(n)``)."""
    if not is_url(path):
        return open(path, "rb")
    store, p = filesystem(path)
    try:
        f = store.open(p)
        if isinstance(store, _Arrow) and not native:
            return io.BufferedReader(f, 1 << 22)
        return f
    except (OSError, FileNotFoundError) as exc:
        raise InputError(f"{path}: cannot be opened ({exc}); check that the object exists and "
                         "the credentials allow reading it") from None


def open_gzip(path: str):
    """A gzip stream of a local path or a URL (closing it closes the source)."""
    import gzip

    if not is_url(path):
        return gzip.open(path, "rb")
    f = open_input(path)
    g = gzip.GzipFile(fileobj=f, mode="rb")
    g.myfileobj = f  # closed with the GzipFile
    return g


def stat_input(url: str) -> dict:
    """What the run fingerprint knows of an input object: its size and
    modification time (or the backend's version tag)."""
    store, p = filesystem(url)
    kind, size, mtime = store.info(p)
    if kind != "file":
        raise InputError(f"input {url} does not exist (or is not an object); give objects, "
                         "prefixes or globs of shards")
    return {"path": url, "size": size, "mtime_ns": mtime}


def url_identity(url: str, verify: bool) -> dict:
    """:func:`stat_input`, and the content's SHA-256 with ``verify``."""
    d = stat_input(url)
    if verify:
        h = hashlib.sha256()
        with open_input(url) as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        d["sha256"] = h.hexdigest()
    return d


@functools.lru_cache(maxsize=8)
def _cache_dir() -> str:
    d = os.path.join(tempfile.gettempdir(), f"gpucurate-in-{os.getuid()}")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def _copy_object(url: str, local: str) -> None:
    with open(local, "wb") as out, open_input(url) as src:
        shutil.copyfileobj(src, out, 8 << 20)


def download_input(url: str) -> str:
    """A local temporary copy of one input object (the caller removes it);
    for readers that map files (tar). Bounded by one shard."""
    fd, tmp = tempfile.mkstemp(prefix="shard-", dir=_cache_dir())
    os.close(fd)
    try:
        _copy_object(url, tmp)
    except BaseException:
        os.remove(tmp)
        raise
    return tmp


@contextlib.contextmanager
def local_path(path: str):
    """``path`` itself when local; for a URL, a copy in a temporary directory
    (removed on exit), for the commands that read small local files
    (``balance --counts``, ``merge-counts``): of one object, or of the objects
    below a prefix, each at its path below it (a worldwide ``entry_counts/``)."""
    if not is_url(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="gpucurate-copy-") as dest:
        pairs = url_shards(path)
        if not pairs:
            raise InputError(f"{path} does not exist (no object, nothing below it as a prefix)")
        # one object when the path names it (an http directory answers as a page
        # of its own, so an object's existence does not tell)
        single = len(pairs) == 1 and _canon(pairs[0][0]).rstrip("/") == _canon(path).rstrip("/")
        for u, name in pairs:
            local = os.path.join(dest, *name.split("/"))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            _copy_object(u, local)
        yield local if single else dest


# ------------------------------------------------------------------ listing
def _glob_base(pattern: str) -> str:
    parts = pattern.split("/")
    fixed = []
    for p in parts:
        if any(c in p for c in "*?["):
            break
        fixed.append(p)
    return "/".join(fixed)


def _match(pat: list[str], path: list[str]) -> bool:
    """Whether path parts match glob parts (``**`` spans directories, ``*`` not)."""
    if not pat:
        return not path
    if pat[0] == "**":
        return any(_match(pat[1:], path[k:]) for k in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], pat[0]) and _match(pat[1:], path[1:])


def _canon(url: str) -> str:
    """A URL with ``gcs://`` written ``gs://`` (the two name one store)."""
    return "gs://" + url[len("gcs://"):] if url[:6].lower() == "gcs://" else url


def url_shards(arg: str, exclude=None) -> list[tuple[str, str]]:
    """(URL, name) of the objects an URL argument names, the name relative to
    the argument as for local paths: an object's base name, a prefix's path
    below it, a glob's path below its fixed prefix. Objects under ``exclude``
    (an output URL, or several) are left out."""
    store, path = filesystem(arg)
    scheme = scheme_of(arg)
    http = scheme in ("http", "https")
    path = path.rstrip("/") if not http else path
    # http(s): a ``?`` starts the query (a signed or download URL), no glob
    where = urlsplit(arg).path if http else arg.split("://", 1)[1]
    if any(c in where for c in ("*[" if http else "*?[")):
        base = _glob_base(path)
        if http:  # matched against the page's links, which are percent-encoded
            hits = store.fs.glob(quote(path, safe="/:*[]!%?=&@+,;$~"))
        else:
            pat = path.split("/")
            hits = [p for p in store.find(base) if _match(pat, p.split("/"))]
        pairs = [(store.url(p), posixpath.relpath(p, base)) for p in hits]
    else:
        try:
            kind, _, _ = store.info(path)
        except OSError as exc:
            raise InputError(f"input {arg}: cannot be read ({exc}); check the bucket, the "
                             "credentials and the endpoint") from None
        if http and path.endswith("/"):  # a listed directory (links of its index page)
            kind = "dir"
        if kind == "file":
            name = urlsplit(path).path if http else path
            pairs = [(store.url(path), posixpath.basename(name.rstrip("/")))]
        elif kind == "dir":
            root = path.rstrip("/")
            hits = store.find(path if http else root)
            if http:  # links of the page that lie below it
                hits = [p for p in hits if p.startswith(root + "/")]
            pairs = [(store.url(p), posixpath.relpath(p, root)) for p in hits]
        else:
            raise InputError(f"input {arg} does not exist; give objects, prefixes or globs of "
                             "shards (and check the bucket name)")
    for ex in ((exclude,) if isinstance(exclude, str) else exclude or ()):
        if ex and is_url(ex):
            top = _canon(ex).rstrip("/") + "/"
            pairs = [(u, n) for u, n in pairs if not _canon(u).startswith(top)]
    if http:  # names as the files have them (a listing's links are percent-encoded)
        pairs = [(u, unquote(n)) for u, n in pairs]
    return pairs


# ------------------------------------------------------------------ outputs
_TMP_NAME = re.compile(r"\.tmp-\d+$")
_URL_FILE = ".gpucurate-url"
_SKIP_DOWN = ("report/", "curated-wds/", "rejected/")


def _stage_base() -> str:
    """Where outputs bound for a URL are staged: ``$GPUCURATE_STAGE_DIR``, else
    the temporary directory. Each node of a Ray cluster stages on its own disk."""
    given = os.environ.get("GPUCURATE_STAGE_DIR")
    # absolute and without a trailing separator: staged paths are compared with it
    return os.path.abspath(os.path.expanduser(given)) if given else os.path.join(
        tempfile.gettempdir(), f"gpucurate-out-{os.getuid()}")


def stage_dir(url: str) -> str:
    """The local staging directory of an output URL (created)."""
    scheme = scheme_of(url)
    if scheme not in OUTPUT_SCHEMES:
        raise ConfigError(f"--out {url}: outputs go to a local directory, s3:// or gs://, not "
                          f"{scheme}://")
    url = url.rstrip("/")
    if "/" not in url.split("://", 1)[1]:
        raise ConfigError(f"--out {url}: give a prefix inside the bucket ({url}/curated), so "
                          "that the run's objects are kept apart from the rest of the bucket")
    d = os.path.join(_stage_base(), hashlib.sha256(url.encode()).hexdigest()[:24])
    os.makedirs(d, mode=0o700, exist_ok=True)
    with open(os.path.join(d, _URL_FILE), "w") as f:
        f.write(url)
    return d


@functools.lru_cache(maxsize=None)
def _url_of_stage(root: str) -> str | None:
    try:
        with open(os.path.join(root, _URL_FILE)) as f:
            return f.read().strip()
    except OSError:
        return None


def remote_of(local: str) -> str | None:
    """The object URL a path in a staging directory is published to, or None
    for every other path."""
    base = _stage_base() + os.sep
    local = os.path.abspath(local)
    if not local.startswith(base):
        return None
    rel = local[len(base):]
    top, _, below = rel.partition(os.sep)
    url = _url_of_stage(base + top)
    if url is None:
        return None
    return url + ("/" + below.replace(os.sep, "/") if below else "")


class _S3Out:
    def __init__(self, url: str):
        self.bucket, _, self.prefix = url[len("s3://"):].partition("/")
        self.prefix = self.prefix.rstrip("/")

    @property
    def client(self):
        return _s3_client(os.getpid(), threading.get_ident())

    def key(self, url: str) -> str:
        return url[len("s3://") + len(self.bucket) + 1:]

    def upload(self, local: str, url: str) -> None:
        self.client.upload_file(local, self.bucket, self.key(url))

    def keys(self, under: str) -> list[tuple[str, int]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=under)
        return [(o["Key"], o["Size"]) for p in pages for o in p.get("Contents", [])]

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})

    def download(self, key: str, local: str) -> None:
        self.client.download_file(self.bucket, key, local)

    def create(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def abort_uploads(self, under: str) -> None:
        c = self.client
        for page in c.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=under):
            for u in page.get("Uploads", []):
                c.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"])


@functools.lru_cache(maxsize=None)
def _s3_client(pid: int, tid: int):
    boto3 = _need("boto3", "s3:// output")
    return boto3.client("s3")


class _GcsOut:
    """GCS through pyarrow (uploads, listing, deletes) and google-cloud-storage
    (the lock's conditional create, which pyarrow does not offer)."""

    def __init__(self, url: str):
        self.bucket, _, self.prefix = url.split("://", 1)[1].partition("/")
        self.prefix = self.prefix.rstrip("/")
        self.store = _store_for("gs", self.bucket, os.getpid())

    def key(self, url: str) -> str:
        return url.split("://", 1)[1][len(self.bucket) + 1:]

    def upload(self, local: str, url: str) -> None:
        import pyarrow.fs as pf

        pf.copy_files(local, f"{self.bucket}/{self.key(url)}",
                      source_filesystem=pf.LocalFileSystem(),
                      destination_filesystem=self.store.fs)

    def keys(self, under: str) -> list[tuple[str, int]]:
        """The object ``under`` names, if any, and the objects below it as a
        directory (a listing of a selector skips the object of its own name)."""
        import pyarrow.fs as pf

        path = f"{self.bucket}/{under.rstrip('/')}"
        if not under.endswith("/"):
            fi = self.store.fs.get_file_info(path)
            if fi.type == pf.FileType.File:
                return [(under, fi.size)]
        sel = pf.FileSelector(path, recursive=True, allow_not_found=True)
        return [(fi.path[len(self.bucket) + 1:], fi.size)
                for fi in self.store.fs.get_file_info(sel) if fi.type == pf.FileType.File]

    def delete(self, keys: list[str]) -> None:
        for k in keys:
            self.store.fs.delete_file(f"{self.bucket}/{k}")

    def download(self, key: str, local: str) -> None:
        with self.store.fs.open_input_stream(f"{self.bucket}/{key}") as src, \
                open(local, "wb") as out:
            shutil.copyfileobj(src, out, 8 << 20)

    def create(self, key: str, data: bytes) -> bool:
        storage = _need("google.cloud.storage", "the lock of a gs:// output")
        from google.api_core.exceptions import PreconditionFailed

        try:
            storage.Client().bucket(self.bucket).blob(key).upload_from_string(
                data, if_generation_match=0)
            return True
        except PreconditionFailed:
            return False

    def read(self, key: str) -> bytes:
        with self.store.fs.open_input_stream(f"{self.bucket}/{key}") as f:
            return f.read()

    def abort_uploads(self, under: str) -> None:
        pass  # an unfinalised GCS upload is no object and expires by itself


def _backend(url: str):
    return _S3Out(url) if scheme_of(url) == "s3" else _GcsOut(url)


def publish(local: str) -> None:
    """Upload a file just committed whole in a staging directory as one
    object (nothing for any other path)."""
    url = remote_of(local)
    if url is None:
        return
    try:
        _backend(url).upload(local, url)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore / pyarrow errors
        raise ConfigError(f"cannot upload {url} ({exc}); check the credentials and that the "
                          "bucket accepts writes; a rerun resumes from the objects written")


def fetch(local: str) -> bool:
    """Whether ``local`` exists, after downloading it from its object when it
    is a staged path this machine has not got (a file another node of a Ray
    cluster wrote and published). Nothing is fetched for any other path."""
    return published(local, download=True)


def published(local: str, download: bool = False) -> bool:
    """Whether ``local`` exists, or (a staged path) its object does: what a
    run that left it had finished, read without downloading it (``download``:
    :func:`fetch`)."""
    if os.path.exists(local):
        return True
    url = remote_of(local)
    if url is None:
        return False
    b = _backend(url)
    key = b.key(url)
    if not any(k == key for k, _ in b.keys(key)):
        return False
    if download:
        _download(b, key, local)
    return True


def published_names(local_dir: str) -> set:
    """The names of the files in ``local_dir``, and (a staged directory) of
    the objects right below its prefix: what :func:`published` says of each,
    in one listing."""
    done = set(os.listdir(local_dir)) if os.path.isdir(local_dir) else set()
    url = remote_of(local_dir)
    if url is not None:
        b = _backend(url)
        key = b.key(url) + "/"
        done |= {k[len(key):] for k, _ in b.keys(key) if "/" not in k[len(key):]}
    return done


def _download(b, key: str, local: str) -> None:
    """The object ``key`` into ``local``, there only when whole."""
    os.makedirs(os.path.dirname(local), exist_ok=True)
    tmp = f"{local}.tmp-{os.getpid()}"
    b.download(key, tmp)
    os.replace(tmp, local)


def unpublish(local: str) -> None:
    """Delete the objects of a removed staging path: the object itself and
    every object below it as a prefix (nothing for any other path)."""
    url = remote_of(local)
    if url is None:
        return
    b = _backend(url)
    key = b.key(url)
    keys = [k for k, _ in b.keys(key) if k == key or k.startswith(key + "/")]
    if keys:
        b.delete(keys)


_HOLDER = re.compile(r"^the run of pid (\d+) on (\S+) since ")


def _ended_here(holder: str) -> bool:
    """Whether a lock object's holder is a run of this machine (same host
    name) whose process no longer exists."""
    m = _HOLDER.match(holder)
    if m is None or m.group(2) != socket.gethostname():
        return False
    pid = int(m.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


class RemoteOut:
    """An output URL's lock, start-up sweep and resume (see the module
    docstring). ``acquire`` and ``release`` wrap the run. A lock object left
    by a killed run of this machine is taken over; one of another machine is
    an error naming its holder."""

    def __init__(self, root: str):
        self.root = root
        self.url = _url_of_stage(root)
        self.b = _backend(self.url)
        self.top = (self.b.prefix + "/") if self.b.prefix else ""
        self.lock_key = self.top + ".lock"
        self.held = False

    def acquire(self) -> None:
        who = (f"the run of pid {os.getpid()} on {socket.gethostname()} since "
               f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n").encode()
        try:
            ok = self.b.create(self.lock_key, who)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"--out {self.url}: cannot create the lock object "
                              f"{self.url}/.lock ({exc}); check the bucket name, the "
                              "credentials and the endpoint") from None
        if not ok:
            try:
                holder = self.b.read(self.lock_key).decode("utf-8", "replace").strip()
            except Exception:  # noqa: BLE001
                holder = "another run"
            if _ended_here(holder):
                from ..log import logger

                # a run of this machine that was killed: its lock object stayed. This
                # run holds the lock of the URL's staging directory, so no other run
                # of this machine staging there can be taking it over at the same time
                # (runs given different $GPUCURATE_STAGE_DIR do not share that lock)
                logger.warning("%s: the lock object names %s, which has ended without "
                               "releasing it; taking it over", self.url, holder)
                self.b.delete([self.lock_key])
                ok = self.b.create(self.lock_key, who)
                if not ok:
                    holder = "another run"
        if not ok:
            raise ConfigError(f"{self.url} is in use by {holder or 'another run'} (lock "
                              f"{self.url}/.lock); wait for that run to end, or, if it is "
                              "gone, delete the lock object; or choose another --out")
        self.held = True
        try:
            self.sweep()
            self.pull()
        except BaseException:
            self.release()
            raise

    def sweep(self) -> None:
        """Temporary objects and unfinished uploads under OUT/ (only)."""
        tmp = [k for k, _ in self.b.keys(self.top) if _TMP_NAME.search(k)]
        if tmp:
            self.b.delete(tmp)
        self.b.abort_uploads(self.top)

    def pull(self) -> None:
        """Refill the staging directory from the objects under OUT/."""
        for name in os.listdir(self.root):
            if name in (".lock", _URL_FILE):
                continue
            p = os.path.join(self.root, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
        self.pull_missing()

    def pull_missing(self, skip: tuple = ()) -> int:
        """Download the objects under OUT/ that the staging directory lacks
        (all of them after ``pull``; after a pass, what workers on other nodes
        published), except those under ``skip`` and those a resume does not
        read; the number downloaded."""
        n = 0
        for key, _ in self.b.keys(self.top):
            rel = key[len(self.top):]
            if (not rel or rel == ".lock" or rel.startswith(_SKIP_DOWN + tuple(skip))
                    or _TMP_NAME.search(rel) or rel.endswith("/") or ".." in rel.split("/")):
                continue
            local = os.path.join(self.root, *rel.split("/"))
            if not os.path.exists(local):
                _download(self.b, key, local)
                n += 1
        return n

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                self.b.delete([self.lock_key])
            except Exception:  # noqa: BLE001 - the run's result stands; say what is left
                from ..log import logger

                logger.warning("could not delete the lock object %s/.lock; delete it before "
                               "the next run", self.url)


def remote_out(root: str) -> RemoteOut | None:
    """The :class:`RemoteOut` of a staging directory, None for a local DIR."""
    return RemoteOut(root) if _url_of_stage(os.path.abspath(root)) and \
        os.path.abspath(root).startswith(_stage_base() + os.sep) else None
