"""WebDataset tar shards read by header offsets (plain, gzip, bzip2, xz, zstd).

The headers are walked by a compiled scanner (ustar, GNU long names ``L``/``K``,
pax ``x`` and global ``g`` headers); only the caption members (``.txt``, and the
``.json`` whose fields become columns) are copied, every other member (the
images) is skipped by its offset: a plain tar is memory-mapped and the skipped
pages are never touched; a compressed stream is decompressed in chunks and
the skipped bytes dropped. Compression is told by the magic bytes, not the name.

Samples follow WebDataset's key rule (``base_plus_ext``): a member
``dir/stem.ext...`` belongs to sample ``dir/stem`` (the name up to the first
dot of its base name, verbatim), its extension is the rest, lowercased; a base
name that starts with a dot (``dir/._x.jpg``) keys the directory part
(``dir/``) when the last directory holds no dot, and otherwise, as at the top
level, belongs to no sample. A sample's members must be contiguous.

The archive must end with the two zero blocks of the end-of-archive marker
(padding after them must be zeros): a shard cut at a member boundary is an
error, not half a pool.

Entry points: :func:`read_tar` (pyarrow tables, the contract of
``gpucurate.io._tar``), :func:`count_samples` and :func:`scan_members`.
"""

from __future__ import annotations

import json
import mmap
import operator
import os
import re
from typing import BinaryIO, Iterator

import numba
import numpy as np
import pyarrow as pa

from ..errors import InputError
from .common import INT64, json_value_problem
from .fs import download_input, is_url

# A JSON number token of 19 digits or more (after ':', ',' or '['): orjson
# would read it as a float where json keeps the integer.
_LONG_DIGITS = re.compile(rb"[:,\[]\s*-?[0-9]{19}")
# An integer token of 16 digits or more: past 2**53 it has no exact double, and
# Arrow's JSON reader makes a field of integers and fractions doubles (json's
# rules keep each integer): such a batch is parsed sample by sample.
_WIDE_INT = re.compile(rb"[:,\[]\s*-?[0-9]{16}")
_KIND = {int: "number", float: "number", bool: "bool", str: "string", dict: "object",
         list: "array"}

try:  # optional: a faster parser, its result checked against json's rules below
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None

BLOCK = 512

# ---------------------------------------------------------------- scanner state
(POS, NS, BATCH0, TXTLEN, JSONLEN, OPEN, OKLEN, OTXT, OJSON, OFIRST, OTXTOFF, OJSONOFF,
 HCOUNT, EOA, NEED, ERR_OFF, ERR_ARG, LASTMEM, NSTATE) = range(19)

# walker flags
F_TXT, F_JSON, F_REQUIRE_TXT = 1, 2, 4

# statuses
DONE, NEED_DATA, FULL_ROWS, FULL_KEYS, FULL_HASH, FULL_TXT, FULL_JSON = range(7)
E_NO_EOA, E_TRUNC_HEADER, E_TRUNC_DATA, E_LONE_ZERO, E_BADSUM, E_BADNUM, E_MISSING_TXT, \
    E_DUPKEY, E_SPARSE, E_PAX, E_NAMELONG, E_EXT_EOA, E_GLOBAL, E_TWICE = range(-1, -15, -1)

NAME_CAP = 1 << 16
ROW_COLS = 6  # txt end, json start, json len, first member offset, .txt offset, .json offset


@numba.njit(cache=True, nogil=True, inline="always")
def _isws(c):
    return c == 32 or (9 <= c <= 13) or (28 <= c <= 31)


@numba.njit(cache=True, nogil=True)
def _bad_num(b, s, n):
    """Whether a number field does not read as tarfile's nti() reads it."""
    return b[s] != 0xFF and _num(b, s, n) < 0


@numba.njit(cache=True, nogil=True)
def _num(b, s, n):
    """tarfile's nti(): base-256 or octal (NUL-terminated, blank-stripped); -1 if invalid."""
    c0 = np.int64(b[s])
    if c0 == 0x80 or c0 == 0xFF:
        if c0 == 0xFF:
            return -1
        v = np.int64(0)
        for i in range(1, n):
            if v >> 54:
                return -1
            v = (v << 8) | np.int64(b[s + i])
        return v
    e = s
    while e < s + n and b[e] != 0:
        e += 1
    i = s
    while i < e and _isws(np.int64(b[i])):
        i += 1
    while e > i and _isws(np.int64(b[e - 1])):
        e -= 1
    if i == e:
        return 0
    if b[i] == 43:  # '+'
        i += 1
        if i == e:
            return -1
    v = np.int64(0)
    for k in range(i, e):
        d = np.int64(b[k]) - 48
        if d < 0 or d > 7 or v >> 58:
            return -1
        v = v * 8 + d
    return v


@numba.njit(cache=True, nogil=True)
def _dec(b, s, e):
    """A pax decimal value; -1 if not a plain non-negative decimal."""
    while s < e and _isws(np.int64(b[s])):
        s += 1
    while e > s and _isws(np.int64(b[e - 1])):
        e -= 1
    if s < e and b[s] == 43:
        s += 1
    if s == e:
        return -1
    v = np.int64(0)
    for k in range(s, e):
        d = np.int64(b[k]) - 48
        if d < 0 or d > 9 or v > (1 << 58):
            return -1
        v = v * 10 + d
    return v


_LO = np.uint64(0x00FF00FF00FF00FF)
_ONES = np.uint64(0x0101010101010101)


@numba.njit(cache=True, nogil=True)
def _header_sums(b, p):
    """(sum of bytes, unsigned checksum, signed checksum) of the block at p.
    The block is read as 64 words of 8 bytes: bytes summed in 16-bit lanes
    (at most 64 * 2 * 255 each), high bits counted in byte lanes (at most 64)
    -- 17x the speed of a byte loop, which numba leaves unvectorised."""
    w = b[p:p + BLOCK].view(np.uint64)
    acc = np.uint64(0)
    hi = np.uint64(0)
    for i in range(BLOCK // 8):
        x = w[i]
        acc += (x & _LO) + ((x >> np.uint64(8)) & _LO)
        hi += (x >> np.uint64(7)) & _ONES
    raw = np.int64(0)
    high = np.int64(0)
    for k in range(4):
        raw += np.int64((acc >> np.uint64(16 * k)) & np.uint64(0xFFFF))
    for k in range(8):
        high += np.int64((hi >> np.uint64(8 * k)) & np.uint64(0xFF))
    fr = np.int64(0)  # the checksum field, counted as spaces
    fh = np.int64(0)
    for i in range(148, 156):
        x = np.int64(b[p + i])
        fr += x
        fh += x >> 7
    sgn = raw - 256 * high  # bytes read as signed
    return raw, raw - fr + 256, sgn - (fr - 256 * fh) + 256


@numba.njit(cache=True, nogil=True)
def _blk(n):
    return (n + 511) & ~np.int64(511)


@numba.njit(cache=True, nogil=True)
def _fnv(a, s, n):
    h = np.uint64(14695981039346656037)
    for i in range(n):
        h = (h ^ np.uint64(a[s + i])) * np.uint64(1099511628211)
    return h


@numba.njit(cache=True, nogil=True)
def _key_eq(keybuf, ks, kn, kscr, n):
    if kn != n:
        return False
    for i in range(n):
        if keybuf[ks + i] != kscr[i]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _rehash(keybuf, keyoff, n, htab):
    m = htab.shape[0]
    for g in range(n):
        s = keyoff[g]
        h = _fnv(keybuf, s, keyoff[g + 1] - s)
        j = np.int64(h & np.uint64(m - 1))
        while htab[j] != 0:
            j = (j + 1) & (m - 1)
        htab[j] = g + 1


@numba.njit(cache=True, nogil=True)
def _complete(st, flags, keyoff, rows):
    """Close the open sample (row of the batch); a status, or 1 if done."""
    if st[OPEN] == 0:
        return 1
    if (flags & F_REQUIRE_TXT) and st[OTXT] < 0:
        st[ERR_ARG] = st[NS]
        st[ERR_OFF] = st[OFIRST]
        return E_MISSING_TXT
    j = st[NS] - st[BATCH0]
    if j >= rows.shape[0]:
        return FULL_ROWS
    if st[OTXT] > 0:
        st[TXTLEN] += st[OTXT]
    rows[j, 0] = st[TXTLEN]
    if st[OJSON] >= 0:
        rows[j, 1] = st[JSONLEN]
        rows[j, 2] = st[OJSON]
        st[JSONLEN] += st[OJSON]
    else:
        rows[j, 1] = -1
        rows[j, 2] = -1
    rows[j, 3] = st[OFIRST]
    rows[j, 4] = st[OTXTOFF]
    rows[j, 5] = st[OJSONOFF]
    keyoff[st[NS] + 1] = keyoff[st[NS]] + st[OKLEN]
    st[NS] += 1
    st[OPEN] = 0
    return 1


@numba.njit(cache=True, nogil=True)
def _walk(b, base, at_eof, flags, st, keybuf, keyoff, htab, txtbuf, jsonbuf, rows, name, kscr):
    """Walk headers from st[POS] over b (stream bytes [base, base+len(b))).

    Returns a status: DONE (end-of-archive at st[EOA]), NEED_DATA (bytes up to
    st[NEED] are needed; st[POS] may lie past the buffer: skip to it), a FULL_*
    (a buffer to empty or grow; st[NEED] the bytes wanted), or an error code
    (st[ERR_OFF]: byte offset, st[ERR_ARG]: a sample index where one applies).
    The state is only advanced past whole members, so a call may be repeated.
    """
    end = base + b.shape[0]
    ncap = name.shape[0]
    while True:
        pos = st[POS]
        c = pos
        have_name = False
        nlen = 0
        have_size = False
        psize = np.int64(0)
        t = 0
        size = np.int64(0)
        while True:  # extended headers, then the member they describe
            if c + BLOCK > end:
                if not at_eof:
                    st[NEED] = c + BLOCK
                    return NEED_DATA
                st[ERR_OFF] = c
                if c != pos:
                    return E_TRUNC_HEADER
                if c == end:
                    return E_NO_EOA
                if c > end:
                    st[ERR_OFF] = st[LASTMEM]
                    return E_TRUNC_DATA
                return E_TRUNC_HEADER
            p = c - base
            raw, uns, sgn = _header_sums(b, p)
            if raw == 0:
                if c != pos:
                    st[ERR_OFF] = pos
                    return E_EXT_EOA
                if c + 2 * BLOCK > end:
                    if not at_eof:
                        st[NEED] = c + 2 * BLOCK
                        return NEED_DATA
                    st[ERR_OFF] = c
                    return E_LONE_ZERO
                for i in range(BLOCK):
                    if b[p + BLOCK + i] != 0:
                        st[ERR_OFF] = c
                        return E_LONE_ZERO
                r = _complete(st, flags, keyoff, rows)
                if r != 1:
                    return r
                st[EOA] = c
                return DONE
            ck = _num(b, p + 148, 8)
            if ck != uns and ck != sgn:
                st[ERR_OFF] = c
                return E_BADSUM
            size = _num(b, p + 124, 12)
            if size < 0:
                st[ERR_OFF] = c
                return E_BADNUM
            # mode, uid, gid, mtime, devmajor, devminor must read as numbers too
            # (as tarfile reads them; a 0xFF lead byte is a negative base-256
            # number, which it reads): a damaged one whose checksum holds is refused
            if (_bad_num(b, p + 100, 8) or _bad_num(b, p + 108, 8) or _bad_num(b, p + 116, 8)
                    or _bad_num(b, p + 136, 12) or _bad_num(b, p + 329, 8)
                    or _bad_num(b, p + 337, 8)):
                st[ERR_OFF] = c
                return E_BADNUM
            t = np.int64(b[p + 156])
            if t == 76 or t == 75 or t == 120 or t == 88 or t == 103:  # L K x X g
                dend = c + BLOCK + size
                if dend > end:
                    if not at_eof:
                        st[NEED] = dend
                        return NEED_DATA
                    st[ERR_OFF] = c
                    return E_TRUNC_DATA
                d0 = p + BLOCK
                if t == 76 and not have_name:  # GNU long name: data up to the first NUL
                    e = d0
                    dlim = d0 + _blk(size)
                    if dlim > b.shape[0]:
                        dlim = b.shape[0]
                    while e < dlim and b[e] != 0:
                        e += 1
                    if e - d0 > ncap:
                        st[ERR_OFF] = c
                        return E_NAMELONG
                    for i in range(e - d0):
                        name[i] = b[d0 + i]
                    nlen = e - d0
                    have_name = True
                elif t != 76 and t != 75:  # pax records "%d %s=%s\n"
                    q = d0
                    dlim = d0 + _blk(size)
                    if dlim > b.shape[0]:
                        dlim = b.shape[0]
                    path_s = -1
                    path_e = -1
                    size_v = np.int64(-2)
                    while True:
                        k = q
                        while k < dlim and 48 <= b[k] <= 57:
                            k += 1
                        if k == q or k >= dlim or b[k] != 32:
                            break
                        ln = _dec(b, q, k)
                        kw = k + 1
                        ke = kw
                        while ke < dlim and b[ke] != 61:
                            ke += 1
                        if ke == kw or ke >= dlim:
                            break
                        if ln <= 0:
                            st[ERR_OFF] = c
                            return E_PAX
                        ve = q + ln - 1
                        if ve > dlim:
                            ve = dlim
                        vs = ke + 1
                        if ve < vs:
                            ve = vs
                        kl = ke - kw
                        if kl == 4 and b[kw] == 112 and b[kw + 1] == 97 and b[kw + 2] == 116 \
                                and b[kw + 3] == 104:  # path
                            path_s = vs
                            path_e = ve
                        elif kl == 4 and b[kw] == 115 and b[kw + 1] == 105 and b[kw + 2] == 122 \
                                and b[kw + 3] == 101:  # size
                            size_v = _dec(b, vs, ve)
                            if size_v < 0:
                                st[ERR_OFF] = c
                                return E_PAX
                        elif kl >= 11 and b[kw] == 71 and b[kw + 1] == 78 and b[kw + 2] == 85 \
                                and b[kw + 3] == 46 and b[kw + 4] == 115 and b[kw + 5] == 112:
                            st[ERR_OFF] = c  # GNU.sp(arse...)
                            return E_SPARSE
                        q = q + ln
                    if t == 103:
                        if path_s >= 0 or size_v != -2:
                            st[ERR_OFF] = c
                            return E_GLOBAL
                    else:
                        if path_s >= 0 and not have_name:
                            while path_e > path_s and b[path_e - 1] == 47:
                                path_e -= 1
                            if path_e - path_s > ncap:
                                st[ERR_OFF] = c
                                return E_NAMELONG
                            for i in range(path_e - path_s):
                                name[i] = b[path_s + i]
                            nlen = path_e - path_s
                            have_name = True
                        if size_v >= 0 and not have_size:
                            psize = size_v
                            have_size = True
                c += BLOCK + _blk(size)
                continue
            break
        # the member's header is at c, its first extended header at pos
        p = c - base
        if t == 83:  # GNU sparse
            st[ERR_OFF] = pos
            return E_SPARSE
        if have_size:
            size = psize
        hn = 0
        while hn < 100 and b[p + hn] != 0:
            hn += 1
        areg_dir = t == 0 and hn > 0 and b[p + hn - 1] == 47
        regular = (t == 48 or t == 0 or t == 55) and not areg_dir
        supported = (49 <= t <= 54) or t == 48 or t == 0 or t == 55
        nxt = c + BLOCK
        if regular or not supported:
            nxt += _blk(size)
        st[LASTMEM] = pos
        if regular:
            if not have_name:
                pn = 0
                while pn < 155 and b[p + 345 + pn] != 0:
                    pn += 1
                nlen = 0
                if pn > 0:
                    for i in range(pn):
                        name[i] = b[p + 345 + i]
                    name[pn] = 47
                    nlen = pn + 1
                for i in range(hn):
                    name[nlen + i] = b[p + i]
                nlen += hn
            ls = -1
            for i in range(nlen):
                if name[i] == 47:
                    ls = i
            dot = -1
            for i in range(ls + 1, nlen):
                if name[i] == 46:
                    dot = i
                    break
            # WebDataset's key (base_plus_ext: ^((?:.*/|)[^.]+)[.]([^/]*)$): the name
            # up to the first dot of its base name, verbatim; a base name that starts
            # with a dot keys the directory part, slash included, when the last
            # directory holds no dot; else the member is in no sample
            kend = -1
            if dot > ls + 1:
                kend = dot
            elif dot == ls + 1 and ls >= 0:
                kend = ls + 1
                i = ls - 1
                while i >= 0 and name[i] != 47:
                    if name[i] == 46:
                        kend = -1
                        break
                    i -= 1
            if kend >= 0:
                el = nlen - kend - 1
                ext = 0
                if el == 3 and (name[kend + 1] | 32) == 116 and (name[kend + 2] | 32) == 120 \
                        and (name[kend + 3] | 32) == 116:
                    ext = 1
                elif el == 4 and (name[kend + 1] | 32) == 106 and (name[kend + 2] | 32) == 115 \
                        and (name[kend + 3] | 32) == 111 and (name[kend + 4] | 32) == 110:
                    ext = 2
                kn = 0
                for i in range(kend):
                    kscr[kn] = name[i]
                    kn += 1
                same = st[OPEN] == 1 and _key_eq(keybuf, keyoff[st[NS]], st[OKLEN], kscr, kn)
                if not same:
                    r = _complete(st, flags, keyoff, rows)
                    if r != 1:
                        return r
                    g = st[NS]
                    if g + 2 > keyoff.shape[0] or keyoff[g] + kn > keybuf.shape[0]:
                        st[NEED] = keyoff[g] + kn
                        return FULL_KEYS
                    m = htab.shape[0]
                    if (st[HCOUNT] + 1) * 2 > m:
                        return FULL_HASH
                    h = _fnv(kscr, 0, kn)
                    j = np.int64(h & np.uint64(m - 1))
                    while htab[j] != 0:
                        o = htab[j] - 1
                        if _key_eq(keybuf, keyoff[o], keyoff[o + 1] - keyoff[o], kscr, kn):
                            ks = keyoff[g]
                            for i in range(kn):
                                keybuf[ks + i] = kscr[i]
                            st[OKLEN] = kn
                            st[ERR_ARG] = o
                            st[ERR_OFF] = pos
                            return E_DUPKEY
                        j = (j + 1) & (m - 1)
                    htab[j] = g + 1
                    st[HCOUNT] += 1
                    ks = keyoff[g]
                    for i in range(kn):
                        keybuf[ks + i] = kscr[i]
                    st[OKLEN] = kn
                    st[OPEN] = 1
                    st[OTXT] = -1
                    st[OJSON] = -1
                    st[OFIRST] = pos
                    st[OTXTOFF] = -1
                    st[OJSONOFF] = -1
                if (ext == 1 and (flags & F_TXT)) or (ext == 2 and (flags & F_JSON)):
                    if (ext == 1 and st[OTXT] >= 0) or (ext == 2 and st[OJSON] >= 0):
                        st[ERR_OFF] = pos  # a second caption or metadata member: which one?
                        st[ERR_ARG] = ext
                        return E_TWICE
                    dend = c + BLOCK + size
                    if dend > end:
                        if not at_eof:
                            st[NEED] = dend
                            return NEED_DATA
                        st[ERR_OFF] = pos
                        return E_TRUNC_DATA
                    if ext == 1:
                        s0 = st[TXTLEN]
                        if s0 + size > txtbuf.shape[0]:
                            st[NEED] = s0 + size
                            return FULL_TXT
                        txtbuf[s0:s0 + size] = b[p + BLOCK:p + BLOCK + size]
                        st[OTXT] = size
                        st[OTXTOFF] = pos
                    else:
                        s0 = st[JSONLEN]
                        if s0 + size > jsonbuf.shape[0]:
                            st[NEED] = s0 + size
                            return FULL_JSON
                        jsonbuf[s0:s0 + size] = b[p + BLOCK:p + BLOCK + size]
                        st[OJSON] = size
                        st[OJSONOFF] = pos
        if at_eof and nxt > end:
            st[ERR_OFF] = pos
            return E_TRUNC_DATA
        st[POS] = nxt


# ---------------------------------------------------------------- sources
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
          (b"\x28\xb5\x2f\xfd", "zstd"))


def _valid_header(block: bytes) -> bool:
    if len(block) < BLOCK:
        return False
    if not any(block):
        return True
    a = np.frombuffer(block[:BLOCK], np.uint8)
    raw, uns, sgn = _header_sums(a, 0)
    ck = _num(a, 148, 8)
    return ck == uns or ck == sgn


def compression(path: str) -> str | None:
    """'gzip', 'bzip2', 'xz' or 'zstd' by the file's magic bytes; None for a plain tar."""
    with open(path, "rb") as f:
        return head_compression(f.read(BLOCK))


def head_compression(head: bytes) -> str | None:
    """:func:`compression` of a file's first block."""
    if _valid_header(head):
        return None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


def _gzip_chunks(path: str, size: int) -> Iterator[bytes]:
    """Decompressed chunks (at most ``size`` bytes) of a gzip file, all members;
    zlib checks each member's CRC and length; a cut stream raises EOFError."""
    import zlib

    with open(path, "rb") as f:
        d = zlib.decompressobj(31)
        started = False
        data = b""
        while True:
            if not data:
                data = f.read(1 << 20)
                if not data:
                    if started and not d.eof:
                        raise EOFError("compressed file ended before the end-of-stream marker")
                    return
            if d.eof:  # another gzip member, or zero padding after the last
                rest = data.lstrip(b"\0")
                if not rest:
                    data = b""
                    continue
                d, data, started = zlib.decompressobj(31), rest, False
            started = True
            out = d.decompress(data, size)
            data = d.unconsumed_tail or (d.unused_data if d.eof else b"")
            if out:
                yield out


def _file_chunks(f, size: int) -> Iterator[bytes]:
    with f:
        while True:
            got = f.read(size)
            if not got:
                return
            yield got


def _chunks(path: str, kind: str, size: int) -> Iterator[bytes]:
    if kind == "gzip":
        return _gzip_chunks(path, size)
    if kind == "bzip2":
        import bz2

        return _file_chunks(bz2.open(path, "rb"), size)
    if kind == "xz":
        import lzma

        return _file_chunks(lzma.open(path, "rb"), size)
    from .jsonl import _ZstdStream as _ZstdLines

    return _file_chunks(_ZstdLines(path), size)


_MADVISE = getattr(mmap, "MADV_RANDOM", None)


class _Source:
    """Stream bytes for the walker: the whole mapped file, or a sliding window
    over a decompressed stream."""

    CHUNK = 4 << 20

    def __init__(self, path: str):
        self.path = path
        self._copy = None
        if is_url(path):  # an object: read from a local copy (one shard), removed on close
            path = self._copy = download_input(path)
        self.kind = compression(path)
        self._mm = None
        self._gen = None
        self.broken = None  # the stream's error, met past the bytes buffered
        if self.kind is None:
            size = os.path.getsize(path)
            self.at_eof = True
            self.base = 0
            if size == 0:
                self.buf = np.zeros(0, np.uint8)
            else:
                with open(path, "rb") as f:
                    self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                if _MADVISE is not None:
                    try:
                        self._mm.madvise(_MADVISE)
                    except (AttributeError, OSError):
                        pass
                self.buf = np.frombuffer(self._mm, np.uint8)
        else:
            self._gen = _chunks(path, self.kind, self.CHUNK)
            self._pending = b""
            self.at_eof = False
            self.base = 0
            self._store = np.empty(self.CHUNK * 3, np.uint8)
            self._fill = 0
            self.buf = self._store[:0]

    def _pull(self) -> bytes:
        if self._pending:
            out, self._pending = self._pending, b""
            return out
        try:
            return next(self._gen, b"")
        except EOFError as exc:
            raise _Truncated(str(exc)) from None
        except Exception as exc:  # zlib.error, OSError, lzma/zstandard errors
            raise _Corrupt(str(exc)) from None

    def refill(self, keep_from: int, need_to: int) -> None:
        """Drop the bytes before keep_from (skipping past the window if need be)
        and read until the window reaches need_to (or the end of the stream)."""
        end = self.base + self._fill
        if keep_from >= end:
            gap = keep_from - end
            while gap > 0:
                got = self._pull()
                if not got:
                    raise _Truncated("stream ends inside a member")
                if len(got) > gap:
                    self._pending = got[gap:]
                    gap = 0
                else:
                    gap -= len(got)
            self.base, self._fill = keep_from, 0
        else:
            off = keep_from - self.base
            if off:
                self._store[:self._fill - off] = self._store[off:self._fill]
                self._fill -= off
                self.base = keep_from
        want = max(need_to - self.base, self._fill + self.CHUNK)
        while self._fill < want and not self.at_eof:
            try:
                got = self._pull()
            except (_Truncated, _Corrupt) as exc:
                # the bytes decompressed so far are walked first: the error is said
                # where the walker runs out of them (see _Scan.error)
                self.broken, self.at_eof = exc, True
                break
            if not got:
                self.at_eof = True
                break
            n = len(got)
            if self._fill + n > self._store.shape[0]:
                grown = np.empty(max(self._fill + n, 2 * self._store.shape[0]), np.uint8)
                grown[:self._fill] = self._store[:self._fill]
                self._store = grown
            self._store[self._fill:self._fill + n] = np.frombuffer(got, np.uint8)
            self._fill += n
        self.buf = self._store[:self._fill]

    def trailing_nonzero(self, start: int) -> int:
        """Offset of the first non-zero byte at or after start, or -1."""
        if self.kind is None:
            rest = self.buf[start:]
            nz = np.flatnonzero(rest)
            return int(start + nz[0]) if nz.size else -1
        pos = start
        while True:
            lo = max(0, pos - self.base)
            rest = self.buf[lo:]
            nz = np.flatnonzero(rest)
            if nz.size:
                return int(self.base + lo + nz[0])
            pos = self.base + self._fill
            if self.at_eof:
                if self.broken is not None:
                    raise self.broken
                return -1
            self.refill(pos, pos + self.CHUNK)

    def close(self):
        self.buf = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a view is still alive; the mapping goes with it
                pass
        if self._gen is not None:
            self._gen.close()
        if self._copy is not None:
            os.remove(self._copy)
            self._copy = None


class _Truncated(Exception):
    pass


class _Corrupt(Exception):
    pass


# ---------------------------------------------------------------- the reader
class _Scan:
    """Run the walker over a shard, emitting batches of complete samples."""

    def __init__(self, path: str, label: str, flags: int, txt_cap: int, json_cap: int,
                 rows_cap: int = 1 << 17):
        self.path, self.label, self.flags = path, label, flags
        self.st = np.zeros(NSTATE, np.int64)
        self.keybuf = np.empty(1 << 16, np.uint8)
        self.keyoff = np.zeros(1 << 12, np.int64)
        self.htab = np.zeros(1 << 13, np.int64)
        self.txtbuf = np.empty(max(1, txt_cap), np.uint8)
        self.jsonbuf = np.empty(max(1, json_cap), np.uint8)
        self.rows = np.empty((rows_cap, ROW_COLS), np.int64)
        self.name = np.empty(NAME_CAP + 256, np.uint8)
        self.kscr = np.empty(NAME_CAP + 258, np.uint8)
        self.src = None  # the byte source while batches() runs (its stream error)

    # -- messages
    def where(self) -> str:
        if self.label and self.label != os.path.basename(self.path):
            return f"{self.path} (shard {self.label})"
        return self.path

    def key(self, g: int) -> str:
        s = int(self.keyoff[g])
        n = int(self.keyoff[g + 1]) - s if g < self.st[NS] else int(self.st[OKLEN])
        return bytes(self.keybuf[s:s + n]).decode("utf-8", "backslashreplace")

    def last_key(self) -> str | None:
        st = self.st
        if st[OPEN]:
            return self.key(int(st[NS]))
        if st[NS]:
            return self.key(int(st[NS]) - 1)
        return None

    def _after(self) -> str:
        k = self.last_key()
        if k is None:
            return "before the first sample"
        return f"in or after sample {k!r}"

    def error(self, code: int) -> InputError:
        st, w = self.st, self.where()
        off = int(st[ERR_OFF])
        recreate = "re-create the shard (e.g. re-run the writer) or drop it from the input"
        src = self.src
        if src is not None and src.broken is not None and code in (
                E_NO_EOA, E_TRUNC_HEADER, E_TRUNC_DATA, E_LONE_ZERO):
            # the walker ran out of the bytes decompressed before the stream broke
            end = src.base + src._fill
            if isinstance(src.broken, _Truncated):
                return InputError(
                    f"{w}: the {src.kind} stream ends early, at tar byte {end}, inside the tar "
                    f"member at byte {off} ({self._after()}); the shard is truncated; "
                    f"{recreate}")
            return InputError(
                f"{w}: cannot decompress the {src.kind} stream past tar byte {end} "
                f"({self._after()}): {src.broken}; the shard is corrupt; re-create it")
        if code == E_NO_EOA:
            msg = (f"{w}: the tar ends at byte {off}, {self._after()}, without the two zero "
                   "blocks that end a tar archive: the shard is truncated (an interrupted copy "
                   f"or write) and would be read as part of its samples; {recreate}")
        elif code == E_TRUNC_HEADER:
            msg = (f"{w}: the tar is cut inside the header at byte {off} ({self._after()}); "
                   f"the shard is truncated; {recreate}")
        elif code == E_TRUNC_DATA:
            msg = (f"{w}: the tar is cut inside the member at byte {off} ({self._after()}); "
                   f"the shard is truncated; {recreate}")
        elif code == E_LONE_ZERO:
            msg = (f"{w}: a single zero block at byte {off} ({self._after()}) where a tar ends "
                   f"with two: the shard is truncated or damaged; {recreate}")
        elif code == E_BADSUM:
            msg = (f"{w}: bad tar header checksum at byte {off} ({self._after()}); the shard is "
                   f"corrupt or not a tar; {recreate}")
        elif code == E_BADNUM:
            msg = (f"{w}: invalid number field (size, mode, owner, time or device) in the tar "
                   f"header at byte {off} ({self._after()}); the shard is corrupt; {recreate}")
        elif code == E_MISSING_TXT:
            g = int(st[ERR_ARG])
            msg = (f"{w}: sample {self.key(g)!r} (row {g}, member at byte {off}) has no .txt "
                   "member; pass --text-column FIELD to read the caption from its .json")
        elif code == E_DUPKEY:
            g = int(st[ERR_OFF])
            o = int(st[ERR_ARG])
            k = self.key(int(st[NS]))
            msg = (f"{w}: sample {k!r} reappears at byte {g} after other samples (its first "
                   f"members are row {o}); a WebDataset sample's members must be contiguous: "
                   "re-create the shard writing each sample's files together (sorted by key)")
        elif code == E_TWICE:
            ext = "txt" if int(st[ERR_ARG]) == 1 else "json"
            msg = (f"{w}: sample {self.key(int(st[NS]))!r} has a second .{ext} member (any "
                   f"case of the extension) at byte {off}; which one holds its "
                   f"{'caption' if ext == 'txt' else 'fields'} is not clear (WebDataset refuses "
                   "the sample too): keep one per sample")
        elif code == E_SPARSE:
            msg = (f"{w}: the member at byte {off} ({self._after()}) is a sparse file, which "
                   "WebDataset readers do not support; re-create the shard without --sparse")
        elif code == E_PAX:
            msg = (f"{w}: invalid pax extended header at byte {off} ({self._after()}); the shard "
                   f"is corrupt; {recreate}")
        elif code == E_GLOBAL:
            msg = (f"{w}: the pax global header at byte {off} sets a path or size for every "
                   f"member; such a shard has no usable sample keys; {recreate}")
        elif code == E_NAMELONG:
            msg = (f"{w}: the member name at byte {off} is longer than {NAME_CAP} bytes; "
                   "rename the sample")
        elif code == E_EXT_EOA:
            msg = (f"{w}: the extended header at byte {off} ({self._after()}) is followed by "
                   f"the end of the archive instead of a member; {recreate}")
        else:  # pragma: no cover
            msg = f"{w}: cannot read the tar (code {code}) at byte {off}; {recreate}"
        return InputError(msg)

    # -- the loop
    def batches(self) -> Iterator[tuple]:
        """(rows, keys, key offsets, txt bytes, json bytes) per batch of complete samples."""
        src = self.src = _Source(self.path)
        st = self.st
        try:
            if src.kind is None and src.buf.shape[0] == 0:
                raise InputError(f"{self.where()}: the file is empty (0 bytes), not a tar; "
                                 "re-create the shard or drop it from the input")
            if src.kind is not None:
                self._refill(src, 0, BLOCK)
            while True:
                r = _walk(src.buf, src.base, src.at_eof, self.flags, st, self.keybuf,
                          self.keyoff, self.htab, self.txtbuf, self.jsonbuf, self.rows,
                          self.name, self.kscr)
                if r == DONE:
                    if st[NS] > st[BATCH0]:
                        yield self._drain()
                    nz = self._trailing(src, int(st[EOA]) + 2 * BLOCK)
                    if nz >= 0:
                        raise InputError(
                            f"{self.where()}: data at byte {nz} after the end-of-archive blocks "
                            f"at byte {int(st[EOA])} (after sample {self.last_key()!r}); it "
                            "would be ignored: is this several tars concatenated? Write one "
                            "tar per shard")
                    return
                if r == NEED_DATA:
                    self._refill(src, int(st[POS]), int(st[NEED]))
                elif r in (FULL_ROWS, FULL_TXT, FULL_JSON):
                    if st[NS] > st[BATCH0]:
                        yield self._drain()
                    elif r == FULL_TXT:
                        self.txtbuf = _grow(self.txtbuf, int(st[NEED]))
                    elif r == FULL_JSON:
                        self.jsonbuf = _grow(self.jsonbuf, int(st[NEED]))
                    else:  # pragma: no cover
                        raise AssertionError("row buffer too small for one sample")
                elif r == FULL_KEYS:
                    if st[NS] + 2 > self.keyoff.shape[0]:
                        k = np.zeros(2 * self.keyoff.shape[0], np.int64)
                        k[:self.keyoff.shape[0]] = self.keyoff
                        self.keyoff = k
                    self.keybuf = _grow(self.keybuf, int(st[NEED]), keep=int(self.keyoff[st[NS]]))
                elif r == FULL_HASH:
                    self.htab = np.zeros(2 * self.htab.shape[0], np.int64)
                    _rehash(self.keybuf, self.keyoff, int(st[NS]), self.htab)
                else:
                    raise self.error(r)
        finally:
            src.close()

    def _refill(self, src: _Source, keep_from: int, need_to: int) -> None:
        try:
            src.refill(keep_from, need_to)
        except _Truncated:
            off = int(self.st[LASTMEM]) if keep_from > src.base + src._fill else keep_from
            raise InputError(
                f"{self.where()}: the {src.kind} stream ends early, inside the tar member at "
                f"byte {off} ({self._after()}); the shard is truncated; re-create the shard "
                "(e.g. re-run the writer) or drop it from the input") from None
        except _Corrupt as exc:
            raise InputError(
                f"{self.where()}: cannot decompress the {src.kind} stream near tar byte "
                f"{keep_from} ({self._after()}): {exc}; the shard is corrupt; re-create it"
            ) from None

    def _trailing(self, src: _Source, start: int) -> int:
        try:
            return src.trailing_nonzero(start)
        except (_Truncated, _Corrupt) as exc:
            raise InputError(
                f"{self.where()}: the {src.kind} stream is damaged after the end of the tar "
                f"archive ({exc}); re-create the shard") from None

    def _drain(self):
        st = self.st
        n = int(st[NS] - st[BATCH0])
        g0 = int(st[BATCH0])
        rows = self.rows[:n].copy()
        ko = self.keyoff[g0:g0 + n + 1]
        keys = self.keybuf[ko[0]:ko[-1]].copy()
        koff = (ko - ko[0]).astype(np.int32) if ko[-1] - ko[0] < (1 << 31) else ko - ko[0]
        tl = int(st[TXTLEN])
        txt = self.txtbuf[:tl].copy()
        jl = int(st[JSONLEN])
        js = self.jsonbuf[:jl].tobytes() if jl else b""
        # the open sample's copied members move to the front
        if st[OPEN] and st[OTXT] > 0:
            self.txtbuf[:st[OTXT]] = self.txtbuf[tl:tl + st[OTXT]]
        if st[OPEN] and st[OJSON] > 0:
            self.jsonbuf[:st[OJSON]] = self.jsonbuf[jl:jl + st[OJSON]]
        st[TXTLEN] = 0
        st[JSONLEN] = 0
        st[BATCH0] = st[NS]
        return g0, rows, keys, koff, txt, js


def _grow(a: np.ndarray, need: int, keep: int | None = None) -> np.ndarray:
    out = np.empty(max(need, 2 * a.shape[0]), a.dtype)
    k = a.shape[0] if keep is None else keep
    out[:k] = a[:k]
    return out


def _string_array(offsets: np.ndarray, data: np.ndarray, n: int) -> pa.Array:
    if offsets.dtype == np.int32:
        typ = pa.string()
    else:
        typ = pa.large_string()
    return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


_NOTICED: list = []


def _compile_notice() -> None:
    if not _NOTICED:
        from ..compiled import compile_notice

        compile_notice("the WebDataset reader", _walk)
        _NOTICED.append(True)


def read_tar(path: str, shard_label: str, text_column: str | None,
             batch_bytes: int, spans: list | None = None) -> Iterator[pa.Table]:
    """A WebDataset shard (plain or compressed tar) as pyarrow tables.

    Rows in sample order; columns ``__key__``, the fields of the samples'
    ``.json`` members (except ``__key__`` and the caption column, in order of
    first appearance) and the caption column ``text_column or "text"``: the
    sample's ``.txt`` when ``text_column`` is None or ``"text"``, else the field
    ``text_column`` of its ``.json`` (a string or null). Each table holds at
    most ``batch_bytes`` of caption text (a single larger caption makes a table
    of its own). ``shard_label`` names the shard in messages.

    ``spans``, when given (a list, or anything with ``append``), gains per
    batch of samples (their keys, a pyarrow string array; the offset of each
    one's first header, int64) and, once the whole tar is read, the offset of
    its end-of-archive blocks: each sample's bytes lie from its first header
    to the next one's (the last one's to the end of the archive), what the
    WebDataset writer copies.
    """
    field = None if text_column in (None, "text") else text_column
    out_col = text_column or "text"
    cap = int(min(max(1, batch_bytes), 1 << 30))
    _compile_notice()
    if field is None:
        scan = _Scan(path, shard_label, F_TXT | F_JSON | F_REQUIRE_TXT, cap,
                     min(max(4 * cap, 1 << 22), 1 << 30))
    else:
        scan = _Scan(path, shard_label, F_JSON, 1, min(max(cap, 1 << 20), 1 << 30))
    where = scan.where()
    for g0, rows, keys, koff, txt, js in scan.batches():
        n = rows.shape[0]
        key_arr = _string_array(koff, keys, n)
        try:
            key_arr.validate(full=True)
        except pa.ArrowInvalid:
            for i in range(n):
                try:
                    bytes(keys[koff[i]:koff[i + 1]]).decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(
                        f"{where}: the member names of sample "
                        f"{bytes(keys[koff[i]:koff[i + 1]])!r} (member at byte {rows[i, 3]}) are "
                        "not UTF-8; rename the sample's files") from None
        if spans is not None:
            spans.append((key_arr, rows[:, 3].copy()))
        has_json = rows[:, 2] >= 0
        if field is None:
            toff = np.empty(n + 1, np.int64)
            toff[0] = 0
            toff[1:] = rows[:, 0]
            if toff[-1] < (1 << 31):
                toff = toff.astype(np.int32)
            cap_arr = _string_array(toff, txt, n)
            try:
                cap_arr.validate(full=True)
            except pa.ArrowInvalid:
                _raise_bad_txt(where, toff, txt, key_arr, rows)
            if cap_arr.type != pa.string():
                cap_arr = cap_arr.cast(pa.string())
            if not has_json.any():
                yield pa.Table.from_arrays([key_arr, cap_arr], names=["__key__", out_col])
                continue
            table = _table_arrow(js, rows, key_arr, out_col, cap_arr) if has_json.all() \
                else None
            if table is None:  # anything unusual: parsed sample by sample, json's rules
                metas = _metas(where, js, rows, has_json, key_arr)
                table = _table(where, key_arr, metas, out_col, cap_arr, None, g0)
            yield from _split_bytes(table, out_col, batch_bytes)
        else:
            metas = _metas(where, js, rows, has_json, key_arr)
            caps = []
            for i, m in enumerate(metas):
                v = None if m is None else m.get(field, _MISSING)
                if m is None or v is _MISSING or not (v is None or isinstance(v, str)):
                    raise InputError(
                        f"{where}: sample {key_arr[i].as_py()!r} (row {g0 + i}, member at byte "
                        f"{rows[i, 3]}) has no string field {field!r} in its .json; choose it "
                        "with --text-column")
                caps.append(v)
            table = _table(where, key_arr, metas, out_col, None, caps, g0)
            yield from _split_bytes(table, out_col, batch_bytes)

    if spans is not None:
        spans.append(int(scan.st[EOA]))

_MISSING = object()


def _raise_bad_txt(where, toff, txt, key_arr, rows):
    for i in range(len(toff) - 1):
        try:
            bytes(txt[toff[i]:toff[i + 1]]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{where}: sample {key_arr[i].as_py()!r} .txt (member at byte {rows[i, 4]}) is "
                f"not valid UTF-8 ({exc.reason} at byte {exc.start} of the caption); re-encode "
                "it as UTF-8") from None
    raise AssertionError("invalid UTF-8 not found")  # pragma: no cover


# What the Arrow JSON reader would read otherwise than json does: a UTF-8 BOM
# (accepted), a "-0" (read as -0.0 where json gives the integer 0), a \u escape
# of a surrogate (refused with another message), an integer of 16 digits or
# more (see _WIDE_INT). A batch that may hold any of them is parsed sample
# by sample; the tests below are quick (no regular expression runs over a batch
# that holds none of these prefixes).
_NEG_ZERO = re.compile(rb"[:,\[]\s*-0(?![0-9.eE])")


def _json_rules_needed(buf: bytes, raw: np.ndarray) -> bool:
    """The checks :func:`_json_lines` makes in one pass, with NumPy and
    regular expressions (kept as their statement, and tested against it)."""
    if b"\xef\xbb\xbf" in buf or b"\\ud" in buf or b"\\uD" in buf or _too_deep(buf):
        return True
    if b"-0" in buf and _NEG_ZERO.search(buf):
        return True
    digit = ((raw - 48) < 10).view(np.int8)  # runs of 16 digits, then the exact test
    edges = np.diff(digit, prepend=np.int8(0), append=np.int8(0))
    run = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return bool(run.size and run.max() >= 16 and _WIDE_INT.search(buf))


MAX_ARROW_OPENS = 64  # '{' and '[' in a member handed to Arrow's JSON reader (it
# overflows its stack near 20000 levels of nesting; a member with more opening
# brackets, strings included, goes to json's rules: a nested value does anyway)


def _too_deep(buf: bytes) -> bool:
    """Whether a line of ``buf`` (a member) holds more than MAX_ARROW_OPENS
    '{' and '[' bytes (so none handed to Arrow nests deeper than that)."""
    return any(line.count(b"{") + line.count(b"[") > MAX_ARROW_OPENS
               for line in buf.split(b"\n"))


@numba.njit(cache=True, nogil=True)
def _json_lines(js, rows, out):
    """Copy the batch's .json members (``rows[:, 1]`` start, ``rows[:, 2]``
    length) into ``out``, each followed by a line break, checking in the same
    pass what would send the batch to json's rules: an empty member, one not
    starting with "{" and ending with "}", more than ``MAX_ARROW_OPENS``
    '{' and '[' bytes, a byte below 0x20, a UTF-8 BOM, a
    "\\ud"/"\\uD" escape, or what ``_NEG_ZERO`` or ``_WIDE_INT`` match (a
    ':', ',' or '[', whitespace, then "-0" not followed by a digit, '.', 'e'
    or 'E', or an optional '-' and 16 digits). True when none is found (then
    ``out`` is whole); False at the first found."""
    o = 0
    for r in range(rows.shape[0]):
        a = rows[r, 1]
        n = rows[r, 2]
        if n <= 0 or js[a] != 0x7B or js[a + n - 1] != 0x7D:
            return False
        state = 0  # 1: after ':' ',' '[' and whitespace; 2: then '-'; 3: then digits
        digits = 0
        opens = 0  # '{' and '[' (Arrow's reader overflows its stack on deep nesting)
        for i in range(a, a + n):
            c = js[i]
            out[o] = c
            o += 1
            if c < 0x20:  # tab and line breaks too: \s in the patterns is a space here
                return False
            if c == 0x7B:
                opens += 1
                if opens > MAX_ARROW_OPENS:
                    return False
            if c == 0xEF and i + 2 < a + n and js[i + 1] == 0xBB and js[i + 2] == 0xBF:
                return False
            if c == 0x5C and i + 2 < a + n and js[i + 1] == 0x75 and (
                    js[i + 2] == 0x64 or js[i + 2] == 0x44):
                return False
            if c == 0x3A or c == 0x2C or c == 0x5B:
                if c == 0x5B:
                    opens += 1
                    if opens > MAX_ARROW_OPENS:
                        return False
                state = 1
                digits = 0
            elif state == 1 and c == 0x20:
                pass
            elif state == 1 and c == 0x2D:
                state = 2
            elif (state == 1 or state == 2 or state == 3) and 0x30 <= c <= 0x39:
                if state == 2 and c == 0x30:
                    if i + 1 == a + n:
                        return False
                    d = js[i + 1]
                    if not (0x30 <= d <= 0x39 or d == 0x2E or d == 0x65 or d == 0x45):
                        return False
                state = 3
                digits += 1
                if digits >= 16:
                    return False
            else:
                state = 0
                digits = 0
        out[o] = 0x0A
        o += 1
    return True


_ARROW_JSON_TYPES = (pa.null(), pa.bool_(), pa.int64(), pa.float64(), pa.string())


def _table_arrow(js, rows, key_arr, out_col, cap_arr) -> pa.Table | None:
    """The batch's table with its .json members read by Arrow's JSON reader in
    one call, or None when the batch must be parsed sample by sample (json's
    rules, and their error messages): a member holding a line break or another
    control byte, invalid UTF-8, what _json_rules_needed finds, a
    value Arrow refuses or reads as anything but null, bool, int64, double or
    string (a timestamp-like string, an object, an array). Its result equals
    ``_table(_metas(...))`` on every batch it accepts."""
    import pyarrow.json as pajson

    n = rows.shape[0]
    # One object per line, so one row per sample: each member starts with "{"
    # and ends with "}" (Arrow reads '{..} {..}' as two rows, and crashes on a
    # line holding only null: pyarrow 26.0.1).
    buf = np.empty(int(rows[:, 2].sum()) + n, np.uint8)
    if not _json_lines(np.frombuffer(js, np.uint8), rows, buf):
        return None
    try:
        str(buf.data, "utf-8")
        got = pajson.read_json(pa.py_buffer(buf), read_options=pajson.ReadOptions(
            use_threads=False, block_size=max(1 << 20, buf.size + 1)))
    except (UnicodeDecodeError, pa.ArrowException):
        return None
    if got.num_rows != n or any(t not in _ARROW_JSON_TYPES for t in got.schema.types):
        return None
    fields = [f for f in got.column_names if f not in ("__key__", out_col)]
    arrays = [key_arr] + [got.column(f).combine_chunks() for f in fields] + [cap_arr]
    return pa.Table.from_arrays(arrays, names=["__key__"] + fields + [out_col])


def _metas(where, js, rows, has_json, key_arr) -> list:
    out = [None] * rows.shape[0]
    idx = np.flatnonzero(has_json).tolist()
    if not idx:
        return out
    mv = memoryview(js)
    spans = [(int(rows[i, 1]), int(rows[i, 1] + rows[i, 2])) for i in idx] \
        if len(idx) < 64 else list(zip(rows[idx, 1].tolist(), (rows[idx, 1] + rows[idx, 2]).tolist()))
    parsed = None
    # orjson reads an integer past 64 bits as a float; json keeps it, so that
    # it is refused below. Any run of 19 digits sends the batch to json.
    if _orjson is not None and not _LONG_DIGITS.search(js):
        loads = _orjson.loads
        try:
            parsed = [loads(mv[s:e]) for s, e in spans]
        except _orjson.JSONDecodeError:
            parsed = None  # json's own rules decide below (NaN, big integers, UTF-16 ...)
    if parsed is None:
        parsed = []
        for i, (s, e) in zip(idx, spans):
            try:
                parsed.append(json.loads(js[s:e]))
            except (ValueError, RecursionError) as exc:
                why = f"is not valid JSON ({exc})" if isinstance(exc, ValueError) else \
                    "is nested deeper than JSON readers take"
                raise InputError(
                    f"{where}: sample {key_arr[i].as_py()!r} .json (member at byte "
                    f"{rows[i, 5]}) {why}; fix the sample") from None
    for i, m in zip(idx, parsed):
        if type(m) is not dict:
            if not isinstance(m, dict):
                raise InputError(
                    f"{where}: sample {key_arr[i].as_py()!r} .json (member at byte "
                    f"{rows[i, 5]}) is a JSON {type(m).__name__}, not an object; fix the sample")
        out[i] = m
    return out


def _table(where, key_arr, metas, out_col, cap_arr, caps, g0) -> pa.Table:
    """``__key__``, the json fields (first-appearance order), the caption."""
    excl = ("__key__", out_col)
    first = next((m for m in metas if m is not None), None)
    fields0 = tuple(first) if first is not None else ()
    if all(m is not None and tuple(m) == fields0 for m in metas):
        fields = [f for f in fields0 if f not in excl]
        if not fields:
            cols = []
        elif len(fields) == 1:
            cols = [[m[fields[0]] for m in metas]]
        else:
            cols = list(zip(*map(operator.itemgetter(*fields), metas)))
    else:
        order: dict = {}
        for m in metas:
            if m is not None:
                for f in m:
                    if f not in excl:
                        order.setdefault(f)
        fields = list(order)
        cols = [[None if m is None else m.get(f) for m in metas] for f in fields]
    for f, c in zip(fields, cols):
        kinds = {_KIND.get(type(v), type(v).__name__) for v in c if v is not None}
        # What Arrow would alter silently: an integer past 64 bits among floats,
        # a lone surrogate inside an object or array (checked per column, and
        # per sample only to name the one at fault).
        if ("number" in kinds and any(type(v) is int and not INT64[0] <= v <= INT64[1]
                                      for v in c)) or kinds & {"object", "array"}:
            for i, v in enumerate(c):
                why = json_value_problem(v)
                if why:
                    raise InputError(f"{where}: sample {key_arr[i].as_py()!r} (row {g0 + i}) "
                                     f".json field {f!r} holds {why}")
        if len(kinds) > 1:
            i = next(i for i, v in enumerate(c) if v is not None and
                     _KIND.get(type(v), type(v).__name__) != _KIND.get(type(c[0]), None)) \
                if c[0] is not None else 0
            raise InputError(f"{where}: .json field {f!r} holds values of several types "
                             f"({', '.join(sorted(kinds))}; sample {key_arr[i].as_py()!r}, row "
                             f"{g0 + i}); make each field one type in the whole shard")
    for f in fields:  # a name with a lone surrogate (json's rules let one through)
        why = json_value_problem(f)
        if why:
            i = next(i for i, m in enumerate(metas) if m is not None and f in m)
            raise InputError(f"{where}: sample {key_arr[i].as_py()!r} (row {g0 + i}) .json "
                             f"has a field name that holds {why}")
    try:
        arrays = [key_arr] + [pa.array(list(c)) for c in cols]
        if cap_arr is None:
            cap_arr = pa.array(caps, pa.string()) if any(v is not None for v in caps) \
                else pa.nulls(len(caps), pa.large_string())
        arrays.append(cap_arr)
    except UnicodeEncodeError:
        for f, c in [*zip(fields, cols), (out_col, caps)]:
            for i, v in enumerate(c):
                why = json_value_problem(v)
                if why:
                    raise InputError(f"{where}: sample {key_arr[i].as_py()!r} (row {g0 + i}) "
                                     f".json field {f!r} holds {why}") from None
        raise
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{where}: rows {g0}..{g0 + len(metas) - 1} have .json fields of "
                         f"mixed types ({exc}); make each field one type") from None
    return pa.Table.from_arrays(arrays, names=["__key__"] + fields + [out_col])


def _split_bytes(table: pa.Table, text_column: str, batch_bytes: int) -> Iterator[pa.Table]:
    from .common import split as _split

    yield from _split(table, text_column, batch_bytes)


def count_samples(path: str) -> int:
    """Samples in a shard (distinct keys of members with a dotted base name);
    checks the structure like :func:`read_tar` but reads no member data."""
    scan = _Scan(path, os.path.basename(path), 0, 1, 1, rows_cap=1 << 20)
    n = 0
    for _g0, rows, *_ in scan.batches():
        n += rows.shape[0]
    return n


# ---------------------------------------------------------------- member scan
_BASE_PLUS_EXT = re.compile(rb"^((?:.*/|)[^.]+)[.]([^/]*)$")


def sample_key(name: bytes) -> tuple[bytes, bytes] | None:
    """(sample key, extension) of a member named ``name`` by the walker's rule
    (``_walk``), WebDataset's ``base_plus_ext``: the name up to the first dot of
    its base name, verbatim; a base name that starts with a dot keys the
    directory part (slash included) when the last directory holds no dot.
    None when the member belongs to no sample. The extension keeps its case."""
    m = _BASE_PLUS_EXT.match(name)
    return (m.group(1), m.group(2)) if m else None


_KINDS = {b"0": "file", b"\x00": "file", b"7": "file", b"1": "hardlink", b"2": "symlink",
          b"3": "chardev", b"4": "blockdev", b"5": "dir", b"6": "fifo"}


def scan_members(fileobj: BinaryIO) -> Iterator[tuple[str, str, int, int]]:
    """(name, kind, offset, size) of each member of an uncompressed tar stream.

    ``kind``: file, dir, symlink, hardlink, chardev, blockdev, fifo or other;
    ``offset``: byte offset of the member's first header (extended headers
    included); ``size``: its data size. Long names (GNU ``L``, pax ``path``)
    are resolved; member data is skipped (by seeking when the stream can).
    Raises InputError for a damaged or truncated archive.
    """
    where = getattr(fileobj, "name", "<tar stream>")
    try:
        seekable = fileobj.seekable()
        pos0 = fileobj.tell() if seekable else 0
        total = fileobj.seek(0, os.SEEK_END) if seekable else -1
        if seekable:
            fileobj.seek(pos0)
    except (AttributeError, OSError):
        seekable, pos0, total = False, 0, -1
    pos = 0

    def read(n: int) -> bytes:
        out = fileobj.read(n)
        return out if out is not None else b""

    def skip(n: int) -> None:
        nonlocal pos
        if n <= 0:
            return
        if seekable:
            fileobj.seek(pos0 + pos + n)
        else:
            left = n
            while left:
                got = read(min(left, 1 << 20))
                if not got:
                    raise InputError(f"{where}: the tar is cut inside the member at byte "
                                     f"{member}; re-create it")
                left -= len(got)
        pos += n

    member = 0
    while True:
        member = pos
        report = pos  # tarfile reports a member after a global header at its own header
        name = None
        size_override = None
        while True:
            hdr = read(BLOCK)
            if len(hdr) < BLOCK:
                if not hdr and pos == member:
                    raise InputError(f"{where}: the tar ends at byte {pos} without the two zero "
                                     "end-of-archive blocks; it is truncated; re-create it")
                raise InputError(f"{where}: the tar is cut inside the header at byte {pos}; "
                                 "re-create it")
            a = np.frombuffer(hdr, np.uint8)
            raw, uns, sgn = _header_sums(a, 0)
            if raw == 0:
                if pos != member:
                    raise InputError(f"{where}: the extended header at byte {member} is followed "
                                     "by the end of the archive; re-create it")
                nxt = read(BLOCK)
                if len(nxt) < BLOCK or any(nxt):
                    raise InputError(f"{where}: a single zero block at byte {pos} where a tar "
                                     "ends with two; it is truncated or damaged; re-create it")
                return
            ck = _num(a, 148, 8)
            if ck != uns and ck != sgn:
                raise InputError(f"{where}: bad tar header checksum at byte {pos}; re-create it")
            size = int(_num(a, 124, 12))
            if size < 0:
                raise InputError(f"{where}: invalid size field in the tar header at byte {pos}; "
                                 "re-create it")
            t = hdr[156:157]
            pos += BLOCK
            if t in (b"L", b"K", b"x", b"X", b"g"):
                data = read(_blk(size))
                if len(data) < _blk(size):
                    raise InputError(f"{where}: the tar is cut inside the member at byte "
                                     f"{pos - BLOCK}; re-create it")
                pos += len(data)
                if t == b"L":
                    if name is None:
                        name = data.split(b"\0", 1)[0]
                elif t != b"K":
                    path, psize = _pax(data, where, pos - BLOCK - len(data))
                    if t == b"g":
                        if path is not None or psize is not None:
                            raise InputError(f"{where}: the pax global header at byte "
                                             f"{pos - BLOCK - len(data)} sets a path or size for "
                                             "every member; re-create the shard")
                        if report == pos - BLOCK - len(data):
                            report = pos
                    else:
                        if path is not None and name is None:
                            name = path.rstrip(b"/")
                        if psize is not None and size_override is None:
                            size_override = psize
                continue
            break
        if t == b"S":
            raise InputError(f"{where}: the member at byte {member} is a sparse file; re-create "
                             "the shard without --sparse")
        if size_override is not None:
            size = size_override
        hname = hdr[:100].split(b"\0", 1)[0]
        kind = _KINDS.get(t, "other")
        if t == b"\x00" and hname.endswith(b"/"):
            kind = "dir"
        if name is None:
            prefix = hdr[345:500].split(b"\0", 1)[0]
            name = prefix + b"/" + hname if prefix else hname
        if kind == "dir":
            name = name.rstrip(b"/")
        data_bearing = kind in ("file", "other")
        yield (name.decode("utf-8", "surrogateescape"), kind, report,
               size if data_bearing else 0)
        if data_bearing:
            if seekable:
                if pos0 + pos + _blk(size) > total:
                    raise InputError(f"{where}: the tar is cut inside the member at byte "
                                     f"{member}; re-create it")
            skip(_blk(size))


def _pax(data: bytes, where: str, off: int):
    import re

    path = psize = None
    regex = re.compile(rb"(\d+) ([^=]+)=")
    p = 0
    while True:
        m = regex.match(data, p)
        if not m:
            break
        length = int(m.group(1))
        if length == 0:
            raise InputError(f"{where}: invalid pax extended header at byte {off}; re-create it")
        kw = m.group(2)
        value = data[m.end(2) + 1:m.start(1) + length - 1]
        if kw == b"path":
            path = value
        elif kw == b"size":
            try:
                psize = int(value)
            except ValueError:
                raise InputError(f"{where}: invalid pax size at byte {off}; re-create it") from None
        elif kw.startswith(b"GNU.sparse"):
            raise InputError(f"{where}: the member at byte {off} is a sparse file; re-create "
                             "the shard without --sparse")
        p += length
    return path, psize
