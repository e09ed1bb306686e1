"""``python -m gpucurate demo``: curate a pool the package generates itself.

The pool is deterministic: ~24k captions built from templates, with nouns drawn
Zipf-like so a few entries are very frequent (the head that balancing flattens)
and most are rare (the tail it keeps). Nothing is downloaded or read from
outside the package.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NOUNS = ("dog cat car tree house beach mountain river city street bird flower horse boat "
         "child woman man bicycle train plane table chair window door garden park bridge "
         "kitchen lake forest road sky cloud sunset snow field fence cake pizza coffee book "
         "guitar camera phone laptop lamp clock mirror bottle cup plate apple banana orange "
         "castle church tower market shop museum statue fountain harbor island desert canyon "
         "waterfall volcano glacier meadow vineyard farm barn tractor truck bus taxi subway "
         "skateboard surfboard kite umbrella backpack suitcase hat jacket shoe scarf glove").split()
ADJS = ("red blue green old new small large happy busy quiet bright dark wooden modern "
        "ancient snowy sunny rainy golden white black").split()
PLACES = ("in the park", "on the street", "at the beach", "near the river", "in the city",
          "under the sky", "by the lake", "in a garden", "on a table", "in the kitchen")
TEMPLATES = ("a photo of a {a} {n}", "{A} {n} {p}.", "a {n} and a {m} {p}",
             "The {a} {n}, {p}!", "close-up of a {n}", "{n} {p}", "my {a} {n} {p}; so nice",
             "two {n}s next to a {m}", "a {a} {n} with a {m} {p}", "hot dog {p}")
BIGRAMS = ("hot dog", "living room", "fire truck", "teddy bear", "ice cream", "traffic light",
           "stop sign", "the park", "the beach", "the city", "a photo", "close-up")
EXTRA = ("a", "an", "the", "of", "and", "in", "on", "at", "by", "with", "near", "under", "two",
         "next", "to", "my", "so", "nice", "photo", "u.s", "e.g", "New York, NY")


def metadata() -> list[str]:
    """The demo's metadata list (id = index); u.s, e.g and 'New York, NY' can never match."""
    out, seen = [], set()
    for e in list(EXTRA) + NOUNS + [n + "s" for n in NOUNS] + ADJS + list(BIGRAMS):
        if e not in seen:
            seen.add(e)
            out.append(e)
    return out


def captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, len(NOUNS) + 1) ** 1.1
    w /= w.sum()
    nouns = rng.choice(len(NOUNS), size=(n, 2), p=w)
    adjs = rng.integers(0, len(ADJS), n)
    places = rng.integers(0, len(PLACES), n)
    tpl = rng.integers(0, len(TEMPLATES), n)
    out = []
    for i in range(n):
        a = ADJS[adjs[i]]
        out.append(TEMPLATES[tpl[i]].format(a=a, A=a.capitalize(), n=NOUNS[nouns[i, 0]],
                                            m=NOUNS[nouns[i, 1]], p=PLACES[places[i]]))
    return out


MARK = ".gpucurate-demo"  # in a demo's --out: the directory is the demo's to rewrite


def write_pool(root: str, shards: int = 4, per_shard: int = 6000) -> tuple[str, list[str]]:
    """Write the demo metadata and parquet shards under ``root``; return the
    metadata's path and the shards' paths."""
    os.makedirs(os.path.join(root, "pool"), exist_ok=True)
    meta = os.path.join(root, "metadata.json")
    with open(meta, "w", encoding="utf-8") as f:
        json.dump(metadata(), f)
    texts = captions(shards * per_shard)
    paths = []
    for s in range(shards):
        part = texts[s * per_shard:(s + 1) * per_shard]
        ids = np.arange(s * per_shard, (s + 1) * per_shard, dtype=np.int64)
        paths.append(os.path.join(root, "pool", f"shard-{s:02d}.parquet"))
        pq.write_table(pa.table({"id": ids, "text": part}), paths[-1])
    return meta, paths


def run_demo(out: str | None = None, device: str | None = None, threads: int | None = None):
    """Write the demo's pool under ``out`` (default ./gpucurate-demo) and curate
    it into ``out/curated-run``, replacing an earlier demo's. ``out`` must be
    new, empty, or an earlier demo's (nothing but its ``input``, ``curated-run``
    and mark): the demo rewrites it whole."""
    from ..config import CurateConfig
    from ..errors import ConfigError
    from ..pipeline import run

    from ..config import device_choice

    if device_choice(device) == "gpu":  # a device that is not there: said before any write
        from ..engine import resolve_device

        resolve_device("gpu")
    out = os.path.abspath(out or "gpucurate-demo")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"demo --out {out} is a file; give a directory for the demo's pool "
                          "and run")
    if os.path.isdir(out) and not set(os.listdir(out)) <= {MARK, "input", "curated-run"}:
        raise ConfigError(f"demo --out {out} holds other files than an earlier demo's (its "
                          "input/ and curated-run/): the demo rewrites its --out whole. Give a "
                          "new or empty directory")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, MARK), "w") as f:
        f.write("written by python -m gpucurate demo, which rewrites this directory\n")
    meta, shards = write_pool(os.path.join(out, "input"))
    cfg = CurateConfig(metadata=meta, inputs=tuple(shards), out=os.path.join(out, "curated-run"),
                       t=300, key_column="id", device=device, threads=threads, overwrite=True)
    return run(cfg, "curate"), cfg.out
