"""The curated set as WebDataset shards (``--outputs webdataset``).

After pass 2, the kept samples (the rows of ``curated/part-NNNNN.parquet``, in
input order) are copied from the input tars into ``curated-wds/00000.tar``,
``00001.tar``, ... with ``--samples-per-shard`` samples each. A sample's
members are copied byte for byte, headers included; only its ``.json`` member
is rewritten, gaining ``"entry_ids"`` (a ``.json`` is created when the sample
has none). ``curated-wds/sizes.json`` maps each tar's name to its sample count
(what open_clip reads).

The samples of a tar: a tar shard's own samples, keyed by ``__key__``; a
download folder's rows (img2dataset, DataComp), keyed by the parquet's
``key`` column, are the samples of the tar beside it with that key. Pass 1
leaves where each sample of a tar shard lies (``work/wds/``), so that only
the kept samples' bytes are read (by range requests for a tar at a URL); a
download folder's tar has its headers walked first.

Each output tar is one call of the executor (:func:`write_tar_call`: local
threads, or Ray's workers), written to a temporary name and renamed.
Resumable: ``work/wds/plan.json`` records which kept samples go to which
output tar before any is written, so a rerun skips the tars that exist.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import tarfile

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError, InputError
from ..io import Shard, atomic_write_json
from ..io.atomic import commit, tmp_path
from ..io.tar import _blk, _header_sums, _num, sample_key
from ..io.fs import fetch, is_url, published, published_names, unpublish
from .layout import OutputLayout
from .stream import prefetch

BLOCK = 512
RECORD = 20 * BLOCK
COPY_CHUNK = 8 << 20  # input bytes per read
READ_AHEAD = 64 << 20  # input bytes announced ahead of the read
WRITEBACK = 8 << 20  # output bytes between starts of their writeback
REMOTE_GAP = 1 << 20  # a tar at a URL: dropped bytes read rather than another request
DECOMPRESS_CHUNK = 4 << 20  # a compressed tar: decompressed bytes per step
WS = b" \t\r\n"


def tar_name(j: int) -> str:
    return f"{j:05d}.tar"


def sample_key_column(shard: Shard) -> str:
    """The curated part's column that names a kept row's sample in the tar."""
    return "__key__" if shard.fmt == "tar" else "key"


def check_wds_inputs(shards: list) -> None:
    """Every shard must bring its tar: a tar shard, or a download folder's
    parquet (with its ``key`` column) beside one. Checked before any work."""
    for s in shards:
        if s.fmt == "tar":
            continue
        if s.tar is None:
            raise ConfigError(
                f"--outputs webdataset copies the kept samples' images from tar shards, but "
                f"{s.path} is a {s.fmt} shard without a tar beside it (an img2dataset or "
                "DataComp folder has NAME.parquet and NAME.tar); give tar shards or download "
                "folders, or drop webdataset from --outputs")
        from ..io.parquet import open_parquet  # local paths and URLs alike

        names = open_parquet(s.path).schema_arrow.names
        if "key" not in names:
            raise ConfigError(
                f"--outputs webdataset: {s.path} has no 'key' column to find its rows' samples "
                f"in {s.tar} (columns: {', '.join(names)}); give the download folder's own "
                "parquet, or drop webdataset from --outputs")


# ---------------------------------------------------------------- the plan
def make_plan(kept: list, per_shard: int) -> dict:
    total = sum(kept)
    return {"samples_per_shard": int(per_shard), "kept": [int(k) for k in kept],
            "tars": (total + per_shard - 1) // per_shard}


def _pieces(plan: dict) -> list:
    """Per output tar, its [(input shard position, first kept row, end)]:
    one walk of the shards (100k shards made 40k tars; a walk per tar took
    19 minutes)."""
    s = plan["samples_per_shard"]
    out: list = [[] for _ in range(plan["tars"])]
    start = 0  # the first kept sample of shard pos, in the output's order
    for pos, k in enumerate(plan["kept"]):
        a = start
        while a < start + k:
            j = a // s
            b = min(start + k, (j + 1) * s)
            out[j].append((pos, a - start, b - start))
            a = b
        start += k
    return out


def _sizes(plan: dict) -> dict:
    """{tar name: samples} of the plan: every tar holds samples_per_shard but the last."""
    s, total = plan["samples_per_shard"], sum(plan["kept"])
    return {tar_name(j): min(s, total - j * s) for j in range(plan["tars"])}


# ---------------------------------------------------------------- inputs
class _Source:
    """One input shard: its kept rows (sample keys, entry ids) and its tar's
    samples (member byte ranges), mapped once.

    When pass 1 read this tar, it left where each sample lies
    (:meth:`OutputLayout.wds_spans`): the members of a kept sample are then
    found by walking the headers of its bytes alone, as they are copied;
    otherwise (a download folder's tar, a run without pass 1) the whole tar's
    headers are walked first."""

    def __init__(self, layout: OutputLayout, shard: Shard, scratch: str,
                 rows: tuple | None = None):
        """``rows``: (first, end) of the kept rows an output tar takes from
        this shard (all when None): only their samples are fetched from a
        URL, and a compressed tar is decompressed up to their end."""
        self.shard = shard
        col = sample_key_column(shard)
        fetch(layout.curated(shard.index))  # written on another node: from its object
        t = pq.read_table(layout.curated(shard.index), columns=[col, "entry_ids"])
        self.keys = t.column(col).to_pylist()
        self.ids = t.column("entry_ids").to_pylist()
        self.rows = rows or (0, len(self.keys))
        path = shard.tar or shard.path
        self.label = path
        self.scratch = None
        self.sparse = False
        self.partial = None  # (compressed source, scratch tar) decompressed in part
        from ..io.tar import compression

        spans = _spans(layout, shard)
        need = max((spans[k][1] for k in self.keys[self.rows[0]:self.rows[1]] if k in spans),
                   default=0) if spans else None  # the end of the bytes taken
        if is_url(path):  # an object: a local copy (of the kept samples alone, when known)
            os.makedirs(scratch, exist_ok=True)
            local = os.path.join(scratch, f"obj-{shard.index:05d}.tar")
            self.sparse = _copy_remote(path, local, self._ranges(spans) if spans else None)
            self.scratch = path = local
        if compression(path) is not None:  # a compressed tar: decompressed aside
            os.makedirs(scratch, exist_ok=True)
            dest = os.path.join(scratch, f"src-{shard.index:05d}.tar")
            _decompress(path, dest, need)
            self.partial = (path, dest) if need is not None else None
            if self.scratch:
                os.remove(self.scratch)
            self.scratch = path = dest
        self.f = open(path, "rb")
        self.fd = self.f.fileno()
        self.size = os.fstat(self.f.fileno()).st_size
        self.mm = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ) if self.size else b""
        if spans and need > self.size:  # not this file's
            spans = None
            if self.sparse:
                self._whole()
        self.spans = spans
        self.samples = None if self.spans is not None else _index(self.f, self.mm, self.label)
        self.table = np.zeros((64, 8), np.int64)  # a sample's members, walked

    def _ranges(self, spans: dict) -> list:
        """The byte ranges of the kept samples and the first block (what tells
        a compressed tar), two joined when at most ``REMOTE_GAP`` bytes apart
        (a request costs about what reading that many bytes does)."""
        out = [(0, BLOCK)]
        for key in self.keys[self.rows[0]:self.rows[1]]:
            span = spans.get(key)
            if span is None:
                continue
            if span[0] <= out[-1][1] + REMOTE_GAP:
                out[-1] = (out[-1][0], max(out[-1][1], span[1]))
            else:
                out.append(span)
        return out

    def _whole(self) -> None:
        """A sparse copy or a part decompressed made whole (the object read,
        or the tar decompressed, again in full)."""
        if not self.sparse and self.partial is None:
            return
        if isinstance(self.mm, mmap.mmap):
            self.mm.close()
        self.f.close()
        if self.partial is not None:
            src, dest = self.partial
            if is_url(self.label):  # the compressed object again, then all of it decompressed
                _copy_remote(self.label, src, None)
            _decompress(src, dest)
            if is_url(self.label):
                os.remove(src)
        else:
            _copy_remote(self.label, self.scratch, None)
        self.sparse = False
        self.partial = None
        self.f = open(self.scratch, "rb")
        self.fd = self.f.fileno()
        self.mm = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ)

    def members(self, key: str) -> list | None:
        """The members of sample ``key``: [(ext, first header offset, data
        offset, data size, header offset, name)], or None if it has none."""
        if self.samples is not None:
            return self.samples.get(key)
        span = self.spans.get(key)
        if span is None:
            return None
        found = _index_range(self.mm, span[0], span[1], self.label, self.table)
        if found is None:  # a pax header: the whole tar listed by tarfile
            self._whole()
            self.samples = _index(self.f, self.mm, self.label)
            return self.samples.get(key)
        return found.get(key)

    def extent(self, key: str) -> tuple | None:
        """(start, end): the bytes of sample ``key`` in the tar, or None."""
        if self.samples is None:
            return self.spans.get(key)
        m = self.samples.get(key)
        if not m:
            return None
        return (min(x[1] for x in m), max(x[2] + x[3] + (-x[3]) % BLOCK for x in m))

    def close(self) -> None:
        if isinstance(self.mm, mmap.mmap):
            self.mm.close()
        self.f.close()
        if self.scratch and os.path.exists(self.scratch):
            os.remove(self.scratch)


def _spans(layout: OutputLayout, shard: Shard) -> dict | None:
    """{sample key: (start, end)} of a tar shard, as pass 1 found them
    (:class:`SpanWriter`), or None (no pass 1 over this tar)."""
    path = layout.wds_spans(shard.index)
    if shard.fmt != "tar" or not fetch(path):
        return None
    t = pq.read_table(path)
    return dict(zip(t.column("key").to_pylist(),
                    zip(t.column("start").to_pylist(), t.column("end").to_pylist())))


class SpanWriter:
    """Where each sample of a tar shard lies, written by pass 1 as it reads
    the tar: a parquet of ``key``, ``start`` and ``end`` (one row group per
    batch; each sample ends where the next one starts, the last at the end of
    the archive), taken batch by batch from ``io.read_batches``'s ``spans``
    (:meth:`append`), so that memory stays bounded by the batch. Made whole by
    :meth:`close` only when the reader reached the end of the archive."""

    SCHEMA = pa.schema([("key", pa.string()), ("start", pa.int64()), ("end", pa.int64())])

    def __init__(self, path: str):
        self.path, self.tmp = path, tmp_path(path)
        self.writer = None
        self.pending = None  # (keys, starts): the batch whose last end is the next start
        self.end = None

    def append(self, item) -> None:
        if isinstance(item, int):  # the end of the archive
            self.end = item
            self._flush(item)
            return
        keys, starts = item  # a batch of one sample or more
        self._flush(int(starts[0]))
        self.pending = (keys.cast(pa.string()), np.asarray(starts, np.int64))

    def _flush(self, next_start: int) -> None:
        if self.pending is None:
            return
        keys, starts = self.pending
        self.pending = None
        ends = np.append(starts[1:], next_start)
        self._writer().write_table(pa.Table.from_arrays(
            [keys, pa.array(starts), pa.array(ends)], schema=self.SCHEMA))

    def _writer(self):
        if self.writer is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, self.SCHEMA, compression="zstd")
        return self.writer

    def close(self) -> None:
        """Commit the file when the whole tar was read, else drop it."""
        if self.end is None:
            self.abort()
            return
        self._writer().close()
        commit(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def _copy_remote(url: str, local: str, ranges: list | None) -> bool:
    """A local copy of an input object: whole (``ranges`` None, or a
    compressed tar, whose ranges are of its stream), or only those byte
    ranges, in a sparse file of the object's size (ranged reads: the kept
    samples of a plain tar on S3, GCS or http). Returns whether sparse."""
    from ..io.fs import _copy_object, open_input, stat_input
    from ..io.tar import head_compression

    tmp = tmp_path(local)
    try:
        if ranges is not None:
            with open_input(url, native=True) as src:
                if head_compression(src.read(BLOCK)) is not None:
                    ranges = None
        size = stat_input(url).get("size") if ranges is not None else None
        if size is None:  # no ranges, or a server that does not say the size: all of it
            ranges = None
        if ranges is None:
            _copy_object(url, tmp)
        else:
            size = int(size)
            with open(tmp, "wb") as out, open_input(url, native=True) as src:
                out.truncate(size)
                for a, b in ranges:
                    b = min(b, size)
                    src.seek(a)
                    while a < b:
                        data = src.read(min(b - a, COPY_CHUNK))
                        if not data:
                            raise InputError(f"{url}: the object ends at byte {a}, inside a "
                                             "kept sample; it changed during the run: run again")
                        os.pwrite(out.fileno(), data, a)
                        a += len(data)
        os.replace(tmp, local)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return ranges is not None


def _decompress(path: str, dest: str, upto: int | None = None) -> None:
    """The tar of a compressed one, whole, or its first ``upto`` bytes at least."""
    from ..io.tar import _chunks, compression

    tmp = tmp_path(dest)
    with open(tmp, "wb") as out:
        n = 0
        for chunk in _chunks(path, compression(path), DECOMPRESS_CHUNK):
            out.write(chunk)
            n += len(chunk)
            if upto is not None and n >= upto:
                break
    os.replace(tmp, dest)


@numba.njit(cache=True, nogil=True)
def _cstr(b, off, cap):
    n = 0
    while n < cap and b[off + n] != 0:
        n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _scan_plain(b, out):
    """Members of a plain tar (ustar, GNU long names), read by the rules of
    pass 1's walker (``io.tar._walk``, tarfile's): the first GNU long name
    names its member, a ustar prefix is read whenever it is set, and the data
    of a member is skipped when it is a regular file or of a type the format
    does not define (GNU's ``D``, ``V``, ...). Per member, out[i] = (first
    header, data offset, size, name offset, name length, prefix offset,
    prefix length, regular). Returns (members, status, offset): status 0 at
    the end-of-archive marker (its offset), 1 at the end of the bytes (no
    marker met), -1 at a pax header (the caller lists the tar otherwise), -2
    when out is full, -3 at a damaged header (its offset), -4 when a member's
    data runs past the bytes (its header's offset)."""
    n = 0
    pos = 0
    first = -1
    long_off = -1
    long_len = 0
    size_b = b.size
    while pos + BLOCK <= size_b:
        raw, uns, sgn = _header_sums(b, pos)
        if raw == 0:
            return n, 0, pos
        ck = _num(b, pos + 148, 8)
        size = _num(b, pos + 124, 12)
        if (ck != uns and ck != sgn) or size < 0:
            return n, -3, pos
        t = b[pos + 156]
        if first < 0:
            first = pos
        padded = _blk(size)
        if t == 76:  # 'L': the next member's long name (the first one counts)
            if long_off < 0:
                long_off = pos + BLOCK
                long_len = _cstr(b, long_off, min(padded, size_b - long_off))
            pos += BLOCK + padded
            continue
        if t == 75:  # 'K': a long link name
            pos += BLOCK + padded
            continue
        if t == 120 or t == 103 or t == 88:  # pax x, g, X
            return n, -1, pos
        if n == out.shape[0]:
            return n, -2, pos
        hn = _cstr(b, pos, 100)
        areg_dir = t == 0 and hn > 0 and b[pos + hn - 1] == 47  # an old-style directory
        regular = (t == 48 or t == 0 or t == 55) and not areg_dir
        defined = (49 <= t <= 54) or t == 48 or t == 0 or t == 55
        out[n, 0] = first
        out[n, 1] = pos + BLOCK
        out[n, 2] = size if regular else 0
        if long_off >= 0:
            out[n, 3] = long_off
            out[n, 4] = long_len
            out[n, 6] = 0
        else:
            out[n, 3] = pos
            out[n, 4] = hn
            out[n, 5] = pos + 345
            out[n, 6] = _cstr(b, pos + 345, 155)
        out[n, 7] = 1 if regular else 0
        if regular and pos + BLOCK + size > size_b:
            return n, -4, pos
        n += 1
        pos += BLOCK + (padded if regular or not defined else 0)
        first = -1
        long_off = -1
    return n, 1, pos


def _scan(b: np.ndarray, label: str, base: int, out: np.ndarray | None = None) -> tuple:
    """(members, status) of :func:`_scan_plain` over ``b`` (the tar's bytes
    from ``base``), its table (``out`` when given) grown as needed."""
    if out is None:
        out = np.zeros((max(16, b.size // 4096), 8), np.int64)
    while True:
        n, status, pos = _scan_plain(b, out)
        if status == -3:
            raise InputError(f"{label}: bad tar header at byte {base + pos} (its checksum or "
                             "size does not read); re-create the tar")
        if status == -4:
            raise InputError(f"{label}: the tar ends at byte {base + b.size}, inside the data "
                             f"of the member whose header is at byte {base + pos}: it was cut "
                             "short; download or re-create it")
        if status != -2:
            return out[:n], status, pos
        out = np.zeros((out.shape[0] * 2, 8), np.int64)


def _collect(rows: np.ndarray, mm, base: int, samples: dict, label: str) -> dict:
    """Add the regular members of :func:`_scan_plain`'s ``rows`` (offsets
    from ``base``) to ``samples``, by sample key (:func:`_add`)."""
    last = None
    for first, data, size, no, nl, po, pl, reg in rows.tolist():
        if not reg:
            continue
        name = bytes(mm[base + no:base + no + nl])
        if pl:
            name = bytes(mm[base + po:base + po + pl]) + b"/" + name
        last = _add(samples, last, name, (base + first, base + data, size, base + data - BLOCK),
                    label)
    return samples


def _add(samples: dict, last: str | None, name: bytes, where: tuple, label: str) -> str | None:
    """Add member ``name`` at ``where`` (first header, data offset, size,
    header offset) to ``samples`` ({key: members}, in the tar's order) by
    its sample key (:func:`io.tar.sample_key`, pass 1's rule); return the
    key of the sample it belongs to (``last`` when none). A key met again
    after another sample's is an error: pass 1 refuses it in a tar shard, and
    WebDataset would read the two as one sample."""
    ke = sample_key(name)
    if ke is None:
        return last
    key = ke[0].decode("utf-8", "surrogateescape")
    members = samples.get(key)
    if members is None:
        samples[key] = members = []
    elif key != last:
        raise InputError(f"{label}: sample {key!r} appears twice, apart (again at byte "
                         f"{where[0]}); a sample's files must follow each other and its key be "
                         "the tar's only one: re-create the tar")
    members.append((ke[1].decode("utf-8", "surrogateescape").lower(), *where,
                    name.decode("utf-8", "surrogateescape")))
    return key


def _index_range(mm, start: int, end: int, label: str,
                 out: np.ndarray | None = None) -> dict | None:
    """The samples of the members in bytes [start, end) of a plain tar (one
    sample's, as pass 1 found them), or None at a pax header."""
    b = np.frombuffer(mm, np.uint8, end - start, start)
    rows, status, _ = _scan(b, label, start, out)
    del b
    return None if status == -1 else _collect(rows, mm, start, {}, label)


def _index(f, mm, label: str) -> dict:
    """{sample key: [(ext, first header offset, data offset, data size, header offset, name)]}."""
    if isinstance(mm, mmap.mmap):
        b = np.frombuffer(mm, np.uint8)
        rows, status, pos = _scan(b, label, 0)
        if status >= 0:
            _check_end(b, pos, status, label)
        del b
        if status >= 0:
            return _collect(rows, mm, 0, {}, label)
    samples: dict = {}
    last = None
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    try:  # pax headers: tarfile reads them
        with tarfile.open(fileobj=f, mode="r:") as tf:
            for ti in tf:
                if ti.isreg():
                    if ti.offset_data + ti.size > size:
                        raise InputError(f"{label}: the tar ends at byte {size}, inside the "
                                         f"data of {ti.name!r}: it was cut short; download or "
                                         "re-create it")
                    last = _add(samples, last, ti.name.encode("utf-8", "surrogateescape"),
                                (ti.offset, ti.offset_data, ti.size, ti.offset_data - BLOCK),
                                label)
            end = tf.offset
    except tarfile.TarError as exc:
        raise InputError(f"{label}: cannot list the tar's members ({exc}); re-create it") from None
    f.seek(end)
    tail = f.read(size - end)
    _check_end(np.frombuffer(tail, np.uint8), 0, 0 if tail[:BLOCK] == bytes(BLOCK) else 1,
               label, end)
    return samples


def _check_end(b: np.ndarray, pos: int, status: int, label: str, base: int = 0) -> None:
    """A whole tar (a download folder's, which pass 1 never walked) ends as
    pass 1 asks of a tar shard: the end-of-archive marker, two zero blocks,
    at ``pos``, then zeros alone (the record's padding)."""
    if status == 1 or b.size - pos < 2 * BLOCK:
        raise InputError(f"{label}: the tar ends at byte {base + b.size} without its "
                         "end-of-archive marker (two zero blocks): it was cut short; download "
                         "or re-create it")
    if b[pos:].any():
        raise InputError(f"{label}: bytes other than zeros after the end-of-archive marker "
                         f"(at byte {base + pos}); re-create the tar")


def with_entry_ids(raw: bytes, ids: list, where: str, checked: bool = True) -> bytes:
    """A .json object with ``"entry_ids"`` added; its other bytes kept as they
    are. ``checked``: pass 1 read this member as a JSON object (a tar
    shard's); else (a download folder's tar, whose members pass 1 never
    reads) it is parsed here first, so that nothing but an object is written."""
    tail = ("[" + ",".join(map(str, map(int, ids))) + "]").encode()
    body = raw.strip(WS)
    if not checked:
        try:
            ok = isinstance(json.loads(raw), dict)
        except ValueError as exc:
            raise InputError(f"{where}: .json is not valid JSON ({exc}); fix the sample"
                             ) from None
        if not ok:
            raise InputError(f"{where}: .json is not an object; fix the sample")
    if body[:1] == b"{" and body[-1:] == b"}":
        inner = body[1:-1].strip(WS)
        if not inner:
            return b'{"entry_ids": ' + tail + b"}"
        return body[:-1].rstrip(WS) + b', "entry_ids": ' + tail + b"}"
    try:  # another encoding, a byte order mark: parsed and written again
        obj = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"{where}: .json is not valid JSON ({exc}); fix the sample") from None
    if not isinstance(obj, dict):
        raise InputError(f"{where}: .json is not an object; fix the sample")
    obj["entry_ids"] = [int(i) for i in ids]
    return json.dumps(obj, ensure_ascii=False).encode()


def _member(ti: tarfile.TarInfo, name: str, data: bytes) -> bytes:
    new = tarfile.TarInfo(name)
    new.mode, new.uid, new.gid = ti.mode, ti.uid, ti.gid
    new.uname, new.gname, new.mtime = ti.uname, ti.gname, ti.mtime
    new.size = len(data)
    pad = (-len(data)) % BLOCK
    return new.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape") + data + b"\0" * pad


def _header(src: _Source, off: int) -> tarfile.TarInfo:
    """The member header at ``off`` (its mode, owner and time are kept)."""
    try:
        return tarfile.TarInfo.frombuf(bytes(src.mm[off:off + BLOCK]), "utf-8", "surrogateescape")
    except tarfile.TarError as exc:
        raise InputError(f"{src.label}: bad tar header at byte {off} ({exc}); re-create it"
                         ) from None


def _with_size(block: bytes, size: int, name: bytes | None = None) -> bytes | None:
    """A copy of a ustar/GNU header block with another size (and name, of at
    most 100 bytes), its checksum made again; None when it cannot be patched."""
    if size >= 8 ** 11:
        return None
    h = bytearray(block)
    if name is not None:
        if len(name) > 100:
            return None
        h[0:100] = name.ljust(100, b"\0")
        h[156:157] = b"0"
        # the prefix belonged to the other name (in a GNU header, times that
        # readers would take for a prefix all the same)
        h[345:500] = b"\0" * 155
    h[124:136] = b"%011o\0" % size
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _json_member(src: _Source, first: int, hdr: int, name: str, data: bytes,
                 new: bool) -> bytes:
    """The .json member with its new data: the input's headers with the size
    patched (or, for a new .json, the sample's first header renamed)."""
    pad = b"\0" * ((-len(data)) % BLOCK)
    block = bytes(src.mm[hdr:hdr + BLOCK])
    if new:
        h = _with_size(block, len(data), name.encode("utf-8", "surrogateescape"))
        if h is not None:
            return h + data + pad
    elif hdr == first:  # one header: patched in place
        h = _with_size(block, len(data))
        if h is not None:
            return h + data + pad
    return _member(_header(src, hdr), name, data)


def _sample_segments(src: _Source, row: int) -> list:
    """The segments of one kept sample: (start, end) byte ranges of the input
    tar, and bytes (its new .json member)."""
    key = src.keys[row]
    where = f"{src.label}: sample {key!r}"
    members = src.members(key)
    if not members:
        raise InputError(f"{where} (kept row {row} of {src.shard.path}) is not in the tar; the "
                         "parquet and the tar of a download folder must hold the same samples")
    segs: list = []
    # the .json rewritten is the one pass 1 read: the sample's last (any case)
    js = max((i for i, m in enumerate(members) if m[0] == "json"), default=-1)
    for i, (ext, off, data_off, size, hdr, name) in enumerate(members):
        if i == js:
            raw = bytes(src.mm[data_off:data_off + size])
            segs.append(_json_member(src, off, hdr, name, with_entry_ids(
                raw, src.ids[row], where, src.shard.fmt == "tar"), False))
        else:
            segs.append((off, data_off + size + (-size) % BLOCK))
    if js < 0:
        segs.append(_json_member(src, members[0][1], members[0][4], key + ".json",
                                 with_entry_ids(b"{}", src.ids[row], where), True))
    return segs


def _contents(sources: list, chunk: int, ahead: int):
    """The bytes of an output tar made of [(source, first row, end)], in
    order, as lists of pieces: the kept samples' members (views of the input
    bytes) and their new ``.json`` members. The input is read with ``pread``,
    one read per run of kept samples that follow each other in their tar (at
    most ``chunk`` bytes, or one sample). The samples up to ``ahead`` bytes
    past the one being read are announced to the kernel
    (``POSIX_FADV_WILLNEED``), so that input out of the page cache is read
    from disk while the bytes before it are written."""
    will = getattr(os, "POSIX_FADV_WILLNEED", None)
    for src, a, b in sources:
        told, told_to = a, 0  # the next row to announce, the end of the bytes announced
        row = a
        while row < b:
            ext = src.extent(src.keys[row])
            if ext is None:
                _sample_segments(src, row)  # raises: the sample is not in the tar
            lo, hi = ext
            end = row + 1
            while end < b:
                e = src.extent(src.keys[end])
                if e is None or e[0] != hi or e[1] - lo > chunk:
                    break
                hi = e[1]
                end += 1
            if will is not None:
                while told < b and (told < end or told_to < hi + ahead):
                    e = src.extent(src.keys[told])
                    told += 1
                    if e is not None and e[1] > told_to:
                        os.posix_fadvise(src.fd, max(e[0], told_to), e[1] - max(e[0], told_to),
                                         will)
                        told_to = e[1]
            if hi - lo > chunk:  # one large sample: its ranges read a chunk at a time
                for seg in _sample_segments(src, row):
                    if isinstance(seg, tuple):
                        for data in _read(src, seg, chunk):
                            yield [data]
                    else:
                        yield [seg]
            else:
                view = memoryview(_read_whole(src, lo, hi))
                pieces: list = []
                run = None  # (start, end) of adjacent ranges, one piece
                for r in range(row, end):
                    for seg in _sample_segments(src, r):
                        if isinstance(seg, tuple):
                            if run is not None and run[1] == seg[0]:
                                run = (run[0], seg[1])
                                continue
                            if run is not None:
                                pieces.append(view[run[0] - lo:run[1] - lo])
                            run = seg
                        else:
                            if run is not None:
                                pieces.append(view[run[0] - lo:run[1] - lo])
                                run = None
                            pieces.append(seg)
                if run is not None:
                    pieces.append(view[run[0] - lo:run[1] - lo])
                yield pieces
            row = end


def _read(src: _Source, run: tuple, chunk: int):
    """The bytes [start, end) of the source's tar, ``chunk`` at a time."""
    a, b = run
    while a < b:
        data = _read_whole(src, a, min(b, a + chunk))
        a += len(data)
        yield data


def _read_whole(src: _Source, a: int, b: int) -> bytes:
    data = os.pread(src.fd, b - a, a)
    if len(data) < b - a:  # a short read: at the end of the file only
        rest = [data]
        got = a + len(data)
        while got < b:
            more = os.pread(src.fd, b - got, got)
            if not more:
                raise InputError(f"{src.label}: the tar ends at byte {got}, inside a kept "
                                 "sample; it changed during the run: run again")
            rest.append(more)
            got += len(more)
        data = b"".join(rest)
    return data


def _write_all(fd: int, pieces: list) -> None:
    """Write every piece (bytes or views) with ``writev``, whatever it takes."""
    i = 0
    while i < len(pieces):
        group = pieces[i:i + 1024]  # IOV_MAX on Linux
        k = os.writev(fd, group)
        for p in group:  # drop what was written; the rest of a piece cut short stays
            if k >= len(p):
                k -= len(p)
                i += 1
            else:
                pieces[i] = memoryview(p)[k:]
                break


def _write_tar(path: str, sources: list) -> int:
    """Write one output tar from [(source, first row, end)]; return its samples.

    The input bytes are read (:func:`_contents`) on a thread of their own
    (``pread``, which releases the GIL) while this one writes them. Every
    ``WRITEBACK`` bytes written, their writeback to disk is started
    (``POSIX_FADV_DONTNEED`` starts it on Linux and drops the pages once they
    are clean), so that the final flush of :func:`commit` waits for the last
    bytes only, and the output does not fill the page cache."""
    dontneed = getattr(os, "POSIX_FADV_DONTNEED", None)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb", buffering=0) as out:
            fd = out.fileno()
            written = started = 0
            for data in prefetch(_contents(sources, COPY_CHUNK, READ_AHEAD), depth=4):
                _write_all(fd, data)
                written += sum(len(p) for p in data)
                if dontneed is not None and written - started >= WRITEBACK:
                    os.posix_fadvise(fd, started, written - started, dontneed)
                    started = written
            end = written + 2 * BLOCK
            _write_all(fd, [b"\0" * (2 * BLOCK + (-end) % RECORD)])
        commit(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return sum(b - a for _, a, b in sources)


def write_tar_call(w, layout: OutputLayout, pieces: list, j: int) -> int:
    """Output tar ``j``, made of ``pieces`` [(input shard, first kept row,
    end)], as an executor's call (any worker, any node; ``w`` its worker, or
    None in this process; its arguments are its own pieces, not the whole
    plan): written whole, or left as it is when a run before wrote it.
    Returns its samples. The inputs it copies from are opened for it alone
    (a compressed one decompressed into a scratch file of its own)."""
    if w is not None:
        layout = w.local(layout)
    path = os.path.join(layout.curated_wds_dir, tar_name(j))
    if published(path):  # a run before wrote it (here, or into the bucket of --out)
        return sum(b - a for _, a, b in pieces)
    os.makedirs(layout.curated_wds_dir, exist_ok=True)
    scratch = tmp_path(layout.join("work", "wds", f"tar-{j:05d}"))  # a lost worker's: swept
    srcs = []
    try:
        for shard, a, b in pieces:
            srcs.append((_Source(layout, shard, scratch, (a, b)), a, b))
        _check_keys(srcs)
        return _write_tar(path, srcs)
    finally:
        for src, _, _ in srcs:
            src.close()
        if os.path.isdir(scratch):
            shutil.rmtree(scratch, ignore_errors=True)


def _check_keys(sources: list) -> None:
    """No two samples side by side in an output tar share a key: WebDataset
    would read them as one sample (a key in two input shards, a download
    folder's parquet naming a sample twice)."""
    prev = None  # (label, key) of the sample before
    for src, a, b in sources:
        keys = src.keys[a:b]
        if not keys:
            continue
        if prev is not None and keys[0] == prev[1]:
            raise InputError(f"{src.label}: its sample {keys[0]!r} follows the sample of the "
                             f"same key from {prev[0]} in the curated WebDataset; WebDataset "
                             "would read the two as one: give every sample a key of its own")
        for r in range(len(keys) - 1):
            if keys[r] == keys[r + 1]:
                raise InputError(f"{src.shard.path}: kept rows {a + r} and {a + r + 1} name the "
                                 f"same sample {keys[r]!r} of {src.label}; WebDataset would "
                                 "read the two as one: give every row a key of its own")
        prev = (src.label, keys[-1])


def write_webdataset(layout: OutputLayout, shards: list, kept: list, per_shard: int,
                     executor=None, setup=None) -> dict:
    """Write curated-wds/ (resumable); return {tar name: samples}. Each
    output tar is one call of ``executor`` (local threads, Ray's workers) when
    given, else they are written here one after another."""
    out_dir = layout.curated_wds_dir
    plan_path = layout.wds_plan
    plan = make_plan(kept, per_shard)
    old = None
    if os.path.exists(plan_path):
        with open(plan_path) as f:
            old = json.load(f)
    if old != plan:  # tars of another plan are not ours to keep (nor their objects)
        unpublish(out_dir)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.makedirs(os.path.dirname(plan_path), exist_ok=True)
        atomic_write_json(plan_path, plan)
    os.makedirs(out_dir, exist_ok=True)
    sizes = _sizes(plan)
    done = published_names(out_dir)  # one listing of the bucket, not one per tar
    todo = [j for j in range(plan["tars"]) if tar_name(j) not in done]
    pieces = _pieces(plan)
    calls = [(layout, [(shards[pos], a, b) for pos, a, b in pieces[j]], j) for j in todo]
    if executor is not None and len(calls) > 1:
        executor.map(write_tar_call, calls, setup,
                     names=[f"{os.path.join(out_dir, tar_name(j))} (WebDataset output)"
                            for _, _, j in calls])
    else:
        for c in calls:
            write_tar_call(None, *c)
    atomic_write_json(layout.wds_sizes, sizes)
    return sizes
