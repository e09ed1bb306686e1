"""Everything one metadata list is matched with: the word-level trie, the byte
trie of entries that may match inside words, and whether captions are stripped.

* MetaCLIP 1: every entry in the word trie, an empty byte trie, no strip.
* MetaCLIP 2 (worldwide): entries padded on both sides in the word trie (the
  others stand in it as a placeholder that never matches, so ids are kept),
  the rest in the byte trie; captions are ``str.strip()``-ed first.

``args()`` is the tuple the kernels take: ``(word arrays, byte arrays, strip)``,
in the orders named in ``gpucurate.kernels.layout``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, replace

import numpy as np

from .bytetrie import ByteTrie, build_byte_trie, empty_byte_trie, padded_both, spaced_ww
from .metadata import Metadata, load_metadata
from .trie import WordTrie, cache_load, cache_save, cached_trie, load_trie

NEVER = "\t"  # a tab: no spaced caption holds one, so this entry never matches


@dataclass(frozen=True)
class MatchTables:
    word: WordTrie
    byte: ByteTrie
    strip: bool
    n_entries: int

    @property
    def nbytes(self) -> int:
        return self.word.nbytes + self.byte.nbytes

    def args(self) -> tuple:
        """The kernels' tables argument (order: ``kernels.layout.TABLES``)."""
        return (self.word.arrays(), self.byte.arrays(), np.uint8(self.strip))

    def writable(self) -> "MatchTables":
        """These tables with own copies of read-only arrays (e.g. zero-copy
        from Ray's object store), so numba runs the code it compiled for a
        local run (a read-only array is another type to numba)."""
        return replace(self, word=_writable(self.word), byte=_writable(self.byte))


def _writable(trie):
    kw = {}
    for f in fields(trie):
        v = getattr(trie, f.name)
        if isinstance(v, np.ndarray) and not v.flags.writeable:
            kw[f.name] = v.copy()
    return replace(trie, **kw) if kw else trie


def from_trie(trie: WordTrie) -> MatchTables:
    """MetaCLIP 1 tables of a word trie already built."""
    return MatchTables(trie, empty_byte_trie(), False, trie.n_entries)


def load_tables(metadata, cache: bool = True) -> MatchTables:
    """MetaCLIP 1 tables (the word trie alone)."""
    md = load_metadata(metadata)
    return MatchTables(load_trie(md, cache=cache), empty_byte_trie(), False, len(md))


_WW: dict = {}  # this process's MetaCLIP 2 tables, by the metadata's SHA-256


def load_tables_ww(metadata, cache: bool = True) -> MatchTables:
    """MetaCLIP 2 tables of one language's metadata (built once per process;
    both tries from the on-disk cache when it holds them, with no pass over
    the entries)."""
    md: Metadata = load_metadata(metadata)
    if cache and md.sha256 in _WW:
        return _WW[md.sha256]
    # The word trie's list: the entries, a placeholder for those only the byte
    # trie matches. It comes from a validated list, so it is not checked again;
    # its cache key derives from the list's SHA-256.
    word_sha = hashlib.sha256(f"worldwide-words:{md.sha256}".encode()).hexdigest()
    # (its "never match" count would count the placeholders: not logged)
    word = cached_trie(word_sha, unmatchable=False) if cache else None
    byte = cache_load("bytes", md.sha256, ByteTrie) if cache else None
    if word is None or byte is None:
        whole = [padded_both(e) for e in md.entries]
        if word is None:
            words = tuple(e if w else NEVER for e, w in zip(md.entries, whole))
            word = load_trie(Metadata(words, f"{md.source} (word trie)", word_sha), cache=cache,
                             unmatchable=False)
        if byte is None:
            ids = [i for i, w in enumerate(whole) if not w]
            byte = build_byte_trie([spaced_ww(md.entries[i]) for i in ids], ids)
            if cache:
                cache_save("bytes", md.sha256, byte)
    t = MatchTables(word, byte, True, len(md))
    if cache:
        _WW[md.sha256] = t
    return t
