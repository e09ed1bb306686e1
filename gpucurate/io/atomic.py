"""Outputs written whole: a temporary file beside the target, flushed to disk,
renamed over it, and the directory flushed after the rename, so that after a
crash or a power loss a file (a completion marker above all) exists whole or
not at all, never without the data it marks."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from .fs import publish

TMP = ".tmp-"  # temporary files are named <target>.tmp-<pid>


def tmp_path(path: str) -> str:
    return f"{path}{TMP}{os.getpid()}"


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(tmp: str, path: str, upload: bool = True) -> None:
    """Flush ``tmp`` to disk, rename it to ``path``, flush the directory.
    ``upload=False``: a scratch file of this machine's, never published."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path)
    if upload:
        publish(path)  # an output on s3:// or gs://: uploaded whole, as one object


def atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
    commit(tmp, path)


def atomic_write_json(path: str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def atomic_write_parquet(path: str, table: pa.Table, **kw) -> None:
    tmp = tmp_path(path)
    kw.setdefault("compression", "zstd")
    try:
        pq.write_table(table, tmp, **kw)
        commit(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
