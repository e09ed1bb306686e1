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
    """MetaCLIP's matcher as users run it: spacing + pyahocorasick + set.

    ``worldwide=True``: MetaCLIP 2's (``metaclip/curation/substr_matching.py``):
    keys padded by :func:`spaced_entry_ww`, captions stripped before spacing.
    """

    def __init__(self, entries, worldwide: bool = False):
        import ahocorasick

        self.worldwide = worldwide
        ids: dict[str, list[int]] = {}
        for i, e in enumerate(entries):
            ids.setdefault(spaced_entry_ww(e) if worldwide else f" {e} ", []).append(i)
        self.automaton = ahocorasick.Automaton()
        for key, value in ids.items():
            self.automaton.add_word(key, value)
        self.automaton.make_automaton()

    def match(self, text: str | None) -> list[int]:
        if text is None:
            return []
        found: set[int] = set()
        for _, ids in self.automaton.iter(spacing(text.strip() if self.worldwide else text)):
            found.update(ids)
        return sorted(found)


# ------------------------------------------------------------ MetaCLIP 2
# ``metaclip/curation/substr_matching.py``: an entry is padded with a space on a
# side only when the character there is not "CJK or similar".
CJK_OR_SIMILAR_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF),
    (0x2E80, 0x2EFF), (0x2F00, 0x2FDF), (0x2FF0, 0x2FFF),
    (0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x0F00, 0x0FFF),
)
ADDITIONAL_PUNCTUATION = "，。、；：？！“”‘’（）【】《》〈〉「」『』～—"


def is_cjk_or_similar(char: str) -> bool:
    import string

    cp = ord(char)
    if any(a <= cp <= b for a, b in CJK_OR_SIMILAR_RANGES):
        return True
    return char in string.punctuation or char in ADDITIONAL_PUNCTUATION


def spaced_entry_ww(entry: str) -> str:
    """MetaCLIP 2's padded form of an entry (``get_spaced_metadata``)."""
    left = "" if is_cjk_or_similar(entry[0]) else " "
    right = "" if is_cjk_or_similar(entry[-1]) else " "
    return f"{left}{entry}{right}"


def match_naive_ww(text: str | None, entries) -> list[int]:
    """Sorted ids of the entries whose padded form occurs in spacing(text.strip())."""
    if text is None:
        return []
    spaced = spacing(text.strip())
    return [i for i, e in enumerate(entries) if spaced_entry_ww(e) in spaced]
