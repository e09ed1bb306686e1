"""The byte-level trie of the worldwide (MetaCLIP 2) entries that are not
padded on both sides (see ``gpucurate.kernels.bytewalk``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import numpy as np

from .reference import is_cjk_or_similar, spaced_entry_ww  # noqa: F401 (re-exported)


_cjk = functools.lru_cache(maxsize=None)(is_cjk_or_similar)  # a few thousand distinct chars


def padded_both(entry: str) -> bool:
    """True when MetaCLIP 2 pads the entry on both sides (a whole-token entry)."""
    return not _cjk(entry[0]) and not _cjk(entry[-1])


def spaced_ww(entry: str) -> str:
    """``reference.spaced_entry_ww`` with the character test memoized."""
    return f"{'' if _cjk(entry[0]) else ' '}{entry}{'' if _cjk(entry[-1]) else ' '}"


@dataclass(frozen=True)
class ByteTrie:
    broot: np.ndarray   # int32[256] children of the root
    bkeys: np.ndarray   # uint64 edge keys (node << 8 | byte)
    bvals: np.ndarray   # int32 edge children
    btoff: np.ndarray   # int64 terminal offsets per node
    btids: np.ndarray   # int32 entry ids per node
    bhasch: np.ndarray  # uint8 node has children

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self))

    @property
    def n_patterns(self) -> int:
        return int(self.btids.size)

    def arrays(self) -> tuple:
        """The arrays in the order of ``kernels.layout.BYTE`` (``bmask``: the
        edge table's hash mask)."""
        from .kernels.layout import BYTE

        derived = {"bmask": np.uint64(self.bkeys.size - 1)}
        return tuple(derived[n] if n in derived else getattr(self, n) for n in BYTE)


def build_byte_trie(patterns: list[str], ids) -> ByteTrie:
    """Byte trie of the padded patterns (UTF-8), pattern i ending in entry ids[i]."""
    from .kernels.bytewalk import EMPTY
    from .kernels.trie_build import insert_patterns

    if not patterns:  # MetaCLIP 1: the same arrays, without loading the compiled builder
        insert_patterns = insert_patterns.py_func

    enc = [p.encode("utf-8") for p in patterns]
    poff = np.zeros(len(enc) + 1, np.int64)
    np.cumsum([len(b) for b in enc], out=poff[1:])
    pbytes = np.frombuffer(b"".join(enc), np.uint8) if enc else np.zeros(1, np.uint8)
    if not pbytes.size:
        pbytes = np.zeros(1, np.uint8)
    cap = 1 << max(4, int(2 * max(int(poff[-1]), 1) - 1).bit_length())
    bkeys = np.full(cap, EMPTY, np.uint64)
    bvals = np.zeros(cap, np.int32)
    pids = np.asarray(ids, np.int32)
    broot, node_of, hasch, n_nodes = insert_patterns(poff, pbytes, bkeys, bvals)
    order = np.argsort(node_of, kind="stable")
    btids = pids[order].astype(np.int32)
    btoff = np.zeros(n_nodes + 1, np.int64)
    np.cumsum(np.bincount(node_of, minlength=n_nodes), out=btoff[1:])
    return ByteTrie(broot, bkeys, bvals, btoff, btids, hasch)


def empty_byte_trie() -> ByteTrie:
    return build_byte_trie([], [])
