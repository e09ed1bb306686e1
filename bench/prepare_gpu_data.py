"""Copy what bench/gpu_check needs into .gpu_data/ (git-ignored; carried to the GPU).

``python -m bench.prepare_gpu_data [--rows 40000]``: the 500k-entry metadata
and the first ``rows`` captions of each real caption file (text column only),
well under the 64 MiB that may travel with a device command.
"""

import argparse
import os
import shutil

import pyarrow.parquet as pq

from .workloads import REAL_FILES, shared_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.prepare_gpu_data")
    ap.add_argument("--rows", type=int, default=40000)
    ap.add_argument("--out", default=os.path.join(ROOT, ".gpu_data"))
    a = ap.parse_args(argv)
    src = shared_data()
    if src is None or os.path.abspath(src) == os.path.abspath(a.out):
        raise SystemExit("no ../shared/data found (set GPUCURATE_SHARED_DATA)")
    os.makedirs(os.path.join(a.out, "captions"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "metaclip_metadata"), exist_ok=True)
    shutil.copy(os.path.join(src, "metaclip_metadata", "metadata_proxy.json"),
                os.path.join(a.out, "metaclip_metadata", "metadata_proxy.json"))
    for name in REAL_FILES:
        t = pq.read_table(os.path.join(src, "captions", f"{name}.parquet"), columns=["text"])
        pq.write_table(t.slice(0, a.rows), os.path.join(a.out, "captions", f"{name}.parquet"),
                       compression="zstd")
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(a.out) for f in fs)
    print(f"{a.out}: {total / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
