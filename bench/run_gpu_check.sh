#!/usr/bin/env bash
# Install gpucurate on a bare GPU machine (Python with CuPy, numba-cuda, pyarrow;
# no network) and run bench/gpu_check, with RMM from carried wheels when .whl/
# holds them. Prepare on a machine with the data first:
#     python -m bench.prepare_gpu_data --wheels      # .gpu_data/ and .whl/
# then, from the repository root on the GPU machine (carrying .gpu_data and .whl):
#     bash bench/run_gpu_check.sh [gpu_check options]
# Output: the log and JSON under $OUT (or bench/results/ when OUT is unset).
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-/tmp/gpucurate-numba}
export GPUCURATE_CACHE_DIR=${GPUCURATE_CACHE_DIR:-/tmp/gpucurate-cache}
{ nvidia-smi
  python3 -c "import numba, numba_cuda, cupy, numpy, pyarrow, setuptools as s; print('numba', numba.__version__, 'numba-cuda', numba_cuda.__version__, 'cupy', cupy.__version__, 'numpy', numpy.__version__, 'pyarrow', pyarrow.__version__, 'setuptools', s.__version__)"
} 2>&1 | tee "$OUT/env.txt"
python3 -m pip install --no-deps --no-build-isolation -q . 2>&1 | tail -3
if ! (cd /tmp && python3 -c "import gpucurate.kernels"); then
  # no wheel builder: lay the package out by hand, as its package-dir mapping does
  echo "pip install failed; using PYTHONPATH=/tmp/gpucurate-site"
  rm -rf /tmp/gpucurate-site && mkdir -p /tmp/gpucurate-site
  cp -r gpucurate /tmp/gpucurate-site/ && cp -r kernels /tmp/gpucurate-site/gpucurate/kernels
  export PYTHONPATH=/tmp/gpucurate-site${PYTHONPATH:+:$PYTHONPATH}
fi
rmm=()
if ls .whl/*rmm*.whl >/dev/null 2>&1 &&
   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpucurate-rmm .whl/*.whl; then
  rmm=(--rmm-site /tmp/gpucurate-rmm)
fi
# A one-line kernel first: if the driver rejects Numba's PTX, link with nvJitLink.
if ! (cd /tmp && python3 -c "
import numpy as np
np.row_stack = getattr(np, 'row_stack', np.vstack)  # as gpucurate.kernels.cuda does
from numba import cuda
@cuda.jit
def k(a): a[0] = 1
a = cuda.to_device(np.zeros(1)); k[1, 1](a); assert a.copy_to_host()[0] == 1
print('numba-cuda: a kernel ran')" 2>&1 | tail -4); then
  echo "retrying with NUMBA_CUDA_ENABLE_PYNVJITLINK=1"
  export NUMBA_CUDA_ENABLE_PYNVJITLINK=1
fi
timeout "${GPU_CHECK_TIMEOUT:-560}" python3 bench/gpu_check "${rmm[@]}" "$@" 2>&1 | tee "$OUT/gpu_check.log"
