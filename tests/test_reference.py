"""The two references agree with each other before anything is held against them."""

import random
import re

from hypothesis import given, settings, strategies as st

from gpucurate.reference import AhoCorasickReference, can_ever_match, match_naive, spacing

ALPHABET = list("ab ,.;:?!`\t\n\r") + ["\u00a0", "\u3000", "猫", "é", "😀", "\u0301", "\x0b"]


def test_spacing_is_metaclip():
    assert spacing("a,b") == " a , b "
    assert spacing("x\ty\r\nz") == " x y  z "
    assert spacing("") == "  "
    assert spacing("u.s") == " u . s "
    assert spacing("\u00a0\x0c") == " \u00a0\x0c "


def test_duplicates_and_quirks():
    entries = ["dog", "a dog", "dog", "u.s", "a , b", "!", "New Haven, Connecticut", "x\ty"]
    assert match_naive("a dog!", entries) == [0, 1, 2, 5]
    assert match_naive("a , b", entries) == []  # spacing doubles the spaces
    assert match_naive("a,b", entries) == [4]
    assert match_naive("u.s", entries) == []
    assert match_naive(None, entries) == []
    assert [can_ever_match(e) for e in entries] == [True, True, True, False, True, True, False, False]
    ref = AhoCorasickReference(entries)
    assert ref.match("a dog!") == [0, 1, 2, 5]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(ALPHABET, min_size=1, max_size=5), min_size=1, max_size=12),
       st.lists(st.text(ALPHABET, max_size=30), min_size=1, max_size=8))
def test_naive_equals_ahocorasick(entries, texts):
    ref = AhoCorasickReference(entries)
    for t in texts:
        assert match_naive(t, entries) == ref.match(t)


def _witness(entry):
    """A text whose spacing() holds " entry " when the entry can match at all:
    each wrapped character with one space on each side is written bare."""
    return re.sub(r" ([,.;:?!`]) ", r"\1", f" {entry} ")


def test_can_ever_match_agrees_with_brute_force():
    rng = random.Random(0)
    texts = ["".join(rng.choice("a ,.!") for _ in range(rng.randint(0, 7))) for _ in range(3000)]
    for _ in range(1500):
        e = "".join(rng.choice("a ,.!\t") for _ in range(rng.randint(1, 5)))
        if can_ever_match(e):
            assert match_naive(_witness(e), [e]) == [0], e
        else:
            assert not any(match_naive(t, [e]) for t in texts + [_witness(e), e]), e
