"""What pass 1 keeps for pass 2: its matches, and the rows of shards that
are costly to parse (jsonl, tar).

Pass 1's matches kept for pass 2 (``work/matches/shard-NNNNN.bin``): each
batch's entry lists in row order, as CSR (the length of every row's list and
the ids, uint32) with each row's language index (int16, worldwide), written
as raw frames and read back in order as views of the mapped file. A parquet
file of (entry_id, text_id) pairs took a quarter of pass 1; pairs with a text
id each (8 bytes a pair) cost pass 2 a search for its rows and a CSR built
again (``--save-matches`` still writes MetaCLIP's parquet index in
``matches/``).

A frame: a header of five little-endian uint64 (magic, rows, ids, whether a
language array follows, the frame's first row), then the rows' list lengths
(uint32), the ids (uint32) and the rows' language indices (int16), zero-padded
to 8 bytes. Frames cover the shard's rows in order, one after the other.
"""

from __future__ import annotations

import mmap
import os

import numpy as np

from ..errors import InputError
from ..io.atomic import commit, tmp_path
from ..log import logger

MAGIC = 0x335053_43504720  # b" GPCSP3" little-endian, a frame's first word
_HEAD = np.dtype("<u8")
_HEAD_WORDS = 5


class SpillWriter:
    def __init__(self, path: str, with_lang: bool):
        self.path, self.with_lang = path, with_lang
        self.tmp = tmp_path(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.f = open(self.tmp, "wb")

    def write(self, lens: np.ndarray, ids: np.ndarray, lang: np.ndarray | None,
              first: int) -> None:
        """One batch of rows from ``first``: their list lengths, their ids in
        row order and (worldwide) each row's language index."""
        rows, n = int(lens.size), int(ids.size)
        head = np.array([MAGIC, rows, n, int(self.with_lang), first], _HEAD)
        self.f.write(head)  # the arrays' own bytes where their type fits
        self.f.write(np.ascontiguousarray(lens, "<u4"))
        self.f.write(np.ascontiguousarray(ids, "<u4"))
        size = 4 * (rows + n)
        if self.with_lang:
            self.f.write(np.ascontiguousarray(lang, "<i2"))
            size += 2 * rows
        self.f.write(b"\0" * (-size % 8))  # the next frame on 8 bytes

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
    """Forward reads of a spill file: ``take(lo, hi)`` gives the lists of
    rows [lo, hi) as CSR (offsets int64, ids int32) and their language
    indices (int16, or None); calls come with rising, adjoining ranges. The
    file is mapped copy-on-write and the ids of a range inside one frame are a
    view of the mapping (pass 1 has just written it: the pages are in the page
    cache, nothing is copied)."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self.mm = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE,
                                prot=mmap.PROT_READ | mmap.PROT_WRITE) if size else b""
        self.size = size
        self.pos = 0
        self.frame = None  # (first row, lens, ids, lang, row cursor, id cursor)

    @classmethod
    def of_this_version(cls, path: str) -> "SpillReader | None":
        """The reader of ``path``, or None when the file was written by
        another version of gpucurate (a run resumed after an upgrade): pass 2
        then matches that shard again, and the file is removed."""
        with open(path, "rb") as f:
            first = f.read(8)
        if first[:6] == MAGIC.to_bytes(8, "little")[:6] and \
                first != MAGIC.to_bytes(8, "little"):
            logger.warning("%s: pass 1's matches of another version of gpucurate; this shard "
                           "is matched again in pass 2", path)
            os.remove(path)
            return None
        return cls(path)

    def _cut(self):
        raise InputError(f"{self.path}: pass 1's matches are cut short; rerun with --overwrite")

    def _next_frame(self):
        if self.size - self.pos < 8 * _HEAD_WORDS:
            self._cut()
        head = np.frombuffer(self.mm, _HEAD, _HEAD_WORDS, self.pos)
        if int(head[0]) != MAGIC:
            raise InputError(f"{self.path}: not a matches file of this version; rerun with "
                             "--overwrite")
        rows, n, with_lang, first = (int(x) for x in head[1:])
        at = self.pos + 8 * _HEAD_WORDS
        size = 4 * (rows + n) + (2 * rows if with_lang else 0)
        size += -size % 8  # frames start on 8 bytes: the arrays are aligned views
        if self.size - at < size:
            self._cut()
        self.pos = at + size
        lens = np.frombuffer(self.mm, "<u4", rows, at)
        ids = np.frombuffer(self.mm, "<i4", n, at + 4 * rows)  # ids < 2**30: int32's bits
        lang = np.frombuffer(self.mm, "<i2", rows, at + 4 * (rows + n)) if with_lang else None
        self.frame = [first, lens, ids, lang, 0, 0]

    def take(self, lo: int, hi: int) -> tuple:
        lens_p, ids_p, lang_p = [], [], []
        row = lo
        while row < hi:
            if self.frame is None or self.frame[4] == self.frame[1].size:
                self._next_frame()
                continue
            first, lens, ids, lang, r, q = self.frame
            if first + r != row:
                raise InputError(f"{self.path}: pass 1's matches do not cover rows {row} on "
                                 "in order; rerun with --overwrite")
            k = min(hi - row, lens.size - r)
            ln = lens[r:r + k]
            m = int(ln.sum(dtype=np.int64))
            lens_p.append(ln)
            ids_p.append(ids[q:q + m])
            if lang is not None:
                lang_p.append(lang[r:r + k])
            self.frame[4], self.frame[5] = r + k, q + m
            row += k
        n = hi - lo
        off = np.zeros(n + 1, np.int64)
        if lens_p:
            np.cumsum(np.concatenate(lens_p) if len(lens_p) > 1 else lens_p[0], out=off[1:])
        ids = ids_p[0] if len(ids_p) == 1 else (np.concatenate(ids_p) if ids_p else
                                                np.zeros(0, np.int32))
        lang = None if not lang_p else (lang_p[0] if len(lang_p) == 1 else
                                        np.concatenate(lang_p))
        return off, ids, lang

    def close(self) -> None:
        self.mm = b""  # the mapping goes with the last array viewing it


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
