"""CPU engine against the references: real captions and adversarial strings."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import CAPTION_FILES, caption_file
from gpucurate import InputError, Matcher, MetadataError
from gpucurate.reference import match_naive

ALPHABET = list("ab ,.;:?!`\t\n\r") + ["\u00a0", "\u3000", "猫", "é", "😀", "\u0301", "\x0b", "\x0c"]


@pytest.mark.parametrize("name", CAPTION_FILES)
def test_every_real_caption_matches_reference(name, real_matcher, ac_reference):
    texts = pq.read_table(caption_file(name), columns=["text"]).column("text")
    got = real_matcher.match(texts)
    assert len(got) == len(texts)
    got = got.to_pylist()
    for i, t in enumerate(texts.to_pylist()):
        if got[i] != ac_reference.match(t):
            pytest.fail(f"{name} row {i}: {t!r}: {got[i]} != {ac_reference.match(t)}")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(ALPHABET, min_size=1, max_size=6), min_size=1, max_size=16),
       st.lists(st.one_of(st.none(), st.text(ALPHABET, max_size=40)), min_size=1, max_size=10),
       st.integers(1, 2))
def test_adversarial_equals_oracle(entries, texts, threads):
    m = Matcher(entries, device="cpu", threads=threads, cache=False)
    got = m.match(texts).to_pylist()
    assert got == [match_naive(t, entries) for t in texts]


def test_structured_adversarial():
    entries = ["a", "a b", "a b c", "b", "b c", "a", ",", "a ,", ", b", "!", "a  b", " a", "a ",
               "猫", "é", "x.y", "c", "c d e f g"]
    texts = ["a b c", "a,b", "a ,b", "a  b", " a", "a ", "  a  ", "a\tb\nc\rd", "!!", "a!b",
             "猫 猫", "é\u0301", "x.y", "a\u00a0b", "", None, "a b c d e f g", ",a,", "a" * 3]
    m = Matcher(entries, device="cpu", threads=1, cache=False)
    assert m.match(texts).to_pylist() == [match_naive(t, entries) for t in texts]


def test_big_caption_and_arrow_layouts():
    entries = ["dog", "hot dog", "cat", "dog cat"]
    big = ("hot dog cat, " * 80000)[:1_000_000]
    texts = ["dog", None, big, "cat"] * 3
    m = Matcher(entries, device="cpu", threads=2, cache=False)
    want = [match_naive(t, entries) for t in texts]
    assert m.match(texts).to_pylist() == want
    arr = pa.array(texts, pa.string())
    assert m.match(arr.slice(2, 7)).to_pylist() == want[2:9]
    chunked = pa.chunked_array([arr.slice(0, 5), arr.slice(5)])
    assert m.match(chunked).to_pylist() == want
    assert m.match(pa.array(texts, pa.large_string())).type == pa.list_(pa.int32())


@pytest.mark.parametrize("worldwide", [False, True])
def test_output_grows_mid_range(worldwide):
    """A caption with more ids than the range's first guess of room (1024):
    the range stops before it, grows its output and goes on from it."""
    from gpucurate.reference import match_naive_ww

    entries = ["a"] * 3000 + ["b c", "c"]
    texts = ["x b c", "a a", None, "c a", "zz"] * 3
    m = Matcher(entries, device="cpu", threads=1, cache=False, worldwide=worldwide)
    ref = match_naive_ww if worldwide else match_naive
    got = m.match(texts).to_pylist()
    assert [len(g) for g in got[:5]] == [2, 3000, 0, 3001, 0]
    assert got == [ref(t, entries) for t in texts]


def test_many_captions_parallel_equals_serial():
    entries = ["a", "b", "a b", "c"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(list("abcd,"), rng.integers(0, 8))) for _ in range(20000)]
    one = Matcher(entries, device="cpu", threads=1, cache=False).match(texts)
    two = Matcher(entries, device="cpu", threads=2, cache=False).match(texts)
    assert one.equals(two)
    assert one.to_pylist()[:500] == [match_naive(t, entries) for t in texts[:500]]


def test_invalid_utf8_names_the_row():
    arr = pa.array([b"ok", b"also ok", b"bad \xff byte"], pa.binary()).cast(pa.string(), safe=False)
    with pytest.raises(InputError, match="row 2 is not valid UTF-8"):
        Matcher(["ok"], device="cpu", cache=False).match(arr)


def test_metadata_errors(tmp_path):
    with pytest.raises(MetadataError, match="index 1 is empty"):
        Matcher(["a", ""], device="cpu")
    p = tmp_path / "m.json"
    p.write_text('{"a": 1}')
    with pytest.raises(MetadataError, match="not a list"):
        Matcher(str(p), device="cpu")
    p.write_text('["a", 3]')
    with pytest.raises(MetadataError, match="index 1 is int"):
        Matcher(str(p), device="cpu")
    t = tmp_path / "m.txt"
    t.write_bytes(b"dog\r\nhot dog\n\nx\n")
    with pytest.raises(MetadataError, match="line 3 is empty"):
        Matcher(str(t), device="cpu")
    t.write_bytes(b"dog\r\nhot dog\n")
    assert Matcher(str(t), device="cpu", cache=False).match(["a hot dog"]).to_pylist() == [[0, 1]]


def test_unmatchable_count_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCURATE_CACHE_DIR", str(tmp_path))
    from gpucurate.trie import load_trie

    entries = ["u.s", "a , b", "!", "x\ty", "New Haven, Connecticut", "dog"]
    first = load_trie(entries)
    assert first.n_unmatchable == 3
    files = list((tmp_path / "trie").iterdir())
    assert len(files) == 1
    again = load_trie(entries)
    for a, b in zip(first.arrays(), again.arrays()):
        assert np.array_equal(a, b)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(list("a ,.!\t"), min_size=1, max_size=6), min_size=1, max_size=10))
def test_unmatchable_count_is_exact(entries):
    from gpucurate.reference import can_ever_match
    from gpucurate.trie import build_trie

    assert build_trie(entries).n_unmatchable == sum(not can_ever_match(e) for e in entries)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=40),
                          st.text(max_size=20).map(lambda s: s.encode()),
                          st.lists(st.sampled_from([b"abcdefgh", b"a", "\u00e9".encode(), b"\xff",
                                                    "\U0001f600".encode()[:2]]),
                                   max_size=10).map(b"".join)), min_size=1, max_size=8),
       st.integers(0, 9))
def test_utf8_check_at_every_alignment(rows, pad):
    """first_invalid_utf8 (8-byte ASCII skipping) equals Python's decoder."""
    from gpucurate.kernels.cpu import first_invalid_utf8

    def ok(r):
        try:
            r.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    data = np.frombuffer(b"\x80" * pad + b"".join(r or b"" for r in rows) + b"\x80", np.uint8)
    offsets = np.cumsum([pad] + [len(r or b"") for r in rows]).astype(np.int64)
    valid = np.array([r is not None for r in rows], np.uint8)
    want = next((i for i, r in enumerate(rows) if r is not None and not ok(r)), -1)
    assert first_invalid_utf8(data, offsets, valid) == want


SCAN_ALPHABET = list("ab0'\"-`\x00 ,.;:?!\t\n\r") + ["é", "猫"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(SCAN_ALPHABET[:7], min_size=1, max_size=20), min_size=1, max_size=12),
       st.lists(st.text(SCAN_ALPHABET, max_size=80), min_size=1, max_size=8))
def test_long_tokens_and_scan_candidates_equal_oracle(entries, texts):
    """Tokens of 1 to 20 bytes (the 8-byte scan's chunk and key-register
    boundaries) and bytes that look like a token's end but are not (< 64)."""
    entries = [e for e in entries if e.strip(" ")] or ["a"]
    m = Matcher(entries, device="cpu", threads=1, cache=False)
    assert m.match(texts).to_pylist() == [match_naive(t, entries) for t in texts]


# Byte strings for the scan: random bytes, and strings dense in token ends
# (every byte of class 1 and 2, NUL, bytes below 64 that end nothing, UTF-8),
# long enough to cross the 64-byte blocks of the delimiter masks.
SCAN_BYTES = st.one_of(
    st.binary(max_size=160),
    st.lists(st.sampled_from(b" \t\n\r,.;:?!`\x00\x0b09-/aZ\x7f\x80\xe7\xbf"), max_size=160)
    .map(bytes))


def _py_routines():
    from gpucurate.kernels.routines import build

    return build(lambda f: f)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SCAN_BYTES)
def test_scan_token_cpu_equals_interpreted(raw):
    """The CPU scan (64-byte vector compares, unaligned 8-byte loads) and the
    interpreted routine (one byte at a time) read the same tokens and keys at
    every state, up to the buffer's last byte."""
    from gpucurate.kernels import cpu

    buf = np.frombuffer(raw, np.uint8).copy()
    with np.errstate(over="ignore"):  # uint64 hashes wrap around by design
        _scan_every_state(cpu.R, _py_routines(), buf)


def _scan_every_state(cpu_r, py, buf):
    for end in {buf.size, buf.size // 2}:
        for state in range(2 * end):
            if state & 1 and (state >> 1) >= end:
                continue
            got = cpu_r.scan_token(buf, state, end)
            want = py.scan_token(buf, state, end)
            assert tuple(int(x) for x in got) == tuple(int(x) for x in want), (bytes(buf), state,
                                                                               end)
            lo, hi, h = py.token_key(buf, int(got[0]), int(got[1]))
            assert (int(got[3]), int(got[4]), int(got[5])) == (int(lo), int(hi), int(h))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SCAN_BYTES, st.integers(0, 80), st.binary(max_size=80))
def test_carried_masks_read_the_same_tokens(raw, lead, tail):
    """Walking a caption token by token with the masks carried from one token
    to the next (as match_caption does, CPU and interpreted) gives the tokens of
    a fresh scan at each state, with other bytes before and after the caption
    (bits of the masks past its end are not defined)."""
    from gpucurate.kernels import cpu

    py = _py_routines()
    buf = np.frombuffer(b"x, " * lead + raw + tail, np.uint8).copy()
    start, end = 3 * lead, 3 * lead + len(raw)
    with np.errstate(over="ignore"):
        for r in (cpu.R, py):
            s, mpos, d, w = start << 1, start - 64, np.uint64(0), np.uint64(0)
            while s >= 0:
                a, b, nxt, lo, hi, h, mpos, d, w = r.next_token(buf, s, end, mpos, d, w)
                d, w = np.uint64(d), np.uint64(w)  # numba returns Python ints
                want = py.scan_token(buf, s, end)
                assert (int(a), int(b), int(nxt), int(lo), int(hi), int(h)) == \
                    tuple(int(x) for x in want), (bytes(buf), start, end, s)
                s = int(nxt)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SCAN_BYTES, st.integers(0, 100))
def test_cpu_vector_masks_equal_bytewise(raw, cut):
    """The CPU's 64-byte vector classification and the byte-at-a-time masks
    agree on every bit below the caption's end, at every position."""
    from gpucurate.kernels import cpu

    py = _py_routines()
    buf = np.frombuffer(raw + bytes(64), np.uint8).copy()
    end = min(cut, len(raw))
    for q in range(end + 1):
        keep = np.uint64((1 << min(64, end - q)) - 1)
        got = cpu.R.token_masks(buf, q, end)
        want = py.delim_masks(buf, q, end)
        assert [int(x & keep) for x in got] == [int(x & keep) for x in want], (raw, q, end)


def test_api_misuse_is_an_error_not_a_wrong_answer():
    """keep() and Matcher.match given what they cannot use: an error, never
    an answer read from outside the arrays (keep's kernel has no bounds
    checks); and what they can use gives the pipeline's answer: Python int
    keys past 2**63 mixed with small ones, empty inputs, null lists."""
    import numpy as np
    import pyarrow as pa

    from gpucurate import Matcher, keep
    from gpucurate.errors import ConfigError, InputError

    k = np.array([2**63 + 5, 7], np.uint64)
    assert keep([[0], [0]], [0.5], k).tolist() == keep([[0], [0]], [0.5], k.tolist()).tolist()
    assert keep([], [0.5], []).size == 0
    assert keep(pa.chunked_array([], pa.list_(pa.int32())), [0.5], []).size == 0
    assert keep([None, [0]], [1.0], [1, 2]).tolist() == [False, True]
    for bad in (lambda: keep([[5], [100000]], np.array([.5, .5]), np.array([1, 2], np.uint64)),
                lambda: keep([[0], [1], []], [.5, .5], np.array([1], np.uint64)),
                lambda: keep([[0, None]], [.5], [1]),
                lambda: keep([[-1]], [.5], [1]),
                lambda: keep([[0]], [.5], [1], seed=-1)):
        with pytest.raises((InputError, ConfigError)):
            bad()
    m = Matcher(["dog"], device="cpu", threads=1)
    with pytest.raises(InputError, match="a list of captions"):
        m.match("dog")
    with pytest.raises(InputError, match="row 1 holds a lone surrogate"):
        m.match(["a dog", "dog \ud800"])
