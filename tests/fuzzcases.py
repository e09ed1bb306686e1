"""Malformed-shard fuzz cases for ``gpucurate curate``, and the judge of each run.

A case is ``(fmt, cls, seed)``: ``fmt`` one of FORMATS, ``cls`` a mutation class
of that format (see CLASSES), ``seed`` drives a ``random.Random``. Building a case
writes a valid small shard (20-80 rows of generated captions over the metadata
list META) and then mutates it: truncation at a structural boundary of the format
(parquet magic, page headers and pages, column chunks, row groups, footer; tar
headers, member data, padding and end blocks; gzip/zstd headers, blocks, members,
frames and trailers; jsonl lines), bit flips, wrong and mixed types, odd encodings
and odd file kinds (FIFO, symlink loop, directory named like a shard, symlinks to
/dev/zero or to other names, dangling links).

:class:`Runner` runs a case in-process through ``gpucurate.cli.main`` and sorts
the run into one outcome:

- ``correct``: exit 0, and the curated rows, the entry counts and the pool size
  equal what the plain-Python reference gives on the rows the file really holds,
  read by an independent strict reader (pyarrow with page-checksum verification
  and full validation for parquet; ``json`` for jsonl, with Python's gzip and a
  frame-by-frame zstd decoder; ``tarfile`` for tar, which must end with an
  end-of-archive block), matched with ``gpucurate.reference.match_naive``
  (``--t`` is large, so every matched caption is kept);
- ``clean_error``: exit 2 with exactly one ERROR line from logger ``gpucurate``
  that names the bad file (and, where the reference knows it, the line), no
  traceback printed, for an input the reference rejects too;
- ``traceback``: an exception escaped ``main``, or "Traceback" was printed;
- ``hang``: the run blocked on a FIFO, or passed the time limit;
- ``silent_wrong``: exit 0 where the reference rejects the input, or outputs
  that differ from the reference's;
- ``rejected_valid``: exit 2 on an input the reference reads as valid;
- ``bad_error``: exit 2 but not one line naming the file (or the wrong line);
- ``outside_touched``: a file outside OUT was created, changed or removed (the
  case's inputs, the metadata, and a sentinel directory linked from inside OUT).

With ``Runner(wds=True)`` (tar cases) the run also writes ``--outputs
webdataset``, and a ``correct`` run must hold in ``OUT/curated-wds`` the kept
samples of the input tars (read by ``tarfile``), in order, each member as it
was but the first ``.json``, which gains ``entry_ids`` (one is added when the
sample has none).

Some inputs are legal either way (a UTF-8 BOM, a gzip-compressed tar named
``.tar``, a symlink whose target has another extension, ...): then both exit 2
and a correct result pass, and an exit 0 is still compared with the reference.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import gzip
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import shutil
import stat
import tarfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = ("parquet", "jsonl", "jsonl.gz", "jsonl.zst", "tar")
OUTCOMES = ("correct", "clean_error", "traceback", "hang", "silent_wrong", "rejected_valid",
            "bad_error", "outside_touched")
FAILURES = ("traceback", "hang", "silent_wrong", "rejected_valid", "bad_error", "outside_touched")

# ---------------------------------------------------------------- the data
META = ["dog", "cat", "hot dog", "red car", "new york", "a", "the", "photo", "man", "woman",
        "on the beach", "sunset", "tree", "blue sky", "café", "東京", "straße", "two dogs",
        "a man riding a horse", "bike", "street", "city", "water", "snow", "mountain", "food",
        "pizza", "coffee", "book", "table", "dog", "u.s", "New York, NY", "white", "black and white",
        "game", "table tennis", "i", "x", "é", "😀", "kid", "park", "light", "night", "bus",
        "train station", "green", "small", "old"]
_WORDS = ["a", "the", "dog", "cat", "hot", "red", "car", "new", "york", "photo", "of", "man",
          "woman", "on", "beach", "sunset", "tree", "blue", "sky", "café", "東京", "straße", "two",
          "dogs", "riding", "horse", "bike", "street", "city", "water", "snow", "mountain",
          "food", "pizza", "coffee", "book", "table", "white", "black", "and", "game", "tennis",
          "kid", "park", "light", "night", "bus", "train", "station", "green", "small", "old",
          "😀", "é", "x", "i", "u.s", "NY", "near", "with", "in", "at", "Ünïcode", "naïve", "日本"]
_PUNCT = [",", ".", ";", ":", "?", "!", "`", "-", "'", '"', "(", ")"]


def caption(rng: random.Random) -> str | None:
    r = rng.random()
    if r < 0.05:
        return None
    if r < 0.07:
        return ""
    words = [rng.choice(_WORDS) for _ in range(rng.randint(1, 14))]
    out = []
    for w in words:
        if rng.random() < 0.1:
            w = w + rng.choice(_PUNCT)
        if rng.random() < 0.04:
            w = rng.choice(["\t", "\n", "\r", "  ", "\u00a0", "\u2028"]) + w
        out.append(w)
    return " ".join(out)


def base_rows(rng: random.Random, n: int, text: str = "text") -> list[dict]:
    rows = []
    for i in range(n):
        r = {"id": i, text: caption(rng), "url": f"https://img.example/{rng.getrandbits(40):x}.jpg",
             "score": round(rng.random(), 6)}
        r["tags"] = ([rng.choice(_WORDS) for _ in range(rng.randint(0, 3))]
                     if rng.random() < 0.7 else None)
        rows.append(r)
    return rows


# ------------------------------------------------------ structural offsets
def _varint(b: bytes, i: int) -> tuple[int, int]:
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if not c & 0x80:
            return v, i


def _zz(v: int) -> int:
    return (v >> 1) ^ -(v & 1)


def _skip(b: bytes, i: int, t: int) -> int:
    if t in (1, 2):
        return i
    if t == 3:
        return i + 1
    if t in (4, 5, 6):
        return _varint(b, i)[1]
    if t == 7:
        return i + 8
    if t == 8:
        n, i = _varint(b, i)
        return i + n
    if t in (9, 10):
        h = b[i]
        i += 1
        n, et = h >> 4, h & 0xF
        if n == 15:
            n, i = _varint(b, i)
        for _ in range(n):
            i = i + 1 if et in (1, 2) else _skip(b, i, et)
        return i
    if t == 11:
        n, i = _varint(b, i)
        if n:
            kv = b[i]
            i += 1
            for _ in range(n):
                i = _skip(b, i, kv >> 4)
                i = _skip(b, i, kv & 0xF)
        return i
    if t == 12:
        return _struct(b, i)[1]
    raise ValueError(f"thrift type {t}")


def _struct(b: bytes, i: int) -> tuple[dict, int]:
    """A thrift compact struct: (its integer fields by id, end offset)."""
    fields, last = {}, 0
    while True:
        h = b[i]
        i += 1
        if h == 0:
            return fields, i
        delta, t = h >> 4, h & 0xF
        if delta:
            fid = last + delta
        else:
            v, i = _varint(b, i)
            fid = _zz(v)
        last = fid
        if t in (4, 5, 6):
            v, i = _varint(b, i)
            fields[fid] = _zz(v)
        else:
            i = _skip(b, i, t)


def parquet_boundaries(data: bytes) -> list[int]:
    """Magic, every page header start and end, page end, column chunk and row
    group ends, footer start, footer length and the closing magic."""
    out = {0, 4, len(data), len(data) - 4, len(data) - 8}
    flen = int.from_bytes(data[-8:-4], "little")
    out.add(len(data) - 8 - flen)
    md = pq.ParquetFile(io.BytesIO(data)).metadata
    for rg in range(md.num_row_groups):
        g = md.row_group(rg)
        for c in range(g.num_columns):
            cc = g.column(c)
            start = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
            if start is None:
                start = cc.data_page_offset
            end = start + cc.total_compressed_size
            out.update((start, end))
            i = start
            while i < end:
                try:
                    f, hend = _struct(data, i)
                except (IndexError, ValueError):
                    break
                out.update((i, hend, hend + f.get(3, 0)))
                i = hend + f.get(3, 0)
    return sorted(x for x in out if 0 <= x <= len(data))


def gzip_boundaries(data: bytes, members: list[int]) -> list[int]:
    out = {len(data)}
    for start, end in zip(members, members[1:] + [len(data)]):
        out.update((start, start + 1, start + 2, start + 3, start + 4, start + 8, start + 9,
                    start + 10, end - 8, end - 4, end - 1, end))
    return sorted(x for x in out if 0 <= x <= len(data))


def zstd_boundaries(data: bytes) -> list[int]:
    out = {0, len(data)}
    i = 0
    while i + 4 <= len(data):
        magic = int.from_bytes(data[i:i + 4], "little")
        out.add(i)
        if magic & 0xFFFFFFF0 == 0x184D2A50:
            size = int.from_bytes(data[i + 4:i + 8], "little")
            out.update((i + 4, i + 8))
            i += 8 + size
            continue
        if magic != 0xFD2FB528:
            break
        fhd = data[i + 4]
        fcs, single, csum, did = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
        h = 5 + (0 if single else 1) + (0, 1, 2, 4)[did] + ((1 if single else 0), 2, 4, 8)[fcs]
        out.update((i + 4, i + 5, i + h))
        j = i + h
        while j + 3 <= len(data):
            v = int.from_bytes(data[j:j + 3], "little")
            last, btype, bsize = v & 1, (v >> 1) & 3, v >> 3
            j += 3 + (1 if btype == 1 else bsize)
            out.update((j - 1, j))
            if last:
                break
        if csum:
            out.add(j + 4)
            j += 4
        i = j
    out.add(i)
    return sorted(x for x in out if 0 <= x <= len(data))


def tar_boundaries(data: bytes) -> list[int]:
    out = {0, len(data)}
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        for m in tf:
            out.update((m.offset, m.offset + 100, m.offset + 124, m.offset + 148, m.offset + 257,
                        m.offset + 511, m.offset_data, m.offset_data + m.size // 2,
                        m.offset_data + m.size, m.offset_data + -(-m.size // 512) * 512))
        end = tf.offset
        out.update((end, end + 1, end + 511, end + 512, end + 1023, end + 1024))
    except tarfile.TarError:
        pass
    return sorted(x for x in out if 0 <= x <= len(data))


# ------------------------------------------------------------ the builders
EXT = {"parquet": ".parquet", "jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz",
       "jsonl.zst": ".jsonl.zst", "tar": ".tar"}

COMMON = ["valid", "truncate_boundary", "truncate_random", "bitflip", "bitflip_struct",
          "zero_byte", "fifo", "symlink_loop", "dir_named_shard", "symlink_other_ext",
          "symlink_devzero", "symlink_dangling", "wrong_format", "out_symlink_tmp", "dir_mixed"]
JSONL_ROWS = ["text_wrong_type", "text_missing", "field_mixed_types", "invalid_utf8",
              "lone_surrogate", "bom", "bom_midfile", "crlf", "blank_line", "no_final_newline",
              "non_object_line", "nan_inf", "huge_int", "dup_keys", "control_chars",
              "utf16", "latin1", "text_all_null", "entry_ids_field", "nested_fields",
              "sparse_fields", "bool_number_mix"]
CLASSES = {
    "parquet": COMMON + ["text_wrong_type", "text_string_view", "text_dictionary",
                         "text_null_type", "text_large_string", "duplicate_text_column",
                         "invalid_utf8_text", "invalid_utf8_other", "page_checksum_flip",
                         "entry_ids_column", "empty_table", "truncate_row_group"],
    "jsonl": COMMON + JSONL_ROWS,
    "jsonl.gz": COMMON + JSONL_ROWS + ["multi_member", "trailing_garbage", "zero_padding",
                                       "trailer_flip", "truncate_member_boundary"],
    "jsonl.zst": COMMON + JSONL_ROWS + ["multi_frame", "trailing_garbage", "skippable_frame",
                                        "checksum_flip", "truncate_member_boundary"],
    "tar": COMMON + ["missing_txt", "json_not_object", "json_invalid", "txt_invalid_utf8",
                     "name_invalid_utf8", "json_surrogate", "json_mixed_types", "json_caption",
                     "long_names", "dir_and_link_members", "split_key", "gzip_tar", "txt_bom",
                     "lone_zero_block", "bad_checksum_mid", "truncate_member_boundary",
                     "huge_int", "sparse_fields"],
}
# costly classes run in the bench (and where asked), not by default in the CI test
SLOW = {("jsonl", "mixed_across_batch")}
for _f in ("jsonl",):
    CLASSES[_f] = CLASSES[_f] + ["mixed_across_batch"]


@dataclass
class Case:
    fmt: str
    cls: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.fmt}/{self.cls}/{self.seed}"


@dataclass
class Built:
    inputs: list[str]
    text_column: str = "text"
    either: bool = False     # exit 2 and a correct result are both acceptable
    fifos: list[str] = field(default_factory=list)
    note: str = ""


def _flip(rng, data: bytes, lo: int = 0, hi: int | None = None, nbits: int | None = None) -> bytes:
    b = bytearray(data)
    if not b:
        return data
    hi = len(b) if hi is None else max(lo + 1, min(hi, len(b)))
    lo = max(0, min(lo, len(b) - 1))
    for _ in range(nbits or rng.randint(1, 8)):
        b[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
    return bytes(b)


def _parquet_bytes(rng, rows, table: pa.Table | None = None, checksum: bool | None = None,
                   **over) -> bytes:
    if table is None:
        schema = pa.schema([("id", pa.int64()), ("text", pa.string()), ("url", pa.string()),
                            ("score", pa.float64()), ("tags", pa.list_(pa.string()))])
        table = pa.Table.from_pylist(rows, schema=schema)
        if rng.random() < 0.3:
            table = table.drop_columns(["tags"])
    buf = io.BytesIO()
    kw = dict(row_group_size=rng.choice([7, 16, 50, 10_000]),
              data_page_size=rng.choice([64, 256, 1024, 1 << 20]),
              write_batch_size=rng.choice([4, 16, 1024]),
              compression=rng.choice(["none", "snappy", "zstd", "gzip"]),
              use_dictionary=rng.random() < 0.5,
              write_page_checksum=rng.random() < 0.5 if checksum is None else checksum,
              data_page_version=rng.choice(["1.0", "2.0"]),
              write_statistics=rng.random() < 0.7)
    kw.update(over)
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


def _jsonl_lines(rng, rows) -> list[bytes]:
    ea = rng.random() < 0.5
    return [json.dumps(r, ensure_ascii=ea).encode("utf-8") for r in rows]


def _join(lines: list[bytes], final_newline: bool = True, sep: bytes = b"\n") -> bytes:
    return sep.join(lines) + (sep if final_newline and lines else b"")


def _gzip(rng, data: bytes, parts: int = 1) -> tuple[bytes, list[int]]:
    out, starts = b"", []
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(parts - 1))
    for a, b in zip([0] + cuts, cuts + [len(data)]):
        starts.append(len(out))
        out += gzip.compress(data[a:b], compresslevel=rng.choice([1, 6, 9]), mtime=0)
    return out, starts


def _zstd(rng, data: bytes, frames: int = 1) -> bytes:
    import zstandard

    out = b""
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(frames - 1))
    for a, b in zip([0] + cuts, cuts + [len(data)]):
        c = zstandard.ZstdCompressor(level=rng.choice([1, 3, 9]),
                                     write_checksum=rng.random() < 0.5,
                                     write_content_size=rng.random() < 0.5)
        chunk = data[a:b]
        if rng.random() < 0.5:  # several blocks in one frame
            o = c.compressobj()
            step = max(1, len(chunk) // rng.randint(1, 6))
            parts = []
            for k in range(0, len(chunk), step):
                parts.append(o.compress(chunk[k:k + step]))
                parts.append(o.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
            parts.append(o.flush())
            out += b"".join(parts)
        else:
            out += c.compress(chunk)
    return out


def _tar_bytes(rng, rows, text_field: str | None = None, fmt=None, order=None,
               extra=None, long_names=False) -> bytes:
    """WebDataset tar: per row key.txt (the caption), key.json (other fields), key.jpg."""
    buf = io.BytesIO()
    fmt = fmt if fmt is not None else rng.choice([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                                  tarfile.PAX_FORMAT])
    if long_names and fmt == tarfile.USTAR_FORMAT:
        fmt = tarfile.GNU_FORMAT
    prefix = rng.choice(["", "", "shard0/"])
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for i, r in enumerate(rows):
            key = f"{prefix}{'k' * 120 if long_names else ''}{i:06d}"
            meta = {k: v for k, v in r.items() if k != "text"}
            if text_field:
                meta[text_field] = r.get("text")
            members = [("json", json.dumps(meta, ensure_ascii=rng.random() < 0.5).encode())]
            if not text_field:
                members.append(("txt", (r.get("text") or "").encode("utf-8", "surrogatepass")))
            if rng.random() < 0.5:
                members.append(("jpg", rng.randbytes(rng.randint(0, 700))))
            if order is None:
                rng.shuffle(members)
            for ext, payload in members:
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(payload)
                ti.mtime = 1_700_000_000
                tf.addfile(ti, io.BytesIO(payload))
            if extra:
                extra(tf, i)
    return buf.getvalue()


def _rows_for(rng, fmt, n=None):
    n = n or rng.randint(20, 80)
    rows = base_rows(rng, n)
    if fmt == "tar":
        for r in rows:
            if r["text"] is None:
                r["text"] = ""
    return rows


def _encode(rng, fmt: str, rows=None, lines=None, final_newline=True) -> bytes:
    """A valid shard of ``fmt`` holding ``rows`` (or raw jsonl ``lines``)."""
    if fmt == "parquet":
        return _parquet_bytes(rng, rows)
    if fmt == "tar":
        return _tar_bytes(rng, rows)
    if lines is None:
        lines = _jsonl_lines(rng, rows)
    data = _join(lines, final_newline)
    if fmt == "jsonl.gz":
        return _gzip(rng, data, rng.choice([1, 1, 2, 3]))[0]
    if fmt == "jsonl.zst":
        return _zstd(rng, data, rng.choice([1, 1, 2, 3]))
    return data


def _boundaries(fmt: str, data: bytes) -> list[int]:
    try:
        if fmt == "parquet":
            return parquet_boundaries(data)
        if fmt == "tar":
            return tar_boundaries(data)
        if fmt == "jsonl.gz":
            starts, i = [], 0
            while True:
                starts.append(i)
                j = data.find(b"\x1f\x8b\x08", i + 10)
                if j < 0:
                    break
                i = j
            return gzip_boundaries(data, starts)
        if fmt == "jsonl.zst":
            return zstd_boundaries(data)
    except Exception:  # noqa: BLE001 - a mutated file need not parse
        pass
    out = [0, len(data)]
    i = data.find(b"\n")
    while i >= 0:
        out += [i, i + 1]
        i = data.find(b"\n", i + 1)
    return out


def _mutate_jsonl_rows(rng, cls: str, rows: list[dict], b: Built) -> tuple[list[bytes], bool]:
    """Row-level mutations of jsonl: (lines, final newline)."""
    n = len(rows)
    k = rng.randrange(n)
    lines = _jsonl_lines(rng, rows)
    final = True
    if cls == "text_wrong_type":
        rows[k]["text"] = rng.choice([1, 2.5, True, ["a dog"], {"t": "a dog"}, -7])
    elif cls == "text_missing":
        del rows[k]["text"]
    elif cls == "field_mixed_types":
        f = rng.choice(["id", "url", "score", "new"])
        if f == "new":
            rows[0][f] = "s"
        for r in rows[k:]:
            r[f] = rng.choice(["s", 1, 2.5, [1], {"a": 1}])
    elif cls == "bool_number_mix":  # a JSON bool where the other rows hold numbers
        for r in rows[k:]:
            r["score"] = rng.choice([True, False, 1, 0.5])
    elif cls == "huge_int":
        rows[k]["id"] = rng.choice([2**63, 2**64, -2**63 - 1, 10**30, 2**63 - 1])
    elif cls == "nan_inf":
        rows[k]["score"] = rng.choice([float("nan"), float("inf"), float("-inf")])
        b.either = True
    elif cls == "text_all_null":
        for r in rows:
            r["text"] = None
    elif cls == "entry_ids_field":
        for r in rows[:1] + rows[k:k + 1]:
            r["entry_ids"] = [1, 2]
    elif cls == "sparse_fields":  # a field some rows lack (the first row among them)
        for i, r in enumerate(rows):
            if i == 0 or rng.random() < 0.5:
                r.pop(rng.choice(["tags", "url", "score"]), None)
    elif cls == "nested_fields":
        for r in rows:
            r["meta"] = {"w": rng.randint(1, 9), "src": rng.choice(["a", "b"])}
            r["tags"] = [rng.choice(_WORDS)]
    lines = _jsonl_lines(rng, rows)
    if cls == "invalid_utf8":
        bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80",
                          b"\xe2\x82", b"\x80"])
        line = lines[k]
        pos = line.find(b'"text": "')
        pos = pos + 9 if pos >= 0 and rng.random() < 0.7 else rng.randrange(1, len(line))
        lines[k] = line[:pos] + bad + line[pos:]
    elif cls == "lone_surrogate":
        where = rng.choice(["text", "url", "key"])
        if where == "key":
            k = 0
            lines[k] = lines[k][:1] + b'"\\udc80x": 1, ' + lines[k][1:]
        else:
            rows[k][where] = (rows[k].get(where) or "") + rng.choice(["\ud800", "\udfff", "\udc80"])
            lines[k] = json.dumps(rows[k], ensure_ascii=True).encode()
    elif cls == "bom":
        lines[0] = b"\xef\xbb\xbf" + lines[0]
        b.either = True
    elif cls == "bom_midfile":
        lines[max(1, k)] = b"\xef\xbb\xbf" + lines[max(1, k)]
    elif cls == "crlf":
        lines = [ln + b"\r" for ln in lines]
    elif cls == "blank_line":
        lines.insert(rng.randrange(n + 1), rng.choice([b"", b" ", b"\r", b"\t"]))
    elif cls == "no_final_newline":
        final = False
    elif cls == "non_object_line":
        lines[k] = rng.choice([b"[]", b"1", b'"text"', b"null", b"[{\"text\": \"dog\"}]", b"true"])
    elif cls == "dup_keys":
        lines[k] = lines[k][:1] + b'"text": "hot dog", ' + lines[k][1:]
        b.either = True
    elif cls == "control_chars":
        ch = rng.choice([b"\x00", b"\x01", b"\x0c", b"\x1f", b"\t", b"\x7f"])
        pos = rng.randrange(1, len(lines[k]))
        lines[k] = lines[k][:pos] + ch + lines[k][pos:]
    elif cls == "utf16":
        text = _join(lines).decode("utf-8")
        return [text.encode(rng.choice(["utf-16", "utf-16-le", "utf-32"]))], False
    elif cls == "latin1":
        rows[k]["text"] = "café naïve " + (rows[k]["text"] or "")
        lines[k] = json.dumps(rows[k], ensure_ascii=False).encode("latin-1", "replace")
    return lines, final


def build(case: Case, indir: str, sentinel: str) -> Built:
    """Write the case's input under ``indir``; return the arguments."""
    rng = random.Random(f"{case.fmt}|{case.cls}|{case.seed}")
    fmt, cls = case.fmt, case.cls
    ext = EXT[fmt]
    path = os.path.join(indir, f"shard-{rng.randrange(1000):03d}{ext}")
    b = Built(inputs=[path])
    as_dir = rng.random() < 0.3  # give the directory, not the file
    rows = _rows_for(rng, fmt)

    def write(data: bytes, p: str = path):
        with open(p, "wb") as f:
            f.write(data)

    if cls == "valid":
        write(_encode(rng, fmt, rows))
    elif cls in ("truncate_boundary", "truncate_random", "bitflip", "bitflip_struct",
                 "truncate_row_group", "truncate_member_boundary"):
        if fmt.startswith("jsonl.") or fmt == "jsonl":
            data = _encode(rng, fmt, rows)
        else:
            data = _encode(rng, fmt, rows)
        bounds = _boundaries(fmt, data)
        if cls == "truncate_random":
            data = data[:rng.randrange(len(data) + 1)]
        elif cls == "truncate_boundary":
            cut = rng.choice(bounds) + rng.choice([0, 0, 0, -1, 1])
            data = data[:max(0, cut)]
        elif cls == "truncate_row_group":  # parquet: cut exactly at a column chunk end
            md = pq.ParquetFile(io.BytesIO(data)).metadata
            ends = []
            for g in range(md.num_row_groups):
                for c in range(md.num_columns):
                    cc = md.row_group(g).column(c)
                    st = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
                    ends.append((st or cc.data_page_offset) + cc.total_compressed_size)
            data = data[:rng.choice(ends)]
        elif cls == "truncate_member_boundary":
            if fmt == "tar":  # cut after a member's padded data: no end-of-archive blocks
                tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
                ends = [m.offset_data + -(-m.size // 512) * 512 for m in tf]
                data = data[:rng.choice(ends)]
            else:  # several members/frames; cut at a member start
                raw = _join(_jsonl_lines(rng, rows))
                parts = rng.randint(2, 5)
                if fmt == "jsonl.gz":
                    data, starts = _gzip(rng, raw, parts)
                    data = data[:rng.choice(starts[1:])]
                else:
                    data = _zstd(rng, raw, parts)
                    starts = [x for x in zstd_boundaries(data)
                              if data[x:x + 4] == b"\x28\xb5\x2f\xfd" and x > 0]
                    if starts:
                        data = data[:rng.choice(starts)]
        elif cls == "bitflip":
            data = _flip(rng, data)
        else:
            x = rng.choice(bounds)
            data = _flip(rng, data, x - 8, x + 24)
        write(data)
    elif cls == "zero_byte":
        write(b"")
    elif cls == "fifo":
        os.mkfifo(path)
        b.fifos.append(path)
    elif cls == "symlink_loop":
        other = os.path.join(indir, f"loop{ext}")
        os.symlink(other, path)
        os.symlink(path, other)
        if as_dir:
            os.remove(other)
            os.symlink(os.path.basename(path), other)
    elif cls == "dir_named_shard":
        os.makedirs(path)
        if rng.random() < 0.5:  # a real shard inside it: that one is read
            write(_encode(rng, fmt, rows), os.path.join(path, f"inner{ext}"))
    elif cls == "symlink_other_ext":
        target = os.path.join(indir, rng.choice(["data.bin", "data", "shard.txt", "x.json"]))
        write(_encode(rng, fmt, rows), target)
        os.symlink(target, path)
        b.either = True
    elif cls == "symlink_devzero":
        os.symlink(rng.choice(["/dev/zero", "/dev/null", "/dev/urandom"]), path)
        b.note = os.readlink(path)
    elif cls == "symlink_dangling":
        os.symlink(os.path.join(indir, "gone" + ext), path)
    elif cls == "wrong_format":
        other = rng.choice([f for f in FORMATS if f != fmt])
        data = _encode(rng, other, _rows_for(rng, other))
        if rng.random() < 0.3:  # a gzip stream of the right content
            data = gzip.compress(_encode(rng, fmt.split(".")[0], rows), mtime=0)
            if fmt == "tar":
                b.either = True
        write(data)
    elif cls == "out_symlink_tmp":
        write(_encode(rng, fmt, rows))
        with open(os.path.join(sentinel, rng.choice(["part.tmp-1", "a.parquet.tmp-99"])), "w") as f:
            f.write("keep me\n")
    elif cls == "dir_mixed":  # a directory with a good shard and a bad one
        write(_encode(rng, fmt, rows))
        bad = os.path.join(indir, f"zz-bad{ext}")
        data = _encode(rng, fmt, _rows_for(rng, fmt))
        write(data[:rng.randrange(len(data))] if rng.random() < 0.7 else _flip(rng, data), bad)
        as_dir = True
    elif fmt == "parquet":
        _build_parquet(rng, cls, rows, write, b)
    elif fmt == "tar":
        _build_tar(rng, cls, rows, write, b)
    else:
        _build_jsonl(rng, fmt, cls, rows, write, b)
    if as_dir:
        b.inputs = [indir]
    return b


def _build_jsonl(rng, fmt, cls, rows, write, b: Built) -> None:
    if cls == "mixed_across_batch":  # an int field for 65,536 rows, then strings
        n = 65_536 + rng.randint(1, 200)
        rows = [{"id": i, "text": rng.choice(["a dog", "hot dog on a table", None, "red car"]),
                 "n": i} for i in range(n)]
        for r in rows[65_536:]:
            r["n"] = f"x{r['n']}"
        lines = [json.dumps(r).encode() for r in rows]
        final = True
    elif cls in ("multi_member", "multi_frame", "trailing_garbage", "zero_padding",
                 "trailer_flip", "skippable_frame", "checksum_flip"):
        raw = _join(_jsonl_lines(rng, rows))
        if fmt == "jsonl.gz":
            data, starts = _gzip(rng, raw, rng.randint(1, 4) if cls != "multi_member" else 3)
        else:
            data = _zstd(rng, raw, rng.randint(1, 4) if cls != "multi_frame" else 3)
        if cls == "trailing_garbage":
            data += rng.choice([b"garbage", b"\x1f", b"\x1f\x8b", b"\x28\xb5\x2f", b"\n",
                                rng.randbytes(20)])
        elif cls == "zero_padding":
            data += b"\x00" * rng.randint(1, 600)
            b.either = True
        elif cls == "trailer_flip":
            data = _flip(rng, data, len(data) - 8, len(data), 1)
        elif cls == "skippable_frame":
            payload = rng.randbytes(rng.randint(0, 40))
            sk = (0x184D2A50 + rng.randrange(16)).to_bytes(4, "little") + \
                len(payload).to_bytes(4, "little") + payload
            data = sk + data if rng.random() < 0.5 else data + sk
        elif cls == "checksum_flip":
            import zstandard

            data = zstandard.ZstdCompressor(write_checksum=True).compress(raw)
            data = _flip(rng, data, len(data) - 4, len(data), 1)
        write(data)
        return
    else:
        lines, final = _mutate_jsonl_rows(rng, cls, rows, b)
    data = _join(lines, final)
    if fmt == "jsonl.gz":
        data = _gzip(rng, data, rng.choice([1, 2]))[0]
    elif fmt == "jsonl.zst":
        data = _zstd(rng, data, rng.choice([1, 2]))
    write(data)


def _build_parquet(rng, cls, rows, write, b: Built) -> None:
    t = pa.Table.from_pylist(rows, schema=pa.schema(
        [("id", pa.int64()), ("text", pa.string()), ("url", pa.string()),
         ("score", pa.float64())]))
    ti = t.column_names.index("text")
    if cls == "text_wrong_type":
        col = rng.choice([pa.array(range(t.num_rows)),
                          pa.array([(x or "").encode() for x in t.column("text").to_pylist()]),
                          pa.array([[x] for x in t.column("text").to_pylist()]),
                          pa.array([x is None for x in t.column("text").to_pylist()]),
                          pa.array([{"s": x} for x in t.column("text").to_pylist()])])
        t = t.set_column(ti, "text", col)
    elif cls == "text_string_view":
        t = t.set_column(ti, "text", t.column("text").cast(pa.string_view()))
    elif cls == "text_dictionary":
        t = t.set_column(ti, "text", t.column("text").dictionary_encode())
    elif cls == "text_null_type":
        t = t.set_column(ti, "text", pa.nulls(t.num_rows))
    elif cls == "text_large_string":
        t = t.set_column(ti, "text", t.column("text").cast(pa.large_string()))
    elif cls == "duplicate_text_column":
        other = pa.array([rng.choice(["a dog", "cat", None]) for _ in range(t.num_rows)])
        t = pa.Table.from_arrays(t.columns + [other], names=t.column_names + ["text"])
    elif cls in ("invalid_utf8_text", "invalid_utf8_other"):
        name = "text" if cls == "invalid_utf8_text" else "url"
        vals = [(x or "").encode() for x in t.column(name).to_pylist()]
        k = rng.randrange(len(vals))
        vals[k] = vals[k][:3] + rng.choice([b"\xff", b"\xc3(", b"\xed\xa0\x80"]) + vals[k][3:]
        bin_ = pa.array(vals, pa.binary())
        t = t.set_column(t.column_names.index(name), name,
                         pa.Array.from_buffers(pa.string(), len(bin_), bin_.buffers()))
    elif cls == "page_checksum_flip":  # flip a bit inside a page's data
        data = _parquet_bytes(rng, rows, t, checksum=True, compression="none")
        md = pq.ParquetFile(io.BytesIO(data)).metadata
        g = md.row_group(rng.randrange(md.num_row_groups))
        cc = g.column(ti)
        st = cc.dictionary_page_offset if cc.has_dictionary_page else cc.data_page_offset
        st = st or cc.data_page_offset
        pages, i = [], st
        while i < st + cc.total_compressed_size:
            f, hend = _struct(data, i)
            if f.get(3, 0) > 0:
                pages.append((hend, hend + f[3]))
            i = hend + f.get(3, 0)
        lo, hi = rng.choice(pages)
        write(_flip(rng, data, lo, hi, 1))
        return
    elif cls == "entry_ids_column":
        t = t.append_column("entry_ids", pa.array([[1]] * t.num_rows, pa.list_(pa.int32())))
    elif cls == "empty_table":
        t = t.slice(0, 0)
    write(_parquet_bytes(rng, rows, t))


def _build_tar(rng, cls, rows, write, b: Built) -> None:
    k = rng.randrange(len(rows))
    if cls == "json_caption":
        b.text_column = "caption"
        write(_tar_bytes(rng, rows, text_field="caption"))
        return
    if cls == "long_names":
        write(_tar_bytes(rng, rows, long_names=True))
        return
    if cls == "gzip_tar":
        write(gzip.compress(_tar_bytes(rng, rows), mtime=0))
        b.either = True
        return
    if cls == "dir_and_link_members":
        def extra(tf, i):
            if i % 7 == 0:
                d = tarfile.TarInfo(f"dir{i}.d")
                d.type = tarfile.DIRTYPE
                tf.addfile(d)
                s = tarfile.TarInfo(f"{i:06d}.lnk")
                s.type = tarfile.SYMTYPE
                s.linkname = f"{i:06d}.txt"
                tf.addfile(s)
        write(_tar_bytes(rng, rows, extra=extra))
        return
    if cls == "huge_int":
        rows[k]["id"] = rng.choice([2**64, -2**63 - 1, 10**30])
        write(_tar_bytes(rng, rows))
        return
    if cls == "sparse_fields":
        for i, r in enumerate(rows):
            if i == 0 or rng.random() < 0.5:
                r.pop(rng.choice(["tags", "url", "score"]), None)
        write(_tar_bytes(rng, rows))
        return
    if cls == "json_mixed_types":
        for r in rows[k:]:
            r["score"] = rng.choice(["s", True, [1], {"a": 1}])
        write(_tar_bytes(rng, rows))
        return
    data = _tar_bytes(rng, rows, fmt=tarfile.USTAR_FORMAT)
    tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    members = tf.getmembers()
    m = [x for x in members if x.name.endswith({
        "missing_txt": ".txt", "json_not_object": ".json", "json_invalid": ".json",
        "txt_invalid_utf8": ".txt", "json_surrogate": ".json", "txt_bom": ".txt",
        "name_invalid_utf8": ".txt", "split_key": ".json", "bad_checksum_mid": "",
        "lone_zero_block": ""}.get(cls, ""))]
    target = rng.choice(m)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as w:
        for x in members:
            payload = tf.extractfile(x).read()
            ti = tarfile.TarInfo(x.name)
            ti.size, ti.mtime = len(payload), x.mtime
            if x is target:
                if cls == "missing_txt":
                    continue
                if cls == "json_not_object":
                    payload = rng.choice([b"[1, 2]", b"3", b'"text"', b"null", b"true"])
                elif cls == "json_invalid":
                    payload = payload[: rng.randrange(len(payload))] + rng.choice([b"", b"}", b"\xff"])
                elif cls == "txt_invalid_utf8":
                    payload = payload[:2] + rng.choice([b"\xff", b"\xc3(", b"\xed\xa0\x80"]) + payload[2:]
                elif cls == "json_surrogate":
                    meta = json.loads(payload)
                    meta["url"] = "x\ud800"
                    payload = json.dumps(meta).encode()
                elif cls == "txt_bom":
                    payload = b"\xef\xbb\xbf" + payload
                elif cls == "name_invalid_utf8":
                    ti.name = x.name.replace(".txt", "\udce9.txt")
                ti.size = len(payload)
            w.addfile(ti, io.BytesIO(payload))
        if cls == "split_key":  # the sample's key comes back after another sample
            ti = tarfile.TarInfo(target.name.rsplit(".", 1)[0] + ".cls")
            ti.size = 1
            w.addfile(ti, io.BytesIO(b"7"))
    data = out.getvalue()
    if cls == "bad_checksum_mid":
        offs = [x.offset for x in tarfile.open(fileobj=io.BytesIO(data), mode="r:").getmembers()]
        o = rng.choice(offs[1:])
        data = _flip(rng, data, o, o + 512, rng.randint(1, 3))
    elif cls == "lone_zero_block":
        end = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        list(end)
        data = data[:end.offset + rng.choice([512, 700, 1023])]
    write(data)


# ----------------------------------------------------------- the reference
class Bad(Exception):
    """The reference rejects the input: ``path`` is the file to name, ``must``
    a regex the message must match, ``mustnt`` one it must not."""

    def __init__(self, path: str, why: str, must: str | None = None, mustnt: str | None = None):
        super().__init__(f"{path}: {why}")
        self.path, self.why, self.must, self.mustnt = path, why, must, mustnt


@dataclass
class Ref:
    status: str                 # valid | invalid | either | either_error
    shards: list = field(default_factory=list)  # [(path, rows)]
    bad: Bad | None = None
    text: str = "text"


def _line_re(n: int) -> str:
    return rf"(line {n}\b|row {n - 1}\b)"


def _check_str(v, path, where, must=None):
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise Bad(path, f"{where}: lone surrogate", must=must, mustnt="mixed types")
    elif isinstance(v, dict):
        for k, x in v.items():
            _check_str(k, path, where, must)
            _check_str(x, path, where, must)
    elif isinstance(v, list):
        for x in v:
            _check_str(x, path, where, must)


def _kind(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def _check_fields(rows: list[dict], path: str, text: str) -> bool:
    """Each field holds one JSON type (numbers together); False: a value that
    Arrow cannot hold exactly (an integer beyond 64 bits)."""
    kinds: dict = {}
    exact = True
    for r in rows:
        for k, v in r.items():
            kd = _kind(v)
            if kd is None:
                continue
            if kinds.setdefault(k, kd) != kd:
                raise Bad(path, f"field {k!r} has mixed types")
            if kd == "number" and isinstance(v, int) and not (-2**63 <= v < 2**63):
                exact = False
        if "entry_ids" in r:
            raise Bad(path, "has a field entry_ids")
    return exact


def _zstd_strict(raw: bytes, path: str) -> bytes:
    import zstandard

    out, i = [], 0
    if not raw:
        raise Bad(path, "empty zstd file")
    while i < len(raw):
        magic = int.from_bytes(raw[i:i + 4], "little")
        if len(raw) - i >= 8 and magic & 0xFFFFFFF0 == 0x184D2A50:
            size = int.from_bytes(raw[i + 4:i + 8], "little")
            if i + 8 + size > len(raw):
                raise Bad(path, "truncated skippable frame")
            i += 8 + size
            continue
        d = zstandard.ZstdDecompressor().decompressobj()
        try:
            out.append(d.decompress(raw[i:]))
        except zstandard.ZstdError as exc:
            raise Bad(path, f"zstd: {exc}")
        if not d.eof:
            raise Bad(path, "zstd frame truncated")
        i = len(raw) - len(d.unused_data)
    return b"".join(out)


def ref_jsonl(path: str, text: str) -> tuple[list[dict], bool]:
    raw = open(path, "rb").read()
    either = False
    # The contract: compression is told by the magic bytes; a file named .gz or
    # .zst must carry its magic (an empty one is a truncated one).
    zst = raw[:4] == b"\x28\xb5\x2f\xfd" or (len(raw) >= 4 and raw[1:4] == b"\x2a\x4d\x18"
                                             and raw[0] & 0xF0 == 0x50)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except Exception as exc:  # noqa: BLE001 - OSError, EOFError, zlib.error
            raise Bad(path, f"gzip: {exc}")
    elif zst:
        raw = _zstd_strict(raw, path)
    elif path.endswith((".gz", ".zst")):
        raise Bad(path, "named compressed, without the magic bytes (empty or not compressed)")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw, either = raw[3:], True
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            s = line.decode("utf-8")
        except UnicodeDecodeError:
            raise Bad(path, f"line {n} not UTF-8", must=_line_re(n))
        dup = []

        def hook(pairs):
            keys = [k for k, _ in pairs]
            if len(set(keys)) != len(keys):
                dup.append(1)
            return dict(pairs)
        try:
            obj = json.loads(s, object_pairs_hook=hook)
        except ValueError:
            raise Bad(path, f"line {n} not JSON", must=_line_re(n))
        if dup:
            either = True
        if not isinstance(obj, dict):
            raise Bad(path, f"line {n} not an object", must=_line_re(n))
        if text not in obj or not (obj[text] is None or isinstance(obj[text], str)):
            raise Bad(path, f"line {n} text missing or not a string", must=_line_re(n))
        _check_str(obj, path, f"line {n}", _line_re(n))
        rows.append(obj)
    if not _check_fields(rows, path, text):
        either = True
    return rows, either


def ref_parquet(path: str, text: str) -> list[dict]:
    try:
        t = pq.read_table(path, page_checksum_verification=True)
        t.validate(full=True)
    except Exception as exc:  # noqa: BLE001 - any failure of the strict reader
        raise Bad(path, f"parquet: {exc}")
    names = t.column_names
    if names.count(text) != 1:
        raise Bad(path, f"{names.count(text)} columns {text!r}")
    if "entry_ids" in names:
        raise Bad(path, "has a column entry_ids")
    if len(set(names)) != len(names):
        raise Bad(path, "duplicate column names")
    ty = t.schema.field(text).type
    if pa.types.is_dictionary(ty):
        ty = ty.value_type
    if not (pa.types.is_string(ty) or pa.types.is_large_string(ty) or
            pa.types.is_string_view(ty) or pa.types.is_null(ty)):
        raise Bad(path, f"text column is {ty}")
    return t.to_pylist()


def ref_tar(path: str, text: str) -> tuple[list[dict], bool]:
    raw = open(path, "rb").read()
    either = False
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except Exception as exc:  # noqa: BLE001 - OSError, EOFError, zlib.error
            raise Bad(path, f"gzip: {exc}")
        either = True
    trunc = "truncat"
    try:
        tf = tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
        members = []
        for m in tf:
            payload = tf.extractfile(m).read() if m.isfile() else None
            if m.isfile() and len(payload) != m.size:
                raise Bad(path, "member data cut short", must=trunc, mustnt="no .txt member")
            members.append((m, payload))
    except tarfile.ReadError as exc:
        short = "unexpected end" in str(exc) or "truncated" in str(exc)
        raise Bad(path, f"tar: {exc}", must=trunc if short else None,
                  mustnt="no .txt member" if short else None)
    except tarfile.TarError as exc:
        raise Bad(path, f"tar: {exc}")
    tail = raw[tf.offset:tf.offset + 1024]
    if len(tail) < 512 or tail[:512].count(0) != 512:
        short = len(tail) < 512 and tail.count(0) == len(tail)
        raise Bad(path, "no end-of-archive block after the last member",
                  must=trunc if short else None, mustnt="no .txt member" if short else None)
    if tail.count(0) != 1024:
        either = True
    rest = raw[tf.offset + 1024:]
    if rest.count(0) != len(rest):
        # The contract: non-zero bytes after the end-of-archive blocks (a second
        # tar appended, or damage) are an error, never silently ignored.
        raise Bad(path, "data after the end-of-archive blocks")
    field_ = None if text == "text" else text
    rows, cur_key, cur = [], None, None

    def flush():
        if cur_key is None:
            return
        _check_str(cur_key, path, f"sample {cur_key!r}")
        row = {"__key__": cur_key}
        meta = cur.get("json")
        if meta is not None:
            row.update({k: v for k, v in meta.items() if k not in ("__key__", text)})
        if field_ is None:
            if "txt" not in cur:
                raise Bad(path, f"sample {cur_key!r} has no .txt")
            try:
                row[text] = cur["txt"].decode("utf-8")
            except UnicodeDecodeError:
                raise Bad(path, f"sample {cur_key!r} .txt not UTF-8")
        else:
            if meta is None or field_ not in meta or not (
                    meta[field_] is None or isinstance(meta[field_], str)):
                raise Bad(path, f"sample {cur_key!r} has no string field {field_!r}")
            row[text] = meta[field_]
        rows.append(row)

    for m, payload in members:
        if not m.isfile():
            continue
        base = os.path.basename(m.name)
        if "." not in base:
            continue
        stem, ext = base.split(".", 1)
        key = os.path.join(os.path.dirname(m.name), stem)
        if key != cur_key:
            flush()
            cur_key, cur = key, {}
        ext = ext.lower()
        if ext == "txt":
            cur["txt"] = payload
        elif ext == "json":
            if payload.startswith(b"\xef\xbb\xbf") or payload[:1] in (b"\xff", b"\xfe", b"\x00"):
                either = True
            try:
                meta = json.loads(payload)
            except ValueError:
                raise Bad(path, f"{m.name} is not JSON")
            if not isinstance(meta, dict):
                raise Bad(path, f"{m.name} is not a JSON object")
            _check_str(meta, path, m.name)
            cur["json"] = meta
    flush()
    if not _check_fields(rows, path, text):
        either = True
    return rows, either


SHARD_EXT = (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".tar")


def _fmt_of(name: str) -> str | None:
    low = name.lower()
    for e in sorted(SHARD_EXT, key=len, reverse=True):
        if low.endswith(e):
            return e
    return None


def reference(b: Built) -> Ref:
    """What a strict reader makes of the inputs (never opens a FIFO or device)."""
    ref = Ref("valid", text=b.text_column)
    found = []
    try:
        for arg in b.inputs:
            if os.path.isdir(arg):
                hits = []
                for root, dirs, files in os.walk(arg):
                    for f in files:
                        if _fmt_of(f):
                            hits.append(os.path.join(root, f))
                if not hits:
                    raise Bad(arg, "no shard in the directory")
                found += hits
            elif os.path.lexists(arg):
                found.append(arg)
            else:
                raise Bad(arg, "does not exist")
        for p in found:
            try:
                st = os.stat(p)
            except OSError as exc:
                raise Bad(p, f"cannot stat ({exc.strerror})")
            if not stat.S_ISREG(st.st_mode):
                raise Bad(p, "not a regular file")
            if not _fmt_of(p):
                raise Bad(p, "unknown format")
            if not _fmt_of(os.path.realpath(p)):
                ref.status = "either"
        order = sorted(found, key=os.path.realpath)
        for p in order:
            e = _fmt_of(p)
            if e == ".parquet":
                rows, either = ref_parquet(p, b.text_column), False
            elif e == ".tar":
                rows, either = ref_tar(p, b.text_column)
            else:
                rows, either = ref_jsonl(p, b.text_column)
            if either:
                ref.status = "either"
            ref.shards.append((p, rows))
    except Bad as bad:
        ref.status, ref.bad, ref.shards = "invalid", bad, []
        if b.either:
            ref.status = "either_error"  # the file is bad, but only in an acceptable way
    if b.either and ref.status == "valid":
        ref.status = "either"
    return ref


_MATCH_CACHE: dict = {}


def match_ids(text):
    from gpucurate.reference import match_naive

    if text is None:
        return []
    r = _MATCH_CACHE.get(text)
    if r is None:
        if len(_MATCH_CACHE) > 200_000:
            _MATCH_CACHE.clear()
        r = _MATCH_CACHE[text] = match_naive(text, META)
    return r


# ------------------------------------------------------------------ running
def _eq(a, b) -> bool:
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)):
            return False
        return all(_eq(a.get(k), b.get(k)) for k in set(a) | set(b))
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(_eq(x, y) for x, y in zip(a, b)))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def snapshot(root: str, skip: str | None = None) -> dict:
    """(kind, size, mtime_ns, sha256 of regular files) of everything under
    ``root`` (no link followed), ``skip`` left out."""
    snap = {}
    for dirpath, dirs, files in os.walk(root):
        if skip and os.path.abspath(dirpath) == os.path.abspath(skip):
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not (skip and os.path.join(dirpath, d) == skip)]
        for name in files + dirs:
            p = os.path.join(dirpath, name)
            if skip and p == skip:
                continue
            st = os.lstat(p)
            digest = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(p)
            snap[p] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, digest)
    return snap


@dataclass
class Result:
    case: Case
    outcome: str
    detail: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        return f"{self.outcome:15s} {self.case.name}: {self.detail}"


class _Abandon(BaseException):
    pass


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def fast_tmpdir(prefix: str = "gpucurate-fuzz-") -> str:
    """A fresh directory on tmpfs (/dev/shm) when there is one: a case makes
    and removes a dozen files and directories, far faster there than on disk."""
    import tempfile

    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return tempfile.mkdtemp(prefix=prefix, dir=shm)
    return tempfile.mkdtemp(prefix=prefix)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Runner:
    """Runs cases through ``gpucurate.cli.main`` in this process, one at a time.

    ``workdir`` holds the metadata list and one directory per case (removed
    after the case unless ``keep`` is set). A case that runs past ``timeout``
    seconds, or blocks opening a FIFO (seen as a reader holding the FIFO open),
    is a hang; the FIFO is then opened for writing and closed, so the reader
    sees its end and the run goes on. A run whose memory grows past
    ``max_rss_growth`` bytes ends the process (exit 70): it would take the
    machine down otherwise.
    """

    def __init__(self, workdir: str | None = None, timeout: float = 30.0, keep: bool = False,
                 max_rss_growth: int = 4 << 30, extra_args=(), wds: bool = False):
        if workdir is None:
            workdir = fast_tmpdir()
        self.workdir = os.path.realpath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.meta = os.path.join(self.workdir, "metadata.json")
        with open(self.meta, "w", encoding="utf-8") as f:
            json.dump(META, f, ensure_ascii=False)
        self.timeout, self.keep, self.max_rss_growth = timeout, keep, max_rss_growth
        self.extra_args = list(extra_args)
        self.wds = wds  # tar cases: --outputs webdataset too, its tars judged as well
        if wds:
            self.extra_args += ["--outputs", "parquet,webdataset", "--samples-per-shard", "7"]
        self.n = 0
        self.abandoned = 0

    def argv(self, b: Built, out: str) -> list[str]:
        return (["curate", "--metadata", self.meta, "--input", *b.inputs, "--out", out,
                 "--t", "1000000000", "--device", "cpu", "--threads", "1", "--no-report",
                 "--quiet", "--text-column", b.text_column] + self.extra_args)

    def warm_up(self) -> None:
        """Build the engine once (numba compile or load, trie) in this thread,
        outside any case's clock (a compile cut short by the time limit would
        leave numba's locks taken)."""
        from gpucurate.cli import main

        d = os.path.join(self.workdir, "warm-up")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, "in"))
        b = build(Case("tar" if self.wds else "parquet", "valid", 0), os.path.join(d, "in"), d)
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            rc = main(self.argv(b, os.path.join(d, "out")))
        shutil.rmtree(d, ignore_errors=True)
        if rc != 0:
            raise RuntimeError(f"the warm-up curation failed (exit {rc})")

    def _call(self, argv, fifos):
        from gpucurate.cli import main

        box: dict = {}

        def target():
            try:
                box["rc"] = main(argv)
            except _Abandon:
                box["abandoned"] = True
            except BaseException:  # noqa: BLE001 - anything escaping main is the finding
                box["exc"] = traceback.format_exc()

        t = threading.Thread(target=target, daemon=True)
        base = _rss()
        t0 = time.monotonic()
        t.start()
        hang = None
        while t.is_alive():
            t.join(0.01)
            for f in fifos:
                try:
                    fd = os.open(f, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    continue
                hang = hang or f"blocked reading FIFO {f}"
                os.close(fd)
            if _rss() - base > self.max_rss_growth:
                print(f"fuzz: memory runaway in {argv}; stopping", flush=True)
                os._exit(70)
            if time.monotonic() - t0 > self.timeout and t.is_alive():
                hang = hang or f"no exit after {self.timeout:.0f} s"
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(t.ident),
                                                           ctypes.py_object(_Abandon))
                t.join(5)
                if t.is_alive():
                    self.abandoned += 1
                break
        return box, hang

    def run(self, case: Case) -> Result:
        self.n += 1
        cdir = os.path.join(self.workdir, f"case-{self.n:06d}")
        if os.path.lexists(cdir):
            shutil.rmtree(cdir)
        indir, out, sentinel = (os.path.join(cdir, d) for d in ("in", "out", "sentinel"))
        for d in (indir, out, sentinel):
            os.makedirs(d)
        with open(os.path.join(sentinel, "notes.txt"), "w") as f:
            f.write("outside OUT\n")
        os.symlink(sentinel, os.path.join(out, "sentinel-link"))
        t0 = time.perf_counter()
        try:
            b = build(case, indir, sentinel)
            ref = reference(b)
        except Exception:  # noqa: BLE001 - a harness fault, not an engine finding
            raise RuntimeError(f"building {case.name} failed:\n{traceback.format_exc()}")
        before = snapshot(cdir, skip=out)
        meta_sha = hashlib.sha256(open(self.meta, "rb").read()).hexdigest()
        rec = _Records()
        lg = logging.getLogger("gpucurate")
        lg.addHandler(rec)
        err, sout = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(sout):
                box, hang = self._call(self.argv(b, out), b.fifos)
        finally:
            lg.removeHandler(rec)
        after = snapshot(cdir, skip=out)
        res = Result(case, *self._judge(b, ref, box, hang, rec.records, err.getvalue(), out,
                                        before, after, meta_sha))
        res.seconds = time.perf_counter() - t0
        if not self.keep and (res.outcome in ("correct", "clean_error") or
                              os.environ.get("FUZZ_KEEP") != "1"):
            shutil.rmtree(cdir, ignore_errors=True)
        return res

    def _judge(self, b, ref, box, hang, records, stderr, out, before, after, meta_sha):
        if hang:
            return "hang", hang
        if "exc" in box:
            return "traceback", box["exc"].strip().splitlines()[-1]
        if "Traceback" in stderr:
            return "traceback", "printed: " + stderr.strip().splitlines()[-1]
        changed = sorted(set(before) ^ set(after) | {p for p in before if p in after and
                                                    before[p] != after[p]})
        if hashlib.sha256(open(self.meta, "rb").read()).hexdigest() != meta_sha:
            changed.append(self.meta)
        if changed:
            return "outside_touched", ", ".join(os.path.relpath(p, self.workdir) for p in changed)
        rc = box.get("rc")
        errors = [r for r in records if r.levelno >= logging.ERROR]
        if rc == 2:
            if ref.status in ("valid", "either") and not ref.bad:
                if ref.status == "valid":
                    msg = errors[0].getMessage() if errors else ""
                    return "rejected_valid", f"[{ref_desc(ref)}] {msg}"
            if len(errors) != 1:
                return "bad_error", f"{len(errors)} ERROR records"
            msg = errors[0].getMessage()
            if "\n" in msg:
                return "bad_error", f"message of several lines: {msg!r}"
            if errors[0].exc_info:
                return "bad_error", "error logged with a traceback"
            named = [ref.bad.path] if ref.bad is not None else [p for p, _ in ref.shards]
            names = {x for p in named + list(b.inputs)
                     for x in (p, os.path.abspath(p), os.path.realpath(p))}
            if not any(n in msg for n in names):
                return "bad_error", f"does not name {', '.join(named or b.inputs)}: {msg}"
            if ref.bad is not None:
                if ref.bad.must and not re.search(ref.bad.must, msg):
                    return "bad_error", f"[{ref.bad.why}] wants /{ref.bad.must}/: {msg}"
                if ref.bad.mustnt and re.search(re.escape(ref.bad.mustnt), msg):
                    return "bad_error", f"[{ref.bad.why}] says {ref.bad.mustnt!r}: {msg}"
            return "clean_error", msg
        if rc != 0:
            return "traceback", f"exit {rc}"
        if ref.status in ("invalid", "either_error"):
            return "silent_wrong", f"exit 0, but {ref.bad}"
        return self._compare(ref, out)

    def _compare(self, ref, out):
        exp, counts, pool = [], Counter(), 0
        for _, rows in ref.shards:
            for r in rows:
                pool += 1
                ids = match_ids(r.get(ref.text))
                counts.update(ids)
                if ids:
                    exp.append(dict(r, entry_ids=ids))
        try:
            parts = sorted(glob.glob(os.path.join(out, "curated", "part-*.parquet")))
            got = []
            for p in parts:
                got += pq.read_table(p).to_pylist()
            ec = pq.read_table(os.path.join(out, "entry_counts.parquet"))
            gc = {e: c for e, c in zip(ec.column("entry_id").to_pylist(),
                                       ec.column("count").to_pylist()) if c}
            summary = json.load(open(os.path.join(out, "summary.json")))
        except Exception as exc:  # noqa: BLE001
            return "silent_wrong", f"exit 0 but outputs unreadable: {exc}"
        if len(parts) != len(ref.shards):
            return "silent_wrong", f"{len(parts)} curated parts for {len(ref.shards)} shards"
        if summary.get("pool") != pool:
            return "silent_wrong", f"pool {summary.get('pool')} != {pool} rows in the file"
        if gc != dict(counts):
            diff = {e for e in set(gc) | set(counts) if gc.get(e) != counts.get(e)}
            return "silent_wrong", f"entry counts differ at {sorted(diff)[:5]}"
        if len(got) != len(exp):
            return "silent_wrong", f"{len(got)} curated rows != {len(exp)} expected"
        for i, (g, e) in enumerate(zip(got, exp)):
            if not _eq(g, e):
                bad = sorted(k for k in set(g) | set(e) if not _eq(g.get(k), e.get(k)))
                return "silent_wrong", (f"curated row {i} differs in {bad}: "
                                        f"{ {k: g.get(k) for k in bad} } != "
                                        f"{ {k: e.get(k) for k in bad} }")[:400]
        if self.wds:
            why = _compare_wds(ref, out)
            if why:
                return "silent_wrong", why
        return "correct", f"{pool} rows, {len(exp)} curated"


def _samples(raw: bytes) -> list:
    """[(key, [(member name, bytes)])] of a tar, in order (tarfile reads it;
    WebDataset's key rule; members of no sample left out)."""
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    out: list = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        for m in tf:
            base = os.path.basename(m.name)
            if not m.isfile() or "." not in base:
                continue
            key = os.path.join(os.path.dirname(m.name), base.split(".", 1)[0])
            if not out or out[-1][0] != key:
                out.append((key, []))
            out[-1][1].append((m.name, tf.extractfile(m).read()))
    return out


def _compare_wds(ref, out) -> str | None:
    """Why ``OUT/curated-wds`` is not the kept samples of the input tars, in
    input order, each member as it was but the ``.json``, which gains
    ``entry_ids`` (created when absent); None when it is."""
    want = []
    for path, rows in ref.shards:
        kept = {r["__key__"]: match_ids(r.get(ref.text)) for r in rows}
        for key, members in _samples(open(path, "rb").read()):
            if kept.get(key):
                want.append((key, members, kept[key]))
    try:
        d = os.path.join(out, "curated-wds")
        got = []
        for f in sorted(x for x in os.listdir(d) if x.endswith(".tar")):
            got += _samples(open(os.path.join(d, f), "rb").read())
        sizes = json.load(open(os.path.join(d, "sizes.json")))
    except Exception as exc:  # noqa: BLE001
        return f"webdataset output unreadable: {exc}"
    if sum(sizes.values()) != len(want) or len(got) != len(want):
        return f"webdataset: {len(got)} samples ({sum(sizes.values())} in sizes.json) for " \
            f"{len(want)} kept"
    def is_json(name):  # the extension after the base name's first dot, as the writer reads it
        return os.path.basename(name).split(".", 1)[1].lower() == "json"

    for (gk, gm), (wk, wm, ids) in zip(got, want):
        if gk != wk:
            return f"webdataset: sample {gk!r} where {wk!r} was kept"
        wj = [i for i, (n, _) in enumerate(wm) if is_json(n)]
        wmeta = dict(json.loads(wm[wj[0]][1])) if wj else {}
        wmeta["entry_ids"] = ids
        rest = [m for i, m in enumerate(wm) if not wj or i != wj[0]]
        gj = [i for i, (n, _) in enumerate(gm) if is_json(n)]
        if not gj:
            return f"webdataset: sample {gk!r} has no .json"
        i = gj[0] if wj else gj[-1]  # an added .json comes last
        if json.loads(gm[i][1]) != wmeta:
            return f"webdataset: sample {gk!r} .json {gm[i][1][:200]!r} != {wmeta!r}"[:400]
        if [m for k, m in enumerate(gm) if k != i] != rest:
            return f"webdataset: sample {gk!r}'s members differ from the input's"
    return None


def ref_desc(ref) -> str:
    return f"{sum(len(r) for _, r in ref.shards)} rows valid"


def all_cases(fmt: str, include_slow: bool = False) -> list[str]:
    return [c for c in CLASSES[fmt] if include_slow or (fmt, c) not in SLOW]


def summarize(results) -> dict:
    """{outcome: count}, {fmt: {outcome: count}}, {(fmt, cls): {outcome: count}}."""
    total = Counter(r.outcome for r in results)
    by_fmt: dict = {}
    by_cls: dict = {}
    for r in results:
        by_fmt.setdefault(r.case.fmt, Counter())[r.outcome] += 1
        by_cls.setdefault(f"{r.case.fmt}/{r.case.cls}", Counter())[r.outcome] += 1
    return {"total": dict(total), "by_format": {k: dict(v) for k, v in by_fmt.items()},
            "by_class": {k: dict(v) for k, v in sorted(by_cls.items())}}
