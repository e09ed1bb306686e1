"""The slow references every engine is held against.

``spacing`` and ``match_naive`` transcribe the rule text directly (MetaCLIP 1,
``metaclip1/substr_matching.py``, with gpucurate's documented departures: a
duplicated entry matches under each of its ids, a null caption has no match).
``AhoCorasickReference`` is MetaCLIP's faster form of the same loop, with each
key mapped to all of its ids; it needs the ``pyahocorasick`` package.
"""

from __future__ import annotations

WRAPPED = (",", ".", ";", ":", "?", "!", "`")
SPACED = ("\t", "\n", "\r")


def spacing(text: str) -> str:
    """MetaCLIP's ``spacing``: pad, wrap , . ; : ? ! ` in spaces, \\t\\n\\r -> space."""
    text = f" {text} "
    for c in WRAPPED:
        text = text.replace(c, f" {c} ")
    for c in SPACED:
        text = text.replace(c, " ")
    return text


def match_naive(text: str | None, entries) -> list[int]:
    """Sorted ids of the entries ``e`` with ``" " + e + " "`` in ``spacing(text)``."""
    if text is None:
        return []
    spaced = spacing(text)
    return [i for i, e in enumerate(entries) if f" {e} " in spaced]


def can_ever_match(entry: str) -> bool:
    """False for entries no caption can match.

    That is: the entry holds \\t, \\n or \\r; or one of , . ; : ? ! ` in it lacks a
    space on either side (the padding spaces count); or two of them stand with
    exactly one space between them (``spacing`` always leaves two).
    """
    if any(c in entry for c in SPACED):
        return False
    padded = f" {entry} "
    for i, c in enumerate(padded):
        if c in WRAPPED and (padded[i - 1] != " " or padded[i + 1] != " "):
            return False
        # spacing() puts two spaces between any two wrapped characters, so
        # "! ," (one space between them) never occurs in a spaced text.
        if c in WRAPPED and padded[i + 2: i + 3] in WRAPPED and padded[i + 2: i + 3]:
            return False
    return True


class AhoCorasickReference:
    """MetaCLIP's matcher as users run it: spacing + pyahocorasick + set."""

    def __init__(self, entries):
        import ahocorasick

        ids: dict[str, list[int]] = {}
        for i, e in enumerate(entries):
            ids.setdefault(f" {e} ", []).append(i)
        self.automaton = ahocorasick.Automaton()
        for key, value in ids.items():
            self.automaton.add_word(key, value)
        self.automaton.make_automaton()

    def match(self, text: str | None) -> list[int]:
        if text is None:
            return []
        found: set[int] = set()
        for _, ids in self.automaton.iter(spacing(text)):
            found.update(ids)
        return sorted(found)
