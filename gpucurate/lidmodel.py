"""A fastText language-ID model read into arrays, predicted by numba.

fastText's own predictor holds the GIL and costs about 10 us a caption through
its Python binding, most of it in making Python strings; the same model read
here predicts over an Arrow string column's buffers in ``kernels.lid`` (no
Python object per caption, threads without the GIL). The label is fastText's:
the kernel repeats ``predictLine``'s float32 arithmetic in its order, and the
tests hold it to ``fasttext-predict`` on real captions, adversarial strings and
generated models of every supported kind.

Supported: supervised models (fastText format version 12) with a hierarchical
softmax output (``-loss hs``, as ``lid.176``), an input matrix dense or
product-quantized (with or without quantized norms, pruned or not) and a dense
output matrix. Anything else raises :class:`Unsupported`, and the caller uses
fastText itself.
"""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .columns import buffers, chunks_of
from .compiled import compile_notice

MAGIC = 793712314
VERSION = 12
LOSS_HS = 1
MODEL_SUP = 3
LABEL_PREFIX = "__label__"


class Unsupported(ValueError):
    """A model this reader does not predict (fastText predicts it instead)."""


class _Reader:
    def __init__(self, data: bytes, path: str):
        self.b = data
        self.off = 0
        self.path = path

    def take(self, fmt: str):
        try:
            v = struct.unpack_from("<" + fmt, self.b, self.off)
        except struct.error:
            raise Unsupported(f"{self.path}: the model file ends early") from None
        self.off += struct.calcsize("<" + fmt)
        return v if len(v) > 1 else v[0]

    def array(self, dtype, n: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * n
        if self.off + size > len(self.b):
            raise Unsupported(f"{self.path}: the model file ends early")
        a = np.frombuffer(self.b, dtype, n, self.off).copy()
        self.off += size
        return a


def _pq(r: _Reader) -> tuple:
    dim, nsubq, dsub, lastdsub = r.take("iiii")
    return nsubq, dsub, lastdsub, r.array(np.float32, dim * 256)


def _pruned_map(pairs: np.ndarray, bucket: int, path: str) -> tuple:
    """A pruned model's bucket -> row map as ``kernels.lid.pruned`` reads it:
    a bit per kept bucket, the kept buckets before each 64-bit word, and the
    rows of the kept buckets in bucket order."""
    keys = pairs[:, 0].astype(np.int64)
    if keys.size and (keys.min() < 0 or keys.max() >= bucket or np.unique(keys).size != keys.size):
        raise Unsupported(f"{path}: a pruned bucket outside 0..{bucket - 1}, or twice")
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    pval = pairs[order, 1].astype(np.int32)
    words = (bucket + 63) // 64
    pbits = np.zeros(words, np.uint64)
    np.bitwise_or.at(pbits, keys >> 6, np.left_shift(np.uint64(1), (keys & 63).astype(np.uint64)))
    per_word = np.bincount(keys >> 6, minlength=words)
    prank = np.zeros(words, np.int32)
    prank[1:] = np.cumsum(per_word)[:-1]
    return pbits, prank, pval


def _dequantize(codes, cent, nsubq, dsub, lastdsub, norm, m, n, path) -> np.ndarray:
    """The input matrix's rows as fastText adds them to the hidden vector:
    element j of row r is the float32 product ``norm[r] * centroid[j]`` that
    fastText's ``addcode`` computes before adding it, so adding these rows
    gives the same float32 sums."""
    if codes.size != m * nsubq or dsub * (nsubq - 1) + lastdsub != n:
        raise Unsupported(f"{path}: product quantizer of {nsubq}x{dsub} for {m}x{n} rows")
    rows = np.empty((m, n), np.float32)
    c = codes.reshape(m, nsubq).astype(np.int64)
    for q in range(nsubq):
        d = lastdsub if q == nsubq - 1 else dsub
        base = q * 256 * dsub
        at = base + c[:, q] * d  # (q * 256 + code) * dsub, or the last subquantizer's layout
        for t in range(d):
            rows[:, q * dsub + t] = norm * cent[at + t]
    return rows


def _tree(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hierarchical softmax's Huffman tree over the label counts, built
    as fastText builds it: (left, right) children per node, -1 at leaves."""
    osz = counts.size
    count = np.full(2 * osz - 1, 10 ** 15, np.int64)
    count[:osz] = counts
    left = np.full(2 * osz - 1, -1, np.int32)
    right = np.full(2 * osz - 1, -1, np.int32)
    leaf, node = osz - 1, osz
    for i in range(osz, 2 * osz - 1):
        mini = [0, 0]
        for j in range(2):
            if leaf >= 0 and count[leaf] < count[node]:
                mini[j] = leaf
                leaf -= 1
            else:
                mini[j] = node
                node += 1
        left[i], right[i] = mini
        count[i] = count[mini[0]] + count[mini[1]]
    return left, right


class LidModel:
    """A supervised fastText model: ``labels`` (without ``__label__``) and
    :meth:`predict` over Arrow string arrays."""

    def __init__(self, path: str):
        from gpucurate.kernels import lid as K

        compile_notice("language ID", K.vocab_subwords, K.predict_rows, K.ft_hash)
        with open(path, "rb") as f:
            r = _Reader(f.read(), path)
        magic, version = r.take("ii")
        if magic != MAGIC or version != VERSION:
            raise Unsupported(f"{path}: not a fastText model of format {VERSION}")
        (dim, _ws, _epoch, _min_count, _neg, word_ngrams, loss, model, bucket, minn, maxn,
         _lr_update) = r.take("12i")
        r.take("d")
        if model != MODEL_SUP or loss != LOSS_HS:
            raise Unsupported(f"{path}: model {model}, loss {loss}; only supervised models "
                              "with a hierarchical softmax are read here")
        size, nwords, nlabels = r.take("iii")
        _ntokens, prune_size = r.take("qq")
        words, counts, types = [], [], []
        b = r.b
        for _ in range(size):
            end = b.find(b"\0", r.off)
            if end < 0:
                raise Unsupported(f"{path}: the model file ends early")
            words.append(b[r.off:end])
            r.off = end + 1
            counts.append(r.take("q"))
            types.append(r.take("b"))
        pairs = r.array(np.int32, 2 * max(prune_size, 0)).reshape(-1, 2)
        pbits, prank, pval = _pruned_map(pairs, bucket, path)
        prune_mode = 1 if prune_size > 0 else 0 if prune_size == 0 else -1
        if r.take("?"):  # product-quantized input rows
            qnorm = bool(r.take("?"))
            m, n = r.take("qq")
            codes = r.array(np.uint8, r.take("i"))
            nsubq, dsub, lastdsub, cent = _pq(r)
            norm = np.ones(m, np.float32)
            if qnorm:
                norm_codes = r.array(np.uint8, m)
                norm = _pq(r)[3][norm_codes.astype(np.int64)]
            emb = _dequantize(codes, cent, nsubq, dsub, lastdsub, norm, m, n, path)
        else:
            if prune_size >= 0:
                raise Unsupported(f"{path}: a pruned dictionary with a dense input matrix")
            m, n = r.take("qq")
            emb = r.array(np.float32, m * n).reshape(m, n)
        if n != dim:
            raise Unsupported(f"{path}: input matrix of {n} columns for dim {dim}")
        if r.take("?"):
            raise Unsupported(f"{path}: a quantized output matrix (-qout)")
        osz, n2 = r.take("qq")
        wo = r.array(np.float32, osz * n2).reshape(osz, n2)
        if osz != nlabels or n2 != dim or nwords + nlabels != size or nlabels < 1:
            raise Unsupported(f"{path}: output matrix {osz}x{n2} for {nlabels} labels")
        # every row the predictor may add must exist (it reads without bounds checks)
        ngram_rows = {1: int(pval.max()) + 1 if pval.size else 0, 0: 0, -1: bucket}[prune_mode]
        if (nwords + ngram_rows > m or bucket <= 0 or dim <= 0
                or (pval.size and int(pval.min()) < 0)):
            raise Unsupported(f"{path}: {m} input rows for {nwords} words and {ngram_rows} "
                              f"n-gram rows (bucket {bucket})")
        self.path = path
        self.labels = [w[len(LABEL_PREFIX):].decode("utf-8", "replace")
                       if w.startswith(LABEL_PREFIX.encode()) else w.decode("utf-8", "replace")
                       for w in words[nwords:]]
        w_off = np.zeros(size + 1, np.int64)
        w_off[1:] = np.cumsum([len(w) for w in words])
        w_data = np.frombuffer(b"".join(words), np.uint8).copy()
        slots = np.full(1 << max(4, int(2 * size).bit_length()), -1, np.int32)
        mask = slots.size - 1
        for i, w in enumerate(words):  # a word's first slot by fastText's hash, then probing
            s = int(K.ft_hash(w_data, w_off[i], w_off[i + 1])) & mask
            while slots[s] >= 0:
                s = (s + 1) & mask
            slots[s] = i
        eos = words.index(b"</s>") if b"</s>" in words else -1
        sw_off, sw_ids = K.vocab_subwords(w_data, w_off, eos, minn, maxn, bucket, nwords,
                                          pbits, prank, pval, prune_mode)
        left, right = _tree(np.asarray(counts[nwords:], np.int64))
        w_label = np.array([t == 1 for t in types], np.uint8)
        self._args = (w_data, w_off, w_label, slots, sw_off, sw_ids, eos, minn, maxn, bucket,
                      nwords, word_ngrams, pbits, prank, pval, prune_mode, emb, wo, left, right,
                      nlabels)
        self._predict = K.predict_rows

    def predict(self, text, threads: int = 1, pool: ThreadPoolExecutor | None = None
                ) -> np.ndarray:
        """int32 label index per caption of an Arrow string array (or chunked
        array); -1 for a null caption, -2 where fastText predicts no label."""
        parts = []
        for chunk in chunks_of(text):
            tb = buffers(chunk, validate=False)
            out = np.empty(len(tb), np.int32)
            n = len(tb)
            if n == 0:
                parts.append(out)
                continue
            k = max(1, min(threads, n // 2048 or 1))
            bounds = np.linspace(0, n, k + 1).astype(np.int64)

            def run(lo, hi, tb=tb, out=out):
                self._predict(tb.data, tb.offsets, lo, hi, tb.valid, *self._args, out)

            if k == 1 or pool is None:
                for lo, hi in zip(bounds[:-1], bounds[1:]):
                    run(int(lo), int(hi))
            else:
                list(pool.map(run, bounds[:-1].tolist(), bounds[1:].tolist()))
            parts.append(out)
        return np.concatenate(parts) if len(parts) != 1 else parts[0]

    def codes(self, text, threads: int = 1, pool=None) -> list[str]:
        """fastText's language code per caption ('' for a null caption)."""
        names = self.labels + ["", ""]
        return [names[i] for i in self.predict(text, threads, pool).tolist()]


def header_check(path: str) -> str | None:
    """Why this reader would not predict the model at ``path`` (from its
    header alone, cheap), or None when it would."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        return f"cannot read {path} ({exc.strerror})"
    if len(head) < 64:
        return f"{path}: the model file ends early"
    magic, version = struct.unpack_from("<ii", head, 0)
    if magic != MAGIC or version != VERSION:
        return f"{path}: not a fastText model of format {VERSION}"
    loss, model = struct.unpack_from("<ii", head, 8 + 6 * 4)
    if model != MODEL_SUP or loss != LOSS_HS:
        return f"{path}: model {model}, loss {loss}; not a supervised hierarchical softmax"
    return None


_CACHE: dict = {}


def load(path: str) -> LidModel:
    """The model at ``path``, read once per process."""
    m = _CACHE.get(path)
    if m is None:
        m = _CACHE[path] = LidModel(path)
    return m


__all__ = ["LidModel", "Unsupported", "header_check", "load"]
