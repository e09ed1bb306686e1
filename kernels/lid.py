"""Language ID on the CPU (arrays only): a supervised fastText model's top
label per caption, computed as fastText 0.9.2's ``predictLine`` computes it,
float32 operation for float32 operation, so that the label is the same.

The model comes as flat arrays (``gpucurate.lidmodel`` reads them from the
``.ftz``/``.bin`` file):

* ``vocab``: the dictionary's words, ``w_data`` bytes at ``w_off``; ``w_label``
  1 for a label entry; ``slots`` an open-addressing table of word ids by
  fastText's hash (``ft_hash``), ``-1`` where empty, its size a power of two;
* ``sw_off``/``sw_ids``: each word's input rows (itself, then its character
  n-grams), in fastText's order;
* the pruned n-gram buckets (``prune_mode`` 1; 0: no n-grams, -1: every
  bucket its own row): ``pbits`` a bit per bucket kept, ``prank`` the kept
  buckets before each 64-bit word of it, ``pval`` each kept bucket's row in
  bucket order (a few hundred kB where a table by bucket takes megabytes);
* ``emb``: the input matrix's rows as fastText adds them (a product-quantized
  row's float32 products of its norm and centroids, made by the reader);
* ``wo``: the dense output matrix, one row per inner node of the hierarchical
  softmax tree (``left``/``right``: children; a node below ``osz`` is a label).

A caption is the line fastText reads: tokens split at `` \\t\\n\\r\\v\\f\\0``
(a newline inside a caption is a space, as the callers replace it), the line's
end a ``</s>`` token; a token ``</s>`` inside the caption ends the line there;
a token that is not a word of the model and starts with ``__label__`` is
skipped.
"""

import math

import numba
import numpy as np

FNV_OFFSET = np.uint32(2166136261)
FNV_PRIME = np.uint32(16777619)
EOS = np.frombuffer(b"</s>", np.uint8)
LABEL = np.frombuffer(b"__label__", np.uint8)


@numba.njit(cache=True, nogil=True, inline="always")
def ft_step(h, byte):
    """One byte of fastText's hash: FNV-1a over the byte as a *signed* char."""
    v = np.uint32(byte) | (np.uint32(0xFFFFFF00) if byte >= 128 else np.uint32(0))
    return np.uint32((h ^ v) * FNV_PRIME)


@numba.njit(cache=True, nogil=True)
def ft_hash(data, a, b):
    h = FNV_OFFSET
    for i in range(a, b):
        h = ft_step(h, data[i])
    return h


@numba.njit(cache=True, nogil=True)
def lookup(data, a, b, h, w_data, w_off, slots):
    """The word id of data[a:b] (its hash ``h``), or -1."""
    mask = slots.size - 1
    s = np.int64(h) & mask
    n = b - a
    while True:
        wid = slots[s]
        if wid < 0:
            return -1
        wa = w_off[wid]
        if w_off[wid + 1] - wa == n:
            same = True
            for k in range(n):
                if w_data[wa + k] != data[a + k]:
                    same = False
                    break
            if same:
                return wid
        s = (s + 1) & mask


@numba.njit(cache=True, nogil=True, inline="always")
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@numba.njit(cache=True, nogil=True, inline="always")
def pruned(b, pbits, prank, pval):
    """The row of n-gram bucket ``b`` in a pruned model, -1 when pruned away."""
    w = b >> 6
    bit = np.uint64(1) << np.uint64(b & 63)
    word = pbits[w]
    if word & bit == 0:
        return np.int64(-1)
    return np.int64(pval[prank[w] + _popcount(word & (bit - np.uint64(1)))])


@numba.njit(cache=True, nogil=True, inline="always")
def _add_row(hidden, emb, r):
    for d in range(hidden.size):
        hidden[d] += emb[r, d]


@numba.njit(cache=True, nogil=True)
def subwords(word, n, minn, maxn, bucket, nwords, pbits, prank, pval, prune_mode, out, m,
             hidden, emb):
    """fastText's ``computeSubwords`` of word[:n] (already wrapped in ``<``
    ``>``): the input rows of its character n-grams, UTF-8 characters
    counted, in fastText's order: appended to out[m:] (returns the new end),
    or, when ``out`` is empty, each added to ``hidden`` as it comes (returns
    m plus the rows added; no buffer as long as the word)."""
    if prune_mode == 0:
        return m
    for i in range(n):
        if (word[i] & 0xC0) == 0x80:
            continue
        h = FNV_OFFSET
        j = i
        k = 1
        while j < n and k <= maxn:
            h = ft_step(h, word[j])
            j += 1
            while j < n and (word[j] & 0xC0) == 0x80:
                h = ft_step(h, word[j])
                j += 1
            if k >= minn and not (k == 1 and (i == 0 or j == n)):
                b = np.int64(h % np.uint32(bucket))
                if prune_mode > 0:
                    b = pruned(b, pbits, prank, pval)
                if b >= 0:
                    if out.size:
                        out[m] = nwords + b
                    else:
                        _add_row(hidden, emb, nwords + b)
                    m += 1
            k += 1
    return m


@numba.njit(cache=True, nogil=True)
def vocab_subwords(w_data, w_off, eos_id, minn, maxn, bucket, nwords, pbits, prank, pval,
                   prune_mode):
    """Each word's input rows as fastText's ``initNgrams`` makes them:
    (sw_off, sw_ids)."""
    size = w_off.size - 1
    longest = 0
    for i in range(size):
        longest = max(longest, w_off[i + 1] - w_off[i])
    word = np.empty(longest + 2, np.uint8)
    one = np.empty((longest + 2) * maxn + 1, np.int32)
    no_hidden = np.zeros(0, np.float32)
    no_emb = np.zeros((0, 0), np.float32)
    cap = 1024
    ids = np.empty(cap, np.int32)
    off = np.zeros(size + 1, np.int64)
    m = 0
    for i in range(size):
        a, b = w_off[i], w_off[i + 1]
        k = 1
        one[0] = i
        if i != eos_id:
            word[0] = 60  # <
            for t in range(b - a):
                word[t + 1] = w_data[a + t]
            word[b - a + 1] = 62  # >
            k = subwords(word, b - a + 2, minn, maxn, bucket, nwords, pbits, prank, pval,
                         prune_mode, one, 1, no_hidden, no_emb)
        while m + k > cap:
            cap *= 2
            grown = np.empty(cap, np.int32)
            grown[:m] = ids[:m]
            ids = grown
        ids[m:m + k] = one[:k]
        m += k
        off[i + 1] = m
    return off, ids[:m].copy()


@numba.njit(cache=True, nogil=True, inline="always")
def _std_log(x):
    """fastText's ``std_log``: a float32 argument, log in double, float32 result."""
    return np.float32(math.log(np.float64(x) + 1e-5))


@numba.njit(cache=True, nogil=True)
def predict_rows(data, offsets, lo, hi, valid,
                 w_data, w_off, w_label, slots, sw_off, sw_ids, eos_id,
                 minn, maxn, bucket, nwords, word_ngrams, pbits, prank, pval, prune_mode,
                 emb, wo, left, right, osz, out):
    """out[i] = the top label (0..osz-1) of caption i in [lo, hi), -1 where
    ``valid[i]`` is 0 (a null caption)."""
    dim = wo.shape[1]
    hidden = np.zeros(dim, np.float32)
    longest = 0
    for i in range(lo, hi):
        longest = max(longest, offsets[i + 1] - offsets[i])
    word = np.empty(longest + 2, np.uint8)
    no_rows = np.zeros(0, np.int32)  # a token's n-gram rows are added as they come
    # the tokens' hashes, for word n-grams (fastText keeps them as int32)
    hashes = np.empty(longest + 2 if word_ngrams > 1 else 1, np.int32)
    thr = _std_log(np.float32(0.0))
    stack_node = np.empty(2 * osz + 2, np.int32)
    stack_score = np.empty(2 * osz + 2, np.float32)
    root = 2 * osz - 2
    for i in range(lo, hi):
        if not valid[i]:
            out[i] = -1
            continue
        for d in range(dim):
            hidden[d] = np.float32(0.0)
        n_in = 0
        n_h = 0
        a = offsets[i]
        end = offsets[i + 1]
        p = a
        eos_seen = False
        while p < end:
            c = data[p]
            if c == 32 or c == 10 or c == 13 or c == 9 or c == 11 or c == 12 or c == 0:
                p += 1
                continue
            s = p
            while p < end:
                c = data[p]
                if c == 32 or c == 10 or c == 13 or c == 9 or c == 11 or c == 12 or c == 0:
                    break
                p += 1
            h = ft_hash(data, s, p)
            wid = lookup(data, s, p, h, w_data, w_off, slots)
            if wid >= 0:
                is_label = w_label[wid] != 0
            else:
                is_label = p - s >= LABEL.size
                if is_label:
                    for k in range(LABEL.size):
                        if data[s + k] != LABEL[k]:
                            is_label = False
                            break
            if not is_label:
                if wid >= 0:
                    for k in range(sw_off[wid], sw_off[wid + 1]):
                        _add_row(hidden, emb, sw_ids[k])
                        n_in += 1
                else:
                    is_eos = p - s == 4 and data[s] == 60 and data[s + 1] == 47 and \
                        data[s + 2] == 115 and data[s + 3] == 62
                    if not is_eos:
                        word[0] = 60
                        for k in range(p - s):
                            word[k + 1] = data[s + k]
                        word[p - s + 1] = 62
                        n_in = subwords(word, p - s + 2, minn, maxn, bucket, nwords, pbits,
                                        prank, pval, prune_mode, no_rows, n_in, hidden, emb)
                if word_ngrams > 1:
                    hashes[n_h] = h
                    n_h += 1
            if p - s == 4 and data[s] == 60 and data[s + 1] == 47 and data[s + 2] == 115 \
                    and data[s + 3] == 62:
                eos_seen = True
                break
        if not eos_seen:  # the line's end
            if eos_id >= 0:
                for k in range(sw_off[eos_id], sw_off[eos_id + 1]):
                    _add_row(hidden, emb, sw_ids[k])
                    n_in += 1
            if word_ngrams > 1:
                hashes[n_h] = ft_hash(EOS, 0, 4)
                n_h += 1
        # word n-grams (wordNgrams > 1), after every token's rows
        for t in range(n_h):
            hh = np.uint64(np.int64(hashes[t]))  # int32 widened with its sign
            for u in range(t + 1, min(n_h, t + word_ngrams)):
                hh = hh * np.uint64(116049371) + np.uint64(np.int64(hashes[u]))
                b = np.int64(hh % np.uint64(bucket))
                if prune_mode > 0:
                    b = pruned(b, pbits, prank, pval)
                elif prune_mode == 0:
                    b = -1
                if b >= 0:
                    _add_row(hidden, emb, nwords + b)
                    n_in += 1
        if n_in == 0:  # fastText predicts nothing for no input
            out[i] = -2
            continue
        scale = np.float32(1.0 / n_in)
        for d in range(dim):
            hidden[d] *= scale
        # the hierarchical softmax's depth-first search for the best label
        # (k = 1, threshold 0), in fastText's order: left child first; a leaf
        # scoring as the best so far replaces it
        best = np.float32(0.0)
        best_node = -1
        stack_node[0] = root
        stack_score[0] = np.float32(0.0)
        top = 1
        while top > 0:
            top -= 1
            node = stack_node[top]
            score = stack_score[top]
            if score < thr:
                continue
            if best_node >= 0 and score < best:
                continue
            if node < osz:
                best = score
                best_node = node
                continue
            r = node - osz
            f = np.float32(0.0)
            for d in range(dim):
                f += wo[r, d] * hidden[d]
            e = np.float32(math.exp(-f))
            f = np.float32(1.0 / np.float64(np.float32(1.0) + e))
            stack_node[top] = right[node]
            stack_score[top] = score + _std_log(f)
            stack_node[top + 1] = left[node]
            stack_score[top + 1] = score + _std_log(np.float32(1.0 - np.float64(f)))
            top += 2
        out[i] = best_node
