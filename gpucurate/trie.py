"""The word-level trie of a metadata list: build, cache on disk, reload.

Why word level: every pattern ``" " + e + " "`` starts and ends at a space, so
a match is a run of whole tokens of the spaced caption (see
``gpucurate.kernels.routines``). Each caption token is hashed once and looked
up in a vocabulary table; the trie's edges are token ids. On the 500k-entry
list this walks ~5x fewer dependent reads per caption than a byte-level trie
(bench/README.md has the numbers).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import mmap
import os
import stat
import threading
import time
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import cache_dir
from .errors import MetadataError
from .log import logger
from .metadata import Metadata, load_metadata

FORMAT = 8

# Vocabulary table slots per distinct entry token (load 0.5: a token that is
# no entry's ends its probe sooner; 2.0 was 0-7% faster than 1.5 on one thread).
VOCAB_SLOTS_PER_TOKEN = 2.0


@dataclass(frozen=True)
class WordTrie:
    """Flat arrays of the trie (all host NumPy; layout in kernels/walk.py)."""

    vtag: np.ndarray     # uint8 vocabulary table tags, 1 per slot
    vrec: np.ndarray     # uint64 vocabulary table records, 4 words per slot
    voff: np.ndarray     # int64 vocabulary offsets
    vbytes: np.ndarray   # uint8 vocabulary bytes
    cbits: np.ndarray    # uint8 children filters, 4 bits per children-table slot
    ctag: np.ndarray     # uint8 children tables tags, 1 per slot
    crec: np.ndarray     # uint64 children tables records, 2 words per slot
    tlist: np.ndarray    # int32 entry-id lists of nodes where several entries end
    n_nodes: int
    n_entries: int
    n_unmatchable: int
    sha256: str

    def __post_init__(self):
        # Records start on cache-line boundaries: a 32-byte vocabulary record
        # then never straddles two lines (NumPy aligns to 16 bytes only).
        for f in fields(self):
            a = getattr(self, f.name)
            if isinstance(a, np.ndarray) and a.ctypes.data % CACHE_LINE:
                object.__setattr__(self, f.name, _aligned(a))

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self)
                   if isinstance(getattr(self, f.name), np.ndarray))

    def arrays(self) -> tuple:
        """The arrays in the order of ``kernels.layout.WORD`` (``vn``: the
        vocabulary table's slot count)."""
        from .kernels.layout import WORD

        derived = {"vn": np.uint64(self.vtag.size)}
        return tuple(derived[n] if n in derived else getattr(self, n) for n in WORD)


CACHE_LINE = 64


def _aligned(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` whose data starts on a CACHE_LINE boundary."""
    raw = np.empty(a.nbytes + CACHE_LINE, np.uint8)
    k = -raw.ctypes.data % CACHE_LINE
    out = raw[k:k + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _pow2(n: int) -> int:
    return 1 << max(4, int(n - 1).bit_length())


def build_trie(metadata) -> WordTrie:
    """Build the trie of a metadata list (no cache; see :func:`load_trie`)."""
    from .kernels import trie_build as tb

    md = load_metadata(metadata)
    if len(md) >= 2**30:
        raise MetadataError(f"{md.source}: {len(md):,} entries; at most 2**30 - 1 are supported")
    arr = md.arrow().cast(pa.large_string())
    toks = pc.split_pattern(arr, " ")
    eoff = toks.offsets.to_numpy().astype(np.int64)
    enc = pc.dictionary_encode(toks.values)
    etok = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    vocab = enc.dictionary.cast(pa.large_string())
    vbuf = vocab.buffers()
    voff = np.frombuffer(vbuf[1], np.int64)[vocab.offset: vocab.offset + len(vocab) + 1]
    data = np.frombuffer(vbuf[2], np.uint8) if vbuf[2] is not None else np.zeros(0, np.uint8)
    vbytes = data[voff[0]: voff[-1]].copy()
    voff = voff - voff[0]
    n_vocab = len(vocab)
    if n_vocab and int(np.diff(voff).max()) >= 2**24:
        raise MetadataError(f"{md.source}: a word of 16 MiB or more; words (runs between "
                            "spaces) must be shorter")

    ok = tb.matchable_entries(eoff, etok, tb.token_kinds(voff, vbytes))
    n_deep = int(etok.size - len(md))
    ekeys = np.full(_pow2(2 * max(n_deep, 1)), np.uint64(0xFFFFFFFFFFFFFFFF), np.uint64)
    evals = np.zeros(ekeys.size, np.int32)
    node_of_entry, n_nodes = tb.insert_entries(eoff, etok, ok, n_vocab, ekeys, evals)
    vn = max(16, int(n_vocab * VOCAB_SLOTS_PER_TOKEN) + 1)
    vtag, vrec, cbits, ctag, crec, tlist, n_slots = tb.layout(voff, vbytes, node_of_entry, n_nodes, ekeys, evals, vn)
    if n_slots >= 2**32:
        raise MetadataError(f"{md.source}: the trie is too large (2**32 child slots or more)")
    n_matchable = int(np.count_nonzero(node_of_entry >= 0))
    return WordTrie(vtag, vrec, voff, vbytes, cbits, ctag, crec, tlist, int(n_nodes), len(md),
                    len(md) - n_matchable, md.sha256)


@functools.cache
def _code_hash() -> str:
    """Hash of the code that lays the trie out, so a cached trie is never read
    by code that lays it out differently (even if FORMAT was not bumped): this
    module, the builder and the routines whose keys, hashes and tags it stores
    (their files, found without running them: the builder imports numba)."""
    kdir = os.path.dirname(importlib.util.find_spec("gpucurate.kernels").origin)
    h = hashlib.sha256(str(FORMAT).encode())
    for mod in (__file__, *(os.path.join(kdir, f"{m}.py") for m in
                            ("trie_build", "routines", "consts", "hashing", "scan", "walk"))):
        with open(mod, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def cache_path(kind: str, sha256: str) -> str:
    """Where the cache keeps a built ``kind`` (``trie``, ``bytes``) of a list."""
    name = f"{sha256[:40]}-v{FORMAT}-{_code_hash()}.bin" if kind == "trie" else \
        f"{sha256[:40]}-{kind}-v{FORMAT}-{_code_hash()}.bin"
    return os.path.join(cache_dir(), "trie", name)


# A cache file: MAGIC, the header's length (uint64, little-endian), the header
# (JSON: each array's dtype, shape and offset, the other fields, the list's
# SHA-256 and the CRC-32 of each CRC_WINDOW of what follows the header, padded
# with spaces so that the arrays start on a PAGE boundary), then the arrays,
# each starting on a CACHE_LINE boundary. It is mapped into memory
# copy-on-write (private, writable, so numba sees the arrays it compiled for)
# and its arrays are views of the mapping: no copy, no anonymous memory, pages
# shared with the page cache. The cache is written by rename, so a mapped file
# is never changed.
PAGE = 4096
MAGIC = b"GPUCURATE-TABLES\n"


# The data's CRC-32 is kept per window of this many bytes, so that a load
# checks the windows on every core at once (zlib releases the GIL): the
# worldwide tables are ~0.5 GB, 0.19 s of one core.
CRC_WINDOW = 32 << 20


def _checksums(data: np.ndarray) -> list:
    """CRC-32 of each CRC_WINDOW of a buffer (zlib's runs at several GB/s): a
    cached file changed on disk, by hand or by a fault, is rebuilt, never
    used."""
    import zlib

    windows = [data[i:i + CRC_WINDOW] for i in range(0, data.size, CRC_WINDOW)]
    if len(windows) < 2:
        return [zlib.crc32(w) & 0xFFFFFFFF for w in windows]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(len(windows), os.cpu_count() or 1)) as ex:
        return [c & 0xFFFFFFFF for c in ex.map(zlib.crc32, windows)]


def cache_load(kind: str, sha256: str, cls):
    """The cached ``cls`` of the list ``sha256``, or None (absent, unreadable,
    or not matching its checksum: then it is rebuilt)."""
    import json

    path = cache_path(kind, sha256)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 8)
            if head[:len(MAGIC)] != MAGIC or len(head) < len(MAGIC) + 8:
                raise ValueError("not a cache file")
            hlen = int.from_bytes(head[len(MAGIC):], "little")
            if hlen > 1 << 20:
                raise ValueError("header too long")
            header = json.loads(f.read(hlen))
            start, size = len(MAGIC) + 8 + hlen, int(header["data_bytes"])
            if start % PAGE or os.fstat(f.fileno()).st_size != start + size:
                raise ValueError("truncated, extended or not aligned")
            if size:
                mm = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE)
                data = np.frombuffer(mm, np.uint8, size, start)
            else:
                data = np.zeros(0, np.uint8)
        if header.get("list_sha256") != sha256 or header.get("crc32") != _checksums(data):
            logger.warning("cache file %s does not match its checksum (or another metadata "
                           "list); rebuilding it", path)
            return None
        kw = {}
        for fd in fields(cls):
            if fd.type == "np.ndarray":
                a = header["arrays"][fd.name]
                dt = np.dtype(a["dtype"])
                n = int(np.prod(a["shape"], dtype=np.int64)) * dt.itemsize
                kw[fd.name] = data[a["offset"]:a["offset"] + n].view(dt).reshape(a["shape"])
            else:
                kw[fd.name] = (str if fd.type == "str" else int)(header["fields"][fd.name])
        _used(path)
        return cls(**kw)
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("cache file %s is unreadable; rebuilding it", path)
    return None


def cache_save(kind: str, sha256: str, obj) -> None:
    import json

    path = cache_path(kind, sha256)
    arrays, scalars, chunks, pos = {}, {}, [], 0
    for fd in fields(obj):
        v = getattr(obj, fd.name)
        if isinstance(v, np.ndarray):
            pad = -pos % CACHE_LINE
            if pad:
                chunks.append(b"\0" * pad)
                pos += pad
            v = np.ascontiguousarray(v)
            arrays[fd.name] = {"dtype": v.dtype.str, "shape": list(v.shape), "offset": pos}
            chunks.append(memoryview(v).cast("B"))
            pos += v.nbytes
        else:
            scalars[fd.name] = v
    crcs, crc, left = [], 0, CRC_WINDOW  # the windows' CRCs, across the chunks' bounds
    import zlib

    for c in chunks:
        c = memoryview(c).cast("B")
        while len(c):
            k = min(left, len(c))
            crc = zlib.crc32(c[:k], crc)
            c, left = c[k:], left - k
            if not left:
                crcs.append(crc & 0xFFFFFFFF)
                crc, left = 0, CRC_WINDOW
    if left < CRC_WINDOW:
        crcs.append(crc & 0xFFFFFFFF)
    header = json.dumps({"list_sha256": sha256, "arrays": arrays, "fields": scalars,
                         "data_bytes": pos, "crc32": crcs}).encode()
    header += b" " * (-(len(MAGIC) + 8 + len(header)) % PAGE)  # the arrays on a page
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"  # per thread: two may build it
        with open(tmp, "wb") as f:
            f.write(MAGIC + len(header).to_bytes(8, "little") + header)
            for c in chunks:
                f.write(c)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("could not write the cache file %s: %s", path, exc)
        return
    prune_cache(os.path.dirname(path), keep=path)


# Cache files unused this long are removed whenever a file is written (a new
# list, or a new version of gpucurate laying tries out anew): each version
# leaves files of its own (a worldwide set is ~0.5 GB), and a file in use is
# never this old (loading it marks it used).
PRUNE_AFTER_S = 7 * 24 * 3600


def _used(path: str) -> None:
    try:
        os.utime(path)
    except OSError:
        pass  # a read-only cache still serves


def prune_cache(directory: str, keep: str | None = None) -> list:
    """Remove the trie cache's files (``.bin``, older formats' ``.npz``, and
    temporary files of writers that died) not used for PRUNE_AFTER_S; return
    their paths. Only regular files of those names, never ``keep``."""
    cutoff = time.time() - PRUNE_AFTER_S
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(directory, name)
        if path == keep or not name.endswith((".bin", ".npz", ".tmp")):
            continue
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                os.remove(path)
                removed.append(path)
        except OSError:
            continue  # another process removed or replaced it
    if removed:
        logger.info("removed %d trie cache file(s) unused for %d days from %s", len(removed),
                    PRUNE_AFTER_S // 86400, directory)
    return removed


def cached_trie(sha256: str, unmatchable: bool = True) -> WordTrie | None:
    """The cached word trie of the list ``sha256``, or None."""
    trie = cache_load("trie", sha256, WordTrie)
    if trie is not None and trie.sha256 == sha256:
        _report(trie, "loaded from cache", 0.0, unmatchable)
        return trie
    return None


def load_trie(metadata, cache: bool = True, unmatchable: bool = True) -> WordTrie:
    """The trie of ``metadata``, from the on-disk cache when it holds one.

    The cache key is the SHA-256 of the metadata list and the trie format;
    files are written atomically, so concurrent processes may share the cache.
    ``unmatchable``: log how many entries can never match (not for a
    worldwide word trie, whose placeholders stand for the byte trie's entries).
    """
    md: Metadata = load_metadata(metadata)
    if cache:
        trie = cached_trie(md.sha256, unmatchable)
        if trie is not None:
            return trie
    from .compiled import compile_notice
    from .kernels import trie_build as tbld

    compile_notice("the trie builder", tbld.token_kinds, tbld.matchable_entries,
                   tbld.insert_entries)
    t0 = time.perf_counter()
    trie = build_trie(md)
    _report(trie, "built", time.perf_counter() - t0, unmatchable)
    if cache:
        cache_save("trie", md.sha256, trie)
    return trie


def _report(trie: WordTrie, how: str, seconds: float, unmatchable: bool = True) -> None:
    logger.info("trie %s: %s entries, %s nodes, %.1f MB%s", how, f"{trie.n_entries:,}",
                f"{trie.n_nodes:,}", trie.nbytes / 1e6,
                f" in {seconds:.2f} s" if seconds else "")
    if trie.n_unmatchable and unmatchable:
        logger.info("%s entries can never match (a tab or newline, one of , . ; : ? ! ` "
                    "without a space on each side, or two of them one space apart)",
                    f"{trie.n_unmatchable:,}")
