"""Worldwide (MetaCLIP 2) curation: padding rule, routing, per-language t, groups."""

import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import METADATA, SHARED, caption_file, _need
from gpucurate import Matcher
from gpucurate.pipeline import curate, p_to_t, t_to_p
from gpucurate.reference import AhoCorasickReference, match_naive_ww, spaced_entry_ww

WW = SHARED / "metaclip_metadata" / "worldwide"
MIXED = list("ab ,.!?\t") + ["猫", "可", "爱", "ไ", "ม", "の", "ン", "한", "，", "。", "（", "）",
                            "\u3000", "\u00a0", "é", "-", "("]


@pytest.fixture(scope="module")
def ww_dir(tmp_path_factory):
    _need(WW)
    d = tmp_path_factory.mktemp("ww")
    os.symlink(METADATA, d / "en.json")
    for lang in ("de", "fr", "cs", "ja", "zh", "th"):
        os.symlink(WW / f"{lang}.json", d / f"{lang}.json")
    return d


def test_padding_rule_examples():
    assert spaced_entry_ww("猫") == "猫" and spaced_entry_ww("の") == " の "
    assert spaced_entry_ww("日本の") == "日本の " and spaced_entry_ww("(x)") == "(x)"
    entries = ["猫", "日本の", "の", "(猫)", "dog", "可爱"]
    assert match_naive_ww("  我的猫很可爱 dog\u3000", entries) == [0, 4, 5]
    assert match_naive_ww("日本の 猫", entries) == [0, 1]
    edge = ["มa", "a猫", "猫"]  # padded on the side that touches the caption's end
    assert Matcher(edge, device="cpu", cache=False, worldwide=True).match(
        ["มa", "a猫", "猫"]).to_pylist() == [match_naive_ww(x, edge) for x in ["มa", "a猫", "猫"]]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(MIXED, min_size=1, max_size=5).filter(lambda e: e.strip() == e and e),
                min_size=1, max_size=14),
       st.lists(st.one_of(st.none(), st.text(MIXED, max_size=30)), min_size=1, max_size=8))
def test_adversarial_mixed_scripts(entries, texts):
    m = Matcher(entries, device="cpu", threads=1, cache=False, worldwide=True)
    want = [match_naive_ww(t, entries) for t in texts]
    assert m.match(texts).to_pylist() == want
    assert [AhoCorasickReference(entries, worldwide=True).match(t) for t in texts] == want


def test_multi30k_by_lang_column(ww_dir):
    t = pq.read_table(caption_file("multi30k"), columns=["lang", "text"])
    for lang in ("de", "fr", "cs"):
        rows = t.filter(pa.compute.equal(t.column("lang"), lang)).slice(0, 3000)
        texts = rows.column("text").to_pylist()
        entries = json.load(open(ww_dir / f"{lang}.json"))
        got = Matcher(entries, device="cpu", worldwide=True).match(texts).to_pylist()
        ref = AhoCorasickReference(entries, worldwide=True)
        assert got == [ref.match(x) for x in texts], lang
        assert sum(map(len, got)) > 3 * len(texts)


def _counts(out, lang):
    return pq.read_table(os.path.join(out, "entry_counts", f"{lang}.parquet"))


def test_curate_lid_routed_alttext(ww_dir, tmp_path):
    from gpucurate.lang import fasttext_identify

    table = pq.read_table(caption_file("html_img_alttext"), columns=["text"]).slice(0, 6000)
    pq.write_table(table, tmp_path / "alt.parquet")
    out = str(tmp_path / "out")
    s = curate(None, [str(tmp_path / "alt.parquet")], out, t=1_000_000, worldwide=str(ww_dir),
               device="cpu", report=False)
    texts = table.column("text").to_pylist()
    codes = fasttext_identify(texts)  # fastText itself: the run predicted with gpucurate's reader
    langs = sorted(p[:-5] for p in os.listdir(ww_dir))
    for lang in langs:
        entries = json.load(open(ww_dir / f"{lang}.json"))
        ref = AhoCorasickReference(entries, worldwide=True)
        want = np.zeros(len(entries), np.uint64)
        for x, c in zip(texts, codes):
            if c == lang:
                want[ref.match(x)] += 1
        assert np.array_equal(_counts(out, lang).column("count").to_numpy(), want), lang
    cur = pa.concat_tables([pq.read_table(p) for p in
                            sorted(glob.glob(os.path.join(out, "curated", "*.parquet")))])
    assert set(cur.column("lang").to_pylist()) <= set(langs)
    assert s["languages"]["de"]["pool"] == codes.count("de")
    assert s["unrouted"] == sum(1 for c in codes if c not in langs)
    # with t this large every matched caption is kept
    assert s["curated"] == s["matched"]


def test_per_language_t_and_groups(ww_dir, tmp_path):
    t = pq.read_table(caption_file("multi30k"), columns=["task", "lang", "image", "text"])
    t = t.filter(pa.compute.equal(t.column("task"), "task2")).slice(0, 40000)
    t = t.append_column("row", pa.array(np.arange(t.num_rows)))
    pq.write_table(t.slice(0, 20000), tmp_path / "a.parquet")
    pq.write_table(t.slice(20000), tmp_path / "b.parquet")
    out = str(tmp_path / "out")
    s = curate(None, [str(tmp_path)], out, t=300, worldwide=str(ww_dir), lang_column="lang",
               group_column="image", key_column="row", device="cpu", seed=1)
    page = open(os.path.join(out, "report", "index.html"), encoding="utf-8").read()
    assert 'data-lang="de"' in page and "language <b>en</b>" in page
    # per-language t, transcribed from MetaCLIP 2's curate.py
    counts_en = _counts(out, "en").column("count").to_numpy()
    p = float(counts_en[counts_en < 300].sum() / counts_en.sum())
    assert p == t_to_p(counts_en, 300)
    c_de = _counts(out, "de").column("count").to_numpy()
    srt = np.sort(c_de)
    cum = np.cumsum(srt) / srt.sum()
    assert s["languages"]["de"]["t"] == srt[np.argmin(np.abs(cum - p))] == p_to_t(c_de, p)
    assert s["languages"]["en"]["t"] == 300
    # at most one caption per image
    cur = pa.concat_tables([pq.read_table(f) for f in
                            sorted(glob.glob(os.path.join(out, "curated", "*.parquet")))])
    images = cur.column("image").to_pylist()
    assert len(images) == len(set(images)) > 100
    # statistics: kept groups vs the expectation given each group's chosen caption
    per_shard = [np.load(f) for f in sorted(glob.glob(os.path.join(out, "work", "groups", "*.npy")))]
    chosen = np.concatenate([per_shard[0], per_shard[1] + 20000])  # shard-relative rows
    n_groups = len(set(t.column("image").to_pylist()))
    assert chosen.size == n_groups
    probs = {lg: _counts(out, lg).column("prob").to_numpy() for lg in ("en", "de")}
    rows = t.take(pa.array(chosen)).to_pylist()
    m = {lg: Matcher(str(ww_dir / f"{lg}.json"), device="cpu", worldwide=True) for lg in probs}
    qs = []
    for lg in probs:
        sel = [r for r in rows if r["lang"] == lg]
        lists = m[lg].match([r["text"] for r in sel]).to_pylist()
        qs += [1.0 - np.prod(1.0 - probs[lg][ids]) if ids else 0.0 for ids in lists]
    qs = np.array(qs)
    mean, sd = qs.sum(), np.sqrt((qs * (1 - qs)).sum())
    assert abs(len(images) - mean) < 5 * max(sd, 1.0), (len(images), mean, sd)


def test_cli_worldwide_flags(ww_dir, tmp_path):
    from gpucurate import cli

    rows = {"lang": ["de", "en", "zh", "xx", None], "text": [
        "Ein Hund im Park", "a dog in the park", "我的猫很可爱", "something", "a cat"]}
    pq.write_table(pa.table(rows), tmp_path / "p.parquet")
    out = tmp_path / "out"
    base = ["curate", "--worldwide", str(ww_dir), "--input", str(tmp_path / "p.parquet"),
            "--out", str(out), "--lang-column", "lang", "--device", "cpu", "--quiet",
            "--no-report"]
    assert cli.main(base + ["--t", "10", "--t-lang", "de=3"]) == 0
    s = json.load(open(out / "summary.json"))
    assert s["languages"]["de"]["t"] == 3 and s["languages"]["en"]["t"] == 10
    assert s["languages"]["zh"]["matched"] == 1 and s["unrouted"] == 2  # "xx" and the null
    assert cli.main(["curate", "--metadata", str(ww_dir / "de.json"), "--input",
                     str(tmp_path / "p.parquet"), "--out", str(tmp_path / "o2"), "--t", "1",
                     "--t-lang", "de=3", "--quiet"]) == 2  # --t-lang needs --worldwide


def test_save_matches_worldwide_same_result(ww_dir, tmp_path):
    """--save-matches with --worldwide: pass 2 reads each caption's ids, of its
    own language, back from the inverted index and curates exactly as a run
    that matches again (two shards, several batches, a language column with
    unrouted and null rows)."""
    t = pq.read_table(caption_file("multi30k"), columns=["lang", "text"])
    t = t.take(pa.array(np.arange(0, t.num_rows, t.num_rows // 9000)[:9000]))  # every language
    lang = t.column("lang").to_pylist()
    lang[::50] = ["xx"] * len(lang[::50])  # languages without metadata: unrouted
    texts = t.column("text").to_pylist()
    texts[7::97] = [None] * len(texts[7::97])
    t = pa.table({"lang": lang, "text": texts, "row": np.arange(t.num_rows)})
    (tmp_path / "in").mkdir()
    pq.write_table(t.slice(0, 5000), tmp_path / "in" / "a.parquet", row_group_size=1000)
    pq.write_table(t.slice(5000), tmp_path / "in" / "b.parquet", row_group_size=1000)
    kw = dict(t=20, worldwide=str(ww_dir), lang_column="lang", key_column="row", device="cpu",
              seed=5, report=False, batch_bytes=100_000)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    sa = curate(None, [str(tmp_path / "in")], a, **kw)
    sb = curate(None, [str(tmp_path / "in")], b, save_matches=True, **kw)
    for lg in ("en", "de", "fr", "cs"):
        assert _counts(a, lg).equals(_counts(b, lg)), lg
    parts = sorted(os.listdir(os.path.join(a, "curated")))
    assert parts == sorted(os.listdir(os.path.join(b, "curated"))) and len(parts) == 2
    for p in parts:
        assert pq.read_table(os.path.join(a, "curated", p)).equals(
            pq.read_table(os.path.join(b, "curated", p))), p
    assert sa["curated"] == sb["curated"] > 100
    inv, inv_b = (pq.read_table(os.path.join(b, "matches", f"shard-0000{i}.parquet"))
                  for i in (0, 1))
    assert inv.column_names == ["entry_id", "text_id", "lang"]
    assert set(inv.column("lang").to_pylist()) | set(inv_b.column("lang").to_pylist()) == \
        {"en", "de", "fr", "cs"}
    # each saved id list is the caption's match against its own language's metadata
    de = json.load(open(ww_dir / "de.json"))
    rows = [i for i in range(5000) if lang[i] == "de" and texts[i] is not None][:200]
    got = Matcher(de, device="cpu", worldwide=True).match([texts[i] for i in rows]).to_pylist()
    d = inv.filter(pa.compute.equal(inv.column("lang").cast(pa.string()), "de")).to_pydict()
    saved = {}
    for e, r in zip(d["entry_id"], d["text_id"]):
        saved.setdefault(r, []).append(e)
    assert [sorted(saved.get(i, [])) for i in rows] == got


def test_save_matches_worldwide_language_id(ww_dir, tmp_path):
    """The same with language ID (pass 1 keeps each row's language for pass 2),
    several batches per shard."""
    table = pq.read_table(caption_file("html_img_alttext"), columns=["text"]).slice(0, 1500)
    pq.write_table(table, tmp_path / "alt.parquet", row_group_size=300)
    kw = dict(t=3, worldwide=str(ww_dir), device="cpu", seed=2, report=False,
              batch_bytes=20_000, t_lang={lg: 3 for lg in ("de", "fr", "cs", "ja", "zh", "th")})
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    sa = curate(None, [str(tmp_path / "alt.parquet")], a, **kw)
    sb = curate(None, [str(tmp_path / "alt.parquet")], b, save_matches=True, **kw)
    part = os.path.join("curated", "part-00000.parquet")
    assert pq.read_table(os.path.join(a, part)).equals(pq.read_table(os.path.join(b, part)))
    assert sa["curated"] == sb["curated"] > 20
    assert sa["languages"] == sb["languages"]


def test_batched_language_id_equals_one_caption_at_a_time():
    pytest.importorskip("fasttext")
    import pyarrow.parquet as pq

    from conftest import caption_file
    from gpucurate.lang import fasttext_identify, lid_model

    texts = pq.read_table(caption_file("multi30k"), columns=["text"]).column("text").to_pylist()
    texts = texts[::200][:2000] + [None, "two\nlines\rhere", ""]
    m = lid_model()
    one = []
    for t in texts:
        if t is None:
            one.append("")
            continue
        labels, _ = m.predict(t.replace("\n", " ").replace("\r", " "))
        one.append(labels[0][len("__label__"):] if labels else "")
    assert fasttext_identify(texts) == one and len(set(one)) > 2


def test_language_id_on_several_processes_gives_the_same_codes(monkeypatch):
    """LID on a pool of spawned processes (fastText holds the GIL, so threads
    cannot share it) answers exactly as in this process, in caption order."""
    from gpucurate import lang

    texts = pq.read_table(caption_file("multi30k"), columns=["text"]).column("text").to_pylist()
    texts = texts[:700] + [None, "", "ein Hund\nim Park", "un chien\rdans le parc"]
    monkeypatch.setattr(lang, "LID_CHUNK", 64)  # the pool takes batches of 128 or more
    pool = lang.LidPool(2)
    try:
        got = pool.identify(texts)
    finally:
        pool.close()
    assert got == lang.fasttext_identify(texts)
    assert len(set(got)) > 2 and got[700] == ""
    pool = lang.LidPool(2)
    try:
        arr = pa.array(["x"] * 9 + texts)
        assert pool.identify_arrow(arr.slice(9)) == got  # a slice: its own rows only
    finally:
        pool.close()


def test_router_indices_follow_the_codes():
    """Router.indices: the language column looked up by Arrow and language ID
    give each caption the index of its code, ``other`` for codes without
    metadata and for nulls, as a caption-by-caption lookup does."""
    from gpucurate import lang

    langs = ["de", "en", "other", "zh"]
    col = pa.chunked_array([["de", None, "xx", "en"], ["other", "zh", "", "DE"]])
    table = pa.table({"lang": col, "text": pa.array(["a"] * 8)})
    r = lang.Router(langs, "lang")
    want = [langs.index(c) if c in langs else langs.index("other") for c in col.to_pylist()]
    assert r.indices(table, table.column("text"), "t").tolist() == want
    r = lang.Router(["de", "en"], "lang")  # no other.json: nothing to match
    assert r.indices(table, table.column("text"), "t").tolist() == [0, -1, -1, 1, -1, -1, -1,
                                                                     -1]
    texts = ["Ein Hund läuft im Park", None, "a dog runs in the park", "un chien dans le parc"]
    texts = texts + texts[::-1] + [None]  # each distinct caption is identified once
    r = lang.Router(["de", "en", "other"], None)
    codes = [lang.fasttext_identify([t])[0] for t in texts]  # fastText itself
    want = [["de", "en", "other"].index(c) if c in ("de", "en") else 2 for c in codes]
    assert r.indices(pa.table({"text": texts}), pa.array(texts), "t").tolist() == want
    assert len(set(want)) == 3
    for typ in (pa.large_string(), pa.string_view()):
        arr = pa.chunked_array([pa.array(texts[:3], typ), pa.array(texts[3:], typ)])
        assert r.indices(pa.table({"text": arr}), arr, "t").tolist() == want
    r = lang.Router(["de", "en"], None)  # no other.json: nulls and others match nothing
    assert r.indices(pa.table({"text": texts}), pa.array(texts), "t").tolist() == [
        w if w < 2 else -1 for w in want]


def test_error_with_language_id_processes_prints_one_line(ww_dir, tmp_path):
    """A run that stops on bad input while its language-ID processes are still
    starting says one error line: the children are waited for, none prints a
    traceback after its parent has gone."""
    import subprocess
    import sys

    pq.write_table(pa.table({"lang": ["de"], "text": ["Ein Hund im Park"]}),
                   tmp_path / "p.parquet")
    p = subprocess.run([sys.executable, "-m", "gpucurate", "curate", "--worldwide", str(ww_dir),
                        "--input", str(tmp_path / "p.parquet"), "--out", str(tmp_path / "out"),
                        "--t", "10", "--device", "cpu", "--threads", "2", "--quiet", "--no-report"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "already has a column 'lang'" in p.stderr
    assert "Traceback" not in p.stderr, p.stderr


def test_language_id_sees_only_checked_captions(ww_dir, tmp_path):
    """With language ID the reading stage checks a batch's captions before it
    has them identified: a caption that is not UTF-8 is the usual clean error
    naming the file and the row, not a failure inside language ID."""
    from gpucurate.errors import InputError

    bad = pa.array([b"ein Hund", b"un chat \xff", b"a dog"], pa.binary()).cast(pa.string(),
                                                                               safe=False)
    pq.write_table(pa.table({"text": bad}), tmp_path / "p.parquet")
    with pytest.raises(InputError, match=r"p\.parquet.*row 1.*UTF-8|UTF-8.*row 1"):
        curate(None, [str(tmp_path / "p.parquet")], str(tmp_path / "out"), t=5, device="cpu",
               threads=2, worldwide=str(ww_dir), report=False)


def _ww(tmp_path, lists: dict):
    d = tmp_path / "ww"
    os.makedirs(d, exist_ok=True)
    for code, entries in lists.items():
        (d / f"{code}.json").write_text(json.dumps(entries, ensure_ascii=False))
    return str(d)


def test_a_t_below_one_is_resumed_with_t_lang_keeping_pass_1(tmp_path):
    """t comes out below 1 for a language after pass 1: the run stops, and a
    rerun with --t-lang for it goes on from pass 1 (not redone), as a fresh
    run with those settings would end."""
    from gpucurate.errors import ConfigError

    ww = _ww(tmp_path, {"de": ["Katze", "Hund"], "zh": ["猫"]})
    pq.write_table(pa.table({"text": ["a cat", "ein Hund", "我的猫"], "lang": ["en", "de", "zh"]}),
                   tmp_path / "p.parquet")
    kw = dict(lang_column="lang", device="cpu", report=False, tail_fraction=0.5)
    out = str(tmp_path / "out")
    with pytest.raises(ConfigError, match="--t-lang de=T"):
        curate(None, [str(tmp_path / "p.parquet")], out, worldwide=ww, **kw)
    marker = os.path.join(out, "work", "pass1", "shard-00000.json")
    before = os.stat(marker).st_mtime_ns
    s = curate(None, [str(tmp_path / "p.parquet")], out, worldwide=ww, t_lang={"de": 1}, **kw)
    assert os.stat(marker).st_mtime_ns == before  # pass 1 was not run again
    fresh = curate(None, [str(tmp_path / "p.parquet")], str(tmp_path / "fresh"), worldwide=ww,
                   t_lang={"de": 1}, **kw)
    assert {k: s[k] for k in ("curated", "matched", "languages", "unrouted")} == \
        {k: fresh[k] for k in ("curated", "matched", "languages", "unrouted")}
    # once pass 2 has run, other settings are another run
    with pytest.raises(ConfigError, match="holds another run"):
        curate(None, [str(tmp_path / "p.parquet")], out, worldwide=ww, t_lang={"de": 2}, **kw)


def test_worldwide_bad_settings_and_columns(tmp_path):
    """Refused with a clear error: --t-lang of a language without a list
    (before any work), a list named all.json, a language column that is no
    text, a jsonl shard in which no row has the language field."""
    from gpucurate.errors import ConfigError, InputError

    ww = _ww(tmp_path, {"en": ["cat", "dog"], "de": ["Hund"]})
    pq.write_table(pa.table({"text": ["a cat", "ein Hund"], "lang": ["en", "de"]}),
                   tmp_path / "p.parquet")
    kw = dict(lang_column="lang", device="cpu", report=False, t=2)
    with pytest.raises(ConfigError, match="no metadata list fr.json"):
        curate(None, [str(tmp_path / "p.parquet")], str(tmp_path / "o1"), worldwide=ww,
               t_lang={"fr": 3}, **kw)
    assert not os.path.exists(tmp_path / "o1" / "config.json")
    bad = _ww(tmp_path / "b", {"en": ["cat"], "all": ["dog"]})
    with pytest.raises(ConfigError, match="all.json names no language"):
        curate(None, [str(tmp_path / "p.parquet")], str(tmp_path / "o2"), worldwide=bad, **kw)
    pq.write_table(pa.table({"text": ["a cat", "ein Hund"],
                             "lang": pa.array([b"en", b"\xff"], pa.binary())}),
                   tmp_path / "bin.parquet")
    with pytest.raises(InputError, match="does not read as text codes"):
        curate(None, [str(tmp_path / "bin.parquet")], str(tmp_path / "o3"), worldwide=ww, **kw)
    (tmp_path / "j.jsonl").write_text("".join(json.dumps({"text": f"a cat {i}"}) + "\n"
                                              for i in range(20)))
    with pytest.raises(InputError, match="no row has the language field 'lang'"):
        curate(None, [str(tmp_path / "j.jsonl")], str(tmp_path / "o4"), worldwide=ww, **kw)


def test_jsonl_language_field_first_met_late_whatever_the_batch(tmp_path):
    """A jsonl whose first rows lack the language field (they go to no
    language), then have it: the same result whatever the batch size (a
    batch without the field stopped the run); null captions are counted in
    the language they are routed to, and unrouted counts the rest."""
    ww = _ww(tmp_path, {"en": ["cat", "dog"]})
    rows = [{"text": f"a cat {i}"} for i in range(30)] + \
        [{"text": "a dog", "lang": "en"}, {"text": None, "lang": "en"},
         {"text": "a cat", "lang": "fr"}, {"text": None, "lang": "fr"}]
    (tmp_path / "j.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = []
    for bb in (100, 1 << 20):
        s = curate(None, [str(tmp_path / "j.jsonl")], str(tmp_path / f"o{bb}"), worldwide=ww,
                   lang_column="lang", device="cpu", report=False, t=2, batch_bytes=bb)
        got.append({k: s[k] for k in ("curated", "matched", "languages", "unrouted",
                                      "null_captions")})
    assert got[0] == got[1]
    assert got[0]["languages"]["en"]["pool"] == 2 and got[0]["unrouted"] == 32


def test_entries_matched_by_the_byte_trie_are_not_said_to_never_match(tmp_path, monkeypatch,
                                                                      capsys):
    """Worldwide: entries that only the byte trie matches (CJK) stand in the
    word trie as placeholders; the log does not count them as entries that
    can never match, built or loaded from the cache."""
    from gpucurate import cli

    monkeypatch.setenv("GPUCURATE_CACHE_DIR", str(tmp_path / "cache"))
    os.makedirs(tmp_path / "ww")
    (tmp_path / "ww" / "zh.json").write_text(json.dumps(["猫", "可爱", "狗"]))
    (tmp_path / "ww" / "en.json").write_text(json.dumps(["dog", "a\tb"]))
    os.makedirs(tmp_path / "in")
    pq.write_table(pa.table({"text": ["我的猫很可爱", "狗", "a dog"], "lang": ["zh", "zh", "en"]}),
                   tmp_path / "in" / "p.parquet")
    for run in range(2):
        out = tmp_path / f"o{run}"
        assert cli.main(["curate", "--worldwide", str(tmp_path / "ww"), "--input",
                         str(tmp_path / "in"), "--out", str(out), "--t", "100",
                         "--lang-column", "lang", "--device", "cpu", "--no-report"]) == 0
        err = capsys.readouterr().err
        assert "can never match" not in err, err
        counts = pq.read_table(out / "entry_counts" / "zh.parquet").column("count").to_pylist()
        assert counts == [1, 1, 1]
