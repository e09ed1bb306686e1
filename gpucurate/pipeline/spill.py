"""What pass 1 keeps for pass 2: its matches, and the rows of shards that
are costly to parse (jsonl, tar).

Pass 1's matches kept for pass 2 (``work/matches/shard-NNNNN.bin``): the
inverted index, (entry_id, text_id) uint32 and each id's language index
(int16, worldwide), written batch by batch as raw frames and read back in
order. Raw arrays cost a memory copy to write and to read, where a parquet
file of the same pairs took a quarter of pass 1 (``--save-matches`` still
writes MetaCLIP's parquet index in ``matches/``).

A frame: a header of four little-endian uint64 (magic, number of pairs,
whether a language array follows, the frame's first text id), then the entry
ids, the text ids and the language indices. Text ids rise from frame to
frame (a frame is a batch of rows); within a frame they may not (worldwide
groups a batch by language).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from ..io.atomic import commit, tmp_path

MAGIC = 0x315053_43504720  # b" GPCSP1" little-endian, a frame's first word
_HEAD = np.dtype("<u8")


class SpillWriter:
    def __init__(self, path: str, with_lang: bool):
        self.path, self.with_lang = path, with_lang
        self.tmp = tmp_path(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.f = open(self.tmp, "wb")

    def write(self, entry: np.ndarray, text: np.ndarray, lang: np.ndarray | None,
              first: int) -> None:
        n = int(entry.size)
        head = np.array([MAGIC, n, int(self.with_lang), first], _HEAD)
        self.f.write(head.tobytes())
        self.f.write(np.ascontiguousarray(entry, "<u4").tobytes())
        self.f.write(np.ascontiguousarray(text, "<u4").tobytes())
        if self.with_lang:
            self.f.write(np.ascontiguousarray(lang, "<i2").tobytes())

    def close(self) -> None:
        self.f.close()
        commit(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


class SpillReader:
    """Forward reads of a spill file: ``take(lo, hi)`` gives the pairs whose
    text id is in [lo, hi), as (text_id int64, entry_id int32, lang int16 or
    None); calls must come with rising ranges."""

    def __init__(self, path: str):
        self.path = path
        self.f = open(path, "rb")
        self.buf = None
        self.eof = False
        self.next_first = None  # first text id of the next frame, once its header is read
        self._head = None

    def _peek(self):
        if self._head is None and not self.eof:
            raw = self.f.read(32)
            if not raw:
                self.eof = True
                return None
            if len(raw) != 32:
                raise InputError(f"{self.path}: pass 1's matches are cut short; rerun with "
                                 "--overwrite")
            self._head = np.frombuffer(raw, _HEAD)
            if int(self._head[0]) != MAGIC:
                raise InputError(f"{self.path}: not a matches file of this version; rerun with "
                                 "--overwrite")
        return self._head

    def _frame(self):
        head = self._head
        self._head = None
        n, with_lang = int(head[1]), bool(head[2])
        size = n * (8 + (2 if with_lang else 0))
        raw = bytearray(size)  # writable: the arrays below are views of it, not copies
        if self.f.readinto(raw) != size:
            raise InputError(f"{self.path}: pass 1's matches are cut short; rerun with "
                             "--overwrite")
        e = np.frombuffer(raw, "<i4", n, 0)  # entry ids < 2**30: the same bits as int32
        t = np.frombuffer(raw, "<u4", n, 4 * n).astype(np.int64)
        lang = np.frombuffer(raw, "<i2", n, 8 * n).astype(np.int16) if with_lang else None
        return t, e, lang

    def take(self, lo: int, hi: int) -> tuple:
        parts = [] if self.buf is None else [self.buf]
        while True:
            head = self._peek()
            if head is None or int(head[3]) >= hi:
                break
            parts.append(self._frame())
        t, e, lang, self.buf = split_range(parts, lo, hi)
        return t, e, lang

    def close(self) -> None:
        self.f.close()


def split_range(parts: list, lo: int, hi: int) -> tuple:
    """(text_id, entry_id, lang) parts read forward, as (the pairs of text ids
    in [lo, hi), the pairs past hi to keep for the next range or None): the
    split both forward cursors (the raw spill, a parquet index) make."""
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int32), None, None
    if len(parts) == 1:
        t, e, lang = parts[0]
    else:
        t = np.concatenate([p[0] for p in parts])
        e = np.concatenate([p[1] for p in parts])
        lang = None if parts[0][2] is None else np.concatenate([p[2] for p in parts])
    if t.size and int(t.min()) >= lo and int(t.max()) < hi:
        return t, e, lang, None
    inside = (t >= lo) & (t < hi)
    rest = t >= hi
    keep = (t[rest], e[rest], None if lang is None else lang[rest]) if rest.any() else None
    return t[inside], e[inside], None if lang is None else lang[inside], keep


class RowsCache:
    """The rows pass 1 read from a jsonl or tar shard, batch by batch as Arrow
    IPC files in a directory (renamed into place when whole), so that pass 2
    reads them back instead of parsing the shard again: the same tables, the
    same row numbers."""

    def __init__(self, path: str):
        import shutil

        self.path = path
        self.tmp = tmp_path(path)
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp)
        self.k = 0

    def write(self, table) -> None:
        import pyarrow as pa

        with pa.OSFile(os.path.join(self.tmp, f"batch-{self.k:06d}.arrow"), "wb") as f:
            with pa.ipc.new_file(f, table.schema) as w:
                w.write_table(table)
        self.k += 1

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


def cached_batches(path: str):
    """(table, first_row) of a :class:`RowsCache` directory, in order."""
    import pyarrow as pa

    first = 0
    for name in sorted(os.listdir(path)):
        with pa.OSFile(os.path.join(path, name), "rb") as src:  # read, not mapped: removable
            table = pa.ipc.open_file(src).read_all()
        yield table, first
        first += table.num_rows
