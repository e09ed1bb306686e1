"""Loading and validating a MetaCLIP metadata list (id = position in the list)."""

from __future__ import annotations

import hashlib
import json
import os
import threading

from .errors import MetadataError


class Metadata:
    """A validated metadata list: ``entries[i]`` is entry id ``i``.

    The entries are held as a tuple of str, or as an Arrow string array (a
    list loaded from the cache: memory-mapped, no Python object per entry)
    whose tuple is made on first use of ``entries``; ``arrow()`` gives the
    array either way."""

    __slots__ = ("_entries", "_arrow", "source", "sha256", "_n")

    def __init__(self, entries, source: str, sha256: str, arrow=None):
        self._entries = None if entries is None else tuple(entries)
        self._arrow = arrow
        self.source = source
        self.sha256 = sha256
        self._n = len(self._entries) if self._entries is not None else len(arrow)

    @property
    def entries(self) -> tuple[str, ...]:
        if self._entries is None:
            self._entries = tuple(self._arrow.to_pylist())
        return self._entries

    def arrow(self):
        """The entries as a pyarrow string array."""
        if self._arrow is None:
            import pyarrow as pa

            self._arrow = pa.array(self._entries, pa.string())
        return self._arrow

    def __len__(self) -> int:
        return self._n

    def __eq__(self, other) -> bool:
        return isinstance(other, Metadata) and (self.sha256, self.source) == \
            (other.sha256, other.source)

    def __hash__(self) -> int:
        return hash((self.sha256, self.source))

    def __reduce__(self):
        return (Metadata, (self._entries, self.source, self.sha256,
                           self._arrow if self._entries is None else None))

    def __repr__(self) -> str:
        return f"Metadata({self.source!r}, {self._n:,} entries, sha256={self.sha256[:12]})"


def _digest(entries) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(list(entries), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _check(entries, source: str, unit: str) -> None:
    """Every entry a non-empty string of valid Unicode; the first that is not
    is named. Lists that pass (nearly all) are checked in bulk by pyarrow: it
    infers a string type only when every item is a str (a None, a number or
    bytes among them gives another type or an error), and encodes each to
    UTF-8 (a lone surrogate is an error)."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc

        arr = pa.array(entries) if entries else None
        if arr is not None and arr.null_count == 0 and \
                (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            if pc.min(pc.binary_length(arr)).as_py() > 0:
                return
    except (UnicodeEncodeError, ValueError, TypeError, OverflowError, pa.ArrowException):
        pass  # the loop below names the entry
    for i, e in enumerate(entries):
        where = f"line {i + 1}" if unit == "line" else f"index {i}"
        if not isinstance(e, str):
            raise MetadataError(f"{source}: entry at {where} is {type(e).__name__}, not a string; "
                                "a metadata list holds strings only")
        if not e:
            raise MetadataError(f"{source}: entry at {where} is empty; an empty entry would match "
                                "every double space: remove it")
        try:
            e.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MetadataError(f"{source}: entry at {where} is not valid Unicode ({exc.reason}); "
                                "fix or remove it") from None


_LOADED: dict = {}  # (real path, size, mtime) -> Metadata, loaded once per process
DIGESTS_VERSION = 1


def _digest_cache(raw: bytes, kind: str) -> str:
    """Where the digest of a checked file with these bytes is kept."""
    from .config import cache_dir

    h = hashlib.sha256(f"{DIGESTS_VERSION}:{kind}:".encode())
    h.update(raw)
    key = h.hexdigest()
    return os.path.join(cache_dir(), "metadata", key[:40] + ".json")


def _kept_record(path: str) -> dict | None:
    """The record kept for a file of the same bytes already checked (its
    digest, number of entries, and the CRC-32 of its Arrow copy), or None."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if isinstance(d.get("sha256"), str) and len(d["sha256"]) == 64:
            return d
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _cached_digest(path: str, n: int) -> str | None:
    """The digest recorded for a file of the same bytes already checked (with
    the same number of entries), or None."""
    d = _kept_record(path)
    return d["sha256"] if d is not None and d.get("entries") == n else None


def _cached_list(path: str):
    """(digest, entries as Arrow) of a file of these bytes already checked, or
    None. The Arrow file must have the CRC-32 recorded beside the digest."""
    d = _kept_record(path)
    n, crc = (d.get("entries"), d.get("arrow_crc32")) if d is not None else (None, None)
    if not isinstance(n, int) or n <= 0 or not isinstance(crc, int):
        return None
    digest = d["sha256"]
    try:
        import zlib

        import pyarrow as pa

        with pa.memory_map(path[:-len(".json")] + ".arrow") as src:
            buf = src.read_buffer()
        if zlib.crc32(buf) != crc:
            return None
        col = pa.ipc.open_file(buf).read_all().column(0)
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if len(arr) == n and arr.null_count == 0 and pa.types.is_string(arr.type):
            return digest, arr
    except (OSError, ValueError, ImportError, IndexError):
        pass
    return None


def _save_entries(path: str, entries) -> int | None:
    """The checked entries as an Arrow IPC file beside their digest; its CRC-32."""
    try:
        import zlib

        import pyarrow as pa

        path = path[:-len(".json")] + ".arrow"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"  # per thread: two may build it
        table = pa.table({"entry": pa.array(entries, pa.string())})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        buf = sink.getvalue()
        with open(tmp, "wb") as f:
            f.write(buf)
        os.replace(tmp, path)
        return zlib.crc32(buf)
    except (OSError, ValueError, ImportError):
        return None  # the cache is an optimisation


def _save_digest(path: str, digest: str, n: int, arrow_crc32: int | None) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"  # per thread: two may build it
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"sha256": digest, "entries": n, "arrow_crc32": arrow_crc32}, f)
        os.replace(tmp, path)
    except OSError:
        pass  # the cache is an optimisation: the next run checks the file again


def _parse_json(raw: bytes, path: str):
    """A JSON document; orjson when it can (several times faster), else the
    standard parser, whose result and messages are the reference (orjson
    refuses lone surrogates, which the check below names)."""
    try:
        import orjson

        return orjson.loads(raw)
    except ImportError:
        pass
    except ValueError:
        pass  # the standard parser gives the answer or the message
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{path}: not valid JSON ({exc}); a .json metadata file is "
                            "a JSON list of strings") from None


def load_metadata(metadata) -> Metadata:
    """Load metadata from a path or a sequence of str.

    ``.json`` files use MetaCLIP's format, a JSON list of strings. Any other file
    is UTF-8 text with one entry per line (split on ``\\n``, a trailing ``\\r``
    removed, a final empty line ignored). Raises :class:`MetadataError` naming
    the file and the entry for a non-list, a non-string or an empty entry.
    """
    if isinstance(metadata, Metadata):
        return metadata
    if isinstance(metadata, (str, os.PathLike)):
        path = os.fspath(metadata)
        try:
            st = os.stat(path)
            key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
        except OSError:
            key = None
        if key in _LOADED:  # a list is read and checked once per process
            return _LOADED[key]
        try:
            raw = open(path, "rb").read()
        except OSError as exc:
            raise MetadataError(f"cannot read metadata file {path}: {exc.strerror}") from None
        is_json = path.lower().endswith(".json")
        cache = _digest_cache(raw, "json" if is_json else "text")
        hit = _cached_list(cache)
        if hit is not None:  # these bytes were read and checked before
            md = Metadata(None, path, hit[0], arrow=hit[1])
            if key is not None:
                _LOADED[key] = md
            return md
        if is_json:
            entries = _parse_json(raw, path)
            if not isinstance(entries, list):
                raise MetadataError(f"{path}: holds a JSON {type(entries).__name__}, not a list; "
                                    "a .json metadata file is a JSON list of strings")
            digest = _cached_digest(cache, len(entries)) if entries else None
            if digest is None:
                _check(entries, path, "index")
        else:
            try:
                text = raw.decode("utf-8-sig")  # a byte-order mark is no part of entry 0
            except UnicodeDecodeError as exc:
                line = raw[: exc.start].count(b"\n") + 1
                raise MetadataError(f"{path}: line {line} is not valid UTF-8; save the file as "
                                    "UTF-8") from None
            entries = text.split("\n")
            if entries and entries[-1] == "":
                entries.pop()
            entries = [e[:-1] if e.endswith("\r") else e for e in entries]
            digest = _cached_digest(cache, len(entries)) if entries else None
            if digest is None:
                _check(entries, path, "line")
        source = path
        if entries:
            if digest is None:  # checked now: the next run with these bytes skips both
                digest = _digest(entries)
            # and reads the entries from Arrow, not from JSON
            _save_digest(cache, digest, len(entries), _save_entries(cache, entries))
            md = Metadata(tuple(entries), source, digest)
            if key is not None:
                _LOADED[key] = md
            return md
    else:
        entries = list(metadata)
        source = "<metadata list>"
        _check(entries, source, "index")
    if not entries:
        raise MetadataError(f"{source}: the metadata list is empty")
    return Metadata(tuple(entries), source, _digest(entries))
