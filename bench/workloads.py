"""Benchmark workloads: the real caption files, and a deterministic pool generator.

The generator scales a pool to any size with realistic caption lengths and
entry frequencies: it resamples real captions (word sequences) and replaces
each word, with probability ``p_sub``, by a metadata unigram drawn Zipf-like
by rank. Captions are built in chunks with NumPy (no per-caption Python), so
memory stays bounded whatever the pool size.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

def cpu_model() -> str:
    """The CPU's model name (for a result's machine), or the platform's word for it."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


REAL_FILES = ["html_img_alttext", "redcaps_explore_samples", "coco_captions_val2017",
              "flickr8k", "multi30k"]


def shared_data() -> str | None:
    """Where the real data lives: $GPUCURATE_SHARED_DATA, ../shared/data, or .gpu_data."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for d in (os.environ.get("GPUCURATE_SHARED_DATA"), os.path.join(here, "..", "shared", "data"),
              os.path.join(here, ".gpu_data")):
        if d and os.path.isdir(os.path.join(d, "captions")):
            return os.path.abspath(d)
    return None


def metadata_path(root: str) -> str:
    return os.path.join(root, "metaclip_metadata", "metadata_proxy.json")


def load_metadata(root: str, size: int | None = None) -> list[str]:
    with open(metadata_path(root), encoding="utf-8") as f:
        entries = json.load(f)
    return entries[:size] if size else entries


def real_captions(root: str) -> dict[str, pa.Array]:
    """Each real caption file's text column (files missing from root are skipped)."""
    out = {}
    for name in REAL_FILES:
        p = os.path.join(root, "captions", f"{name}.parquet")
        if os.path.exists(p):
            out[name] = pq.read_table(p, columns=["text"]).column("text").combine_chunks()
    return out


def _concat_slices(data: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """data[starts[0]:starts[0]+lens[0]] + data[starts[1]:...] + ... (vectorized)."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.uint8)
    ends = np.cumsum(lens)
    idx = np.arange(total, dtype=np.int64) - np.repeat(ends - lens, lens) + np.repeat(starts, lens)
    return data[idx]


class PoolGenerator:
    """Deterministic captions: real word sequences with Zipf-substituted entries."""

    def __init__(self, base: pa.Array, entries: list[str], seed: int = 0, p_sub: float = 0.3,
                 zipf: float = 1.05):
        base = base.drop_null()
        words = pc.split_pattern(base, " ")
        self.base_off = words.offsets.to_numpy().astype(np.int64)
        flat = words.values
        unigrams = [e for e in entries if " " not in e][:200_000]
        # Zipf by a fixed random rank, so the head is not just the numbers "0".."99"
        order = np.random.default_rng(seed + 1).permutation(len(unigrams))
        unigrams = [unigrams[i] for i in order]
        vocab = pa.concat_arrays([pc.unique(flat).cast(pa.large_string()),
                                  pa.array(unigrams, pa.large_string())])
        enc = pc.index_in(flat.cast(pa.large_string()), vocab).to_numpy().astype(np.int64)
        self.base_words = enc
        self.n_base_words = len(vocab) - len(unigrams)
        self.n_uni = len(unigrams)
        vb = vocab.buffers()
        self.voff = np.frombuffer(vb[1], np.int64)[: len(vocab) + 1]
        self.vdata = np.frombuffer(vb[2], np.uint8)
        self.vlen = np.diff(self.voff)
        w = 1.0 / np.arange(1, self.n_uni + 1) ** zipf
        self.cdf = np.cumsum(w) / w.sum()
        self.rng = np.random.default_rng(seed)
        self.p_sub = p_sub

    def chunk(self, n: int) -> pa.Array:
        """n new captions as a large_string array."""
        rng = self.rng
        pick = rng.integers(0, self.base_off.size - 1, n)
        starts, ends = self.base_off[pick], self.base_off[pick + 1]
        nw = ends - starts
        wpos = np.repeat(starts - np.concatenate([[0], np.cumsum(nw)[:-1]]), nw) + \
            np.arange(int(nw.sum()))
        wid = self.base_words[wpos]
        sub = rng.random(wid.size) < self.p_sub
        draw = np.searchsorted(self.cdf, rng.random(int(sub.sum())))
        wid[sub] = self.n_base_words + np.minimum(draw, self.n_uni - 1)
        # caption bytes: words joined by single spaces
        wl = self.vlen[wid]
        seg_len = wl + 1                     # each word plus a following space
        last = np.cumsum(nw) - 1
        seg_len[last[nw > 0]] -= 1           # no space after a caption's last word
        parts_start = self.voff[wid]
        space = np.int64(self.vdata.size)    # index of a space byte appended below
        data = np.concatenate([self.vdata, np.frombuffer(b" ", np.uint8)])
        # interleave word bytes and separators: build (start, len) pairs
        starts2 = np.empty(wid.size * 2, np.int64)
        lens2 = np.empty(wid.size * 2, np.int64)
        starts2[0::2], lens2[0::2] = parts_start, wl
        starts2[1::2], lens2[1::2] = space, seg_len - wl
        text = _concat_slices(data, starts2, lens2)
        offsets = np.zeros(n + 1, np.int64)
        offsets[1:] = np.cumsum(seg_len)[last]   # every base caption has >= 1 word
        return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text))

    def pool(self, n: int, chunk: int = 1_000_000):
        """Yield the pool in chunks of at most ``chunk`` captions."""
        left = n
        while left > 0:
            k = min(chunk, left)
            yield self.chunk(k)
            left -= k


def generator_from(root: str | None, entries: list[str], seed: int = 0) -> PoolGenerator:
    """A generator over the real captions (all files pooled), or over the
    metadata alone when no real data is present."""
    if root:
        caps = real_captions(root)
        base = pa.concat_arrays([c.cast(pa.large_string()) for c in caps.values()])
    else:
        rng = np.random.default_rng(seed)
        words = [e for e in entries if " " not in e][:5000]
        base = pa.array([" ".join(rng.choice(words, rng.integers(3, 12))) for _ in range(20000)],
                        pa.large_string())
    return PoolGenerator(base, entries, seed=seed)
