"""What pass 1 keeps for pass 2: its matches, and the rows of shards that
are costly to parse (jsonl, tar).

Pass 1's matches kept for pass 2 (``work/matches/shard-NNNNN.bin``): the
inverted index, (entry_id, text_id) uint32 and each id's language index
(int16, worldwide), written batch by batch as raw frames and read back in
order. Raw arrays are written from their own buffers and read back as views
of the mapped file, where a parquet file of the same pairs took a quarter of
pass 1 (``--save-matches`` still
writes MetaCLIP's parquet index in ``matches/``).

A frame: a header of four little-endian uint64 (magic, number of pairs,
whether a language array follows, the frame's first text id), then the entry
ids, the text ids and the language indices, zero-padded to 8 bytes. Text ids
rise from frame to frame (a frame is a batch of rows); within a frame they may
not (worldwide groups a batch by language).
"""

from __future__ import annotations

import mmap
import os

import numpy as np

from ..errors import InputError
from ..io.atomic import commit, tmp_path

MAGIC = 0x325053_43504720  # b" GPCSP2" little-endian, a frame's first word
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
        self.f.write(head)  # the arrays' own bytes, not copies
        self.f.write(np.ascontiguousarray(entry, "<u4"))
        self.f.write(np.ascontiguousarray(text, "<u4"))
        if self.with_lang:
            self.f.write(np.ascontiguousarray(lang, "<i2"))
            self.f.write(b"\0" * (-2 * n % 8))  # the next frame on 8 bytes

    def close(self) -> None:
        self.f.close()
        # scratch of this machine: a pass 2 elsewhere (another node, a resumed
        # run) reads the saved index or matches again
        commit(self.tmp, self.path, upload=False)

    def abort(self) -> None:
        self.f.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


class SpillReader:
    """Forward reads of a spill file: ``take(lo, hi)`` gives the pairs whose
    text id is in [lo, hi), as (text_id uint32, entry_id int32, lang int16 or
    None); calls must come with rising ranges. The file is mapped copy-on-write
    and the arrays are views of the mapping (pass 1 has just written it: the
    pages are in the page cache, nothing is copied)."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self.mm = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE,
                                prot=mmap.PROT_READ | mmap.PROT_WRITE) if size else b""
        self.size = size
        self.pos = 0
        self.buf = None
        self._head = None

    def _cut(self):
        raise InputError(f"{self.path}: pass 1's matches are cut short; rerun with --overwrite")

    def _peek(self):
        if self._head is None and self.pos < self.size:
            if self.size - self.pos < 32:
                self._cut()
            self._head = np.frombuffer(self.mm, _HEAD, 4, self.pos)
            if int(self._head[0]) != MAGIC:
                raise InputError(f"{self.path}: not a matches file of this version; rerun with "
                                 "--overwrite")
        return self._head

    def _frame(self):
        head = self._head
        self._head = None
        n, with_lang = int(head[1]), bool(head[2])
        at = self.pos + 32
        size = n * (8 + (2 if with_lang else 0))
        size += -size % 8  # frames start on 8 bytes: the arrays are aligned views
        if self.size - at < size:
            self._cut()
        self.pos = at + size
        e = np.frombuffer(self.mm, "<i4", n, at)  # entry ids < 2**30: the same bits as int32
        t = np.frombuffer(self.mm, "<u4", n, at + 4 * n)
        lang = np.frombuffer(self.mm, "<i2", n, at + 8 * n) if with_lang else None
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
        self.mm = b""  # the mapping goes with the last array viewing it


def split_range(parts: list, lo: int, hi: int) -> tuple:
    """(text_id, entry_id, lang) parts read forward, as (the pairs of text ids
    in [lo, hi), the pairs past hi to keep for the next range or None): the
    split both forward cursors (the raw spill, a parquet index) make."""
    if not parts:
        return np.zeros(0, np.uint32), np.zeros(0, np.int32), None, None
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
