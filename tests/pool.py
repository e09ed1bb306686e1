"""Helpers that write real captions as shards of every supported format."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import caption_file


def real_rows(name: str, n: int, step: int = 1) -> pa.Table:
    t = pq.read_table(caption_file(name))
    return t.slice(0, n * step).take(list(range(0, min(n * step, t.num_rows), step)))


def write_parquet_shards(table: pa.Table, root, k: int, stem: str = "part") -> list[str]:
    os.makedirs(root, exist_ok=True)
    paths = []
    n = table.num_rows
    for i in range(k):
        lo, hi = n * i // k, n * (i + 1) // k
        p = os.path.join(root, f"{stem}-{i:02d}.parquet")
        pq.write_table(table.slice(lo, hi - lo), p)
        paths.append(p)
    return paths


def write_jsonl(table: pa.Table, path: str) -> str:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in table.to_pylist()).encode()
    if path.endswith(".gz"):
        data = gzip.compress(data)
    elif path.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    with open(path, "wb") as f:
        f.write(data)
    return path


def write_tar(table: pa.Table, path: str, text_column: str = "text") -> str:
    """A WebDataset shard: per sample a .txt caption, a .json of the other
    fields and a fake .jpg (never read)."""
    with tarfile.open(path, "w") as tf:
        for i, r in enumerate(table.to_pylist()):
            key = f"sample{i:06d}"  # WebDataset keys hold no dots
            members = {"jpg": b"\xff\xd8fake", "txt": (r[text_column] or "").encode(),
                       "json": json.dumps({k: v for k, v in r.items() if k != text_column}).encode()}
            for ext, blob in members.items():
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(blob)
                tf.addfile(ti, io.BytesIO(blob))
    return path
