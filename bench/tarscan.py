"""Tar input speed: gpucurate.tarscan.read_tar vs io._tar vs parquet (same process).

Builds a WebDataset pool (``--samples`` samples in ``--shards`` shards, each
sample a random ``.jpg`` of ``--jpg-bytes``, the caption ``.txt`` and an
img2dataset-like ``.json``) from the real captions in ../shared/data/captions,
the same rows as parquet shards, and times reading all of it (page cache warm,
best of ``--repeat``):

    PYTHONPATH=. python bench/tarscan.py [--samples 90000] [--out /tmp/tarscan-bench]
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import random
import sys
import tarfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gpucurate.io import Shard, _tar  # noqa: E402
from gpucurate.tarscan import count_samples, read_tar  # noqa: E402

CAPTIONS = os.path.join(ROOT, "..", "shared", "data", "captions")
if not os.path.isdir(CAPTIONS):
    CAPTIONS = "/work/shared/data/captions"


def captions(n: int) -> list[str]:
    out: list[str] = []
    for p in sorted(glob.glob(os.path.join(CAPTIONS, "*.parquet"))):
        out += pq.read_table(p, columns=["text"]).column("text").to_pylist()
    random.Random(0).shuffle(out)
    return out[:n]


def build(out: str, n: int, shards: int, jpg_bytes: int, with_json: bool) -> dict:
    os.makedirs(out, exist_ok=True)
    tag = "json" if with_json else "txt"
    done = os.path.join(out, f"DONE-{tag}-{n}-{shards}-{jpg_bytes}")
    paths = {"tar": [os.path.join(out, f"{tag}-{s:03d}.tar") for s in range(shards)],
             "tgz": [os.path.join(out, f"{tag}-{s:03d}.tar.gz") for s in range(shards)],
             "parquet": [os.path.join(out, f"{tag}-{s:03d}.parquet") for s in range(shards)]}
    if os.path.exists(done):
        return paths
    texts = captions(n)
    rng = random.Random(1)
    per = (len(texts) + shards - 1) // shards
    for s in range(shards):
        rows = []
        with tarfile.open(paths["tar"][s], "w", format=tarfile.GNU_FORMAT) as tf:
            for i in range(s * per, min(len(texts), (s + 1) * per)):
                key = f"{i:09d}"
                meta = {"url": f"https://example.org/img/{i}.jpg", "key": key,
                        "status": "success", "width": 256 + i % 97, "height": 192 + i % 89}
                files = [("jpg", rng.randbytes(jpg_bytes)), ("txt", texts[i].encode())]
                if with_json:
                    files.append(("json", json.dumps(meta).encode()))
                for ext, data in files:
                    ti = tarfile.TarInfo(f"{key}.{ext}")
                    ti.size = len(data)
                    ti.mtime = 1700000000
                    tf.addfile(ti, __import__("io").BytesIO(data))
                rows.append({"__key__": key, **(meta if with_json else {}), "text": texts[i]})
        with open(paths["tar"][s], "rb") as f, gzip.open(paths["tgz"][s], "wb", 6) as g:
            g.write(f.read())
        pq.write_table(pa.Table.from_pylist(rows), paths["parquet"][s])
    open(done, "w").close()
    return paths


def timed(fn, repeat: int) -> tuple[float, int]:
    best, rows = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = fn()
        best = min(best, time.perf_counter() - t0)
    return best, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--samples", type=int, default=90000)
    ap.add_argument("--shards", type=int, default=9)
    ap.add_argument("--jpg-bytes", type=int, default=4096)
    ap.add_argument("--out", default="/tmp/tarscan-bench")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--old-shards", type=int, default=1,
                    help="shards read with io._tar (it is slow; its rate is per caption)")
    ap.add_argument("--batch-bytes", type=int, default=64 << 20)
    a = ap.parse_args()
    bb = a.batch_bytes
    for with_json in (True, False):
        p = build(a.out, a.samples, a.shards, a.jpg_bytes, with_json)
        size = sum(os.path.getsize(x) for x in p["tar"])
        list(read_tar(p["tar"][0], "warm", None, bb))  # compile / load the cached scanner

        def new(paths=p["tar"]):
            return sum(t.num_rows for x in paths for t in read_tar(x, os.path.basename(x), None,
                                                                   bb))

        def parquet():
            return sum(pq.read_table(x).num_rows for x in p["parquet"])

        def old():
            return sum(t.num_rows for x in p["tar"][:a.old_shards]
                       for t in _tar(Shard(0, x, os.path.basename(x), "tar"), None, bb))

        res = {"parquet (pq.read_table)": timed(parquet, a.repeat),
               "tar, tarscan.read_tar": timed(new, a.repeat),
               "tar.gz, tarscan.read_tar": timed(lambda: new(p["tgz"]), a.repeat),
               "tar, tarscan.count_samples": timed(lambda: sum(count_samples(x) for x in p["tar"]),
                                                   a.repeat),
               f"tar, io._tar ({a.old_shards} shard)": timed(old, 1)}
        print(f"\npool: {a.samples} samples in {a.shards} shards, {a.jpg_bytes}-byte jpg + txt"
              f"{' + json' if with_json else ''}; tar {size / 1e6:.0f} MB")
        pq_rate = res["parquet (pq.read_table)"][1] / res["parquet (pq.read_table)"][0]
        for name, (sec, rows) in res.items():
            rate = rows / sec
            print(f"  {name:34s} {rows:7d} rows {sec:8.3f} s {rate:12,.0f} captions/s "
                  f"({rate / pq_rate:5.2f}x parquet)")


if __name__ == "__main__":
    main()
