"""Loading and validating a MetaCLIP metadata list (id = position in the list)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from .errors import MetadataError


@dataclass(frozen=True)
class Metadata:
    """A validated metadata list: ``entries[i]`` is entry id ``i``."""

    entries: tuple[str, ...]
    source: str
    sha256: str

    def __len__(self) -> int:
        return len(self.entries)


def _digest(entries) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(list(entries), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _check(entries, source: str, unit: str) -> None:
    """Every entry a non-empty string of valid Unicode; the first that is not
    is named. Lists that pass (nearly all) are checked in bulk by pyarrow."""
    try:
        if all(type(e) is str for e in entries):
            import pyarrow as pa
            import pyarrow.compute as pc

            lens = pc.utf8_length(pa.array(entries, pa.large_string()))
            if not len(lens) or pc.min(lens).as_py() > 0:
                return
    except (UnicodeEncodeError, ValueError, TypeError, OverflowError):
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
        if path.lower().endswith(".json"):
            try:
                entries = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise MetadataError(f"{path}: not valid JSON ({exc}); a .json metadata file is "
                                    "a JSON list of strings") from None
            if not isinstance(entries, list):
                raise MetadataError(f"{path}: holds a JSON {type(entries).__name__}, not a list; "
                                    "a .json metadata file is a JSON list of strings")
            _check(entries, path, "index")
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = raw[: exc.start].count(b"\n") + 1
                raise MetadataError(f"{path}: line {line} is not valid UTF-8; save the file as "
                                    "UTF-8") from None
            entries = text.split("\n")
            if entries and entries[-1] == "":
                entries.pop()
            entries = [e[:-1] if e.endswith("\r") else e for e in entries]
            _check(entries, path, "line")
        source = path
        if key is not None and entries:
            md = Metadata(tuple(entries), source, _digest(entries))
            _LOADED[key] = md
            return md
    else:
        entries = list(metadata)
        source = "<metadata list>"
        _check(entries, source, "index")
    if not entries:
        raise MetadataError(f"{source}: the metadata list is empty")
    return Metadata(tuple(entries), source, _digest(entries))
