"""Copy what bench/gpu_check needs into .gpu_data/ (git-ignored; carried to the GPU).

``python -m bench.prepare_gpu_data [--rows N] [--wheels]``: the 500k-entry
metadata and the text column of every real caption file (all rows, or the
first ``N`` of each), ~24 MiB, under the 64 MiB that may travel with a device
command. ``--wheels`` also downloads RMM's wheels for CUDA 13 and Python 3.12
into ``.whl/`` (needs network; the GPU machine has none), for gpu_check's
``rmm`` section:

    python3 -m pip install -q --no-index --no-deps --target /tmp/rmm .whl/*.whl
    python3 bench/gpu_check --rmm-site /tmp/rmm
"""

import argparse
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq

from .workloads import REAL_FILES, shared_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RMM_WHEELS = ["rmm-cu13==26.10.0", "librmm-cu13==26.10.0", "rapids-logger==0.3.0"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.prepare_gpu_data")
    ap.add_argument("--rows", type=int, default=None, help="first N rows of each file (all)")
    ap.add_argument("--out", default=os.path.join(ROOT, ".gpu_data"))
    ap.add_argument("--wheels", action="store_true",
                    help=f"download {', '.join(RMM_WHEELS)} into .whl/ (network)")
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
        if a.rows is not None:
            t = t.slice(0, a.rows)
        pq.write_table(t, os.path.join(a.out, "captions", f"{name}.parquet"),
                       compression="zstd")
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(a.out) for f in fs)
    print(f"{a.out}: {total / 2**20:.1f} MiB")
    if a.wheels:
        whl = os.path.join(ROOT, ".whl")
        plats = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                                              "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
                                              "manylinux2014_x86_64")]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "--python-version", "3.12", "--implementation",
                        "cp", *plats, "-d", whl, *RMM_WHEELS], check=True)
        size = sum(os.path.getsize(os.path.join(whl, f)) for f in os.listdir(whl))
        print(f"{whl}: {', '.join(sorted(os.listdir(whl)))} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
