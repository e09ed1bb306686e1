"""Every CUDA kernel compiles to sm_90 PTX (and assembles, where ptxas exists)."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


def test_kernels_compile_to_sm90_ptx(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.ptx", "--cc", "9.0", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, NUMBA_ENABLE_CUDASIM="0"))
    assert r.returncode == 0, r.stdout + r.stderr
    # every kernel of the module (its device functions are compiled into them)
    q = subprocess.run([sys.executable, "-c", (
        "from gpucurate.kernels import cuda as kc\n"
        "import numba.cuda.dispatcher as d\n"
        "print(' '.join(sorted(n for n, v in vars(kc).items() if isinstance("
        "v, d.CUDADispatcher) and not v.targetoptions.get('device'))))")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, NUMBA_ENABLE_CUDASIM="0"))
    assert q.returncode == 0, q.stderr
    names = set(q.stdout.split())
    assert {"match_slots", "compact_slots", "count_matches", "fill_matches", "compact",
            "count_entries", "keep_captions", "utf8_check"} <= names
    for n in names:
        ptx = (tmp_path / f"{n}.ptx").read_text()
        assert ".target sm_90" in ptx and ".entry" in ptx
    if shutil.which("ptxas") is None:
        pytest.skip("ptxas not on PATH: PTX compiled but not assembled")
    report = (tmp_path / "ptxas.txt").read_text()
    for n in names:
        assert f"== {n}" in report
    assert "Used" in report and "registers" in report


def test_kernels_compile_without_numpy_row_stack(tmp_path):
    """NumPy 2.5 removed ``np.row_stack``; numba-cuda 0.30 still overloads it when
    it compiles its first kernel, which failed every launch on the GPU machine
    (NumPy 2.5.2). Simulate that NumPy here: drop the name, then compile."""
    code = ("import numpy as np\n"
            "if hasattr(np, 'row_stack'): del np.row_stack\n"
            "import sys; sys.argv = ['bench.ptx', '--cc', '9.0', '--out', sys.argv[1]]\n"
            "from bench import ptx; raise SystemExit(ptx.main())\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, NUMBA_ENABLE_CUDASIM="0"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert ".entry" in (tmp_path / "count_matches.ptx").read_text()
