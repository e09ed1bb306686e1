"""The package's layout: the layers as folders, no import cycles, the wheel
ships every subpackage, and the table-array order is one contract."""

import inspect
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_table_order_is_one_contract():
    from gpucurate.kernels import bytewalk, cpu, layout, routines
    from gpucurate.kernels.targets import cpu_jit, cpu_jit_inline

    word = tuple(inspect.signature(cpu.R.match_caption.py_func).parameters)
    assert word[3:3 + len(layout.WORD)] == layout.WORD
    byte = tuple(inspect.signature(cpu.W.match_bytes.py_func).parameters)
    assert byte[3:3 + len(layout.BYTE)] == layout.BYTE
    src = inspect.getsource(bytewalk)
    assert f"{', '.join(layout.WORD)} = wtrie" in src
    assert f"{', '.join(layout.BYTE)} = btrie" in src
    assert f"{', '.join(layout.WORD)} = wtrie" in inspect.getsource(cpu)
    assert "wtrie, btrie, strip = tables" in inspect.getsource(cpu)
    assert layout.TABLES == ("word", "byte", "strip")
    del routines, cpu_jit, cpu_jit_inline


def test_table_tuples_follow_the_contract():
    from gpucurate.kernels import layout
    from gpucurate.tables import load_tables_ww

    t = load_tables_ww(["dog", "東京", "a cat"], cache=False)
    word, byte, strip = t.args()
    assert len(word) == len(layout.WORD) and len(byte) == len(layout.BYTE)
    for name, a in zip(layout.WORD, word):
        if name != "vn":
            assert a is getattr(t.word, name)
    assert int(word[layout.WORD.index("vn")]) == t.word.vtag.size
    for name, a in zip(layout.BYTE, byte):
        if name != "bmask":
            assert a is getattr(t.byte, name)
    assert byte[layout.BYTE_TIDS] is t.byte.btids and int(strip) == 1


def test_no_import_cycles():
    tool = ROOT.parent / "shared" / "tools" / "import_cycles.py"
    if not tool.exists():
        pytest.skip(f"{tool} not found (../shared beside the checkout)")
    r = subprocess.run([sys.executable, str(tool), "gpucurate", "kernels"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "0 cycles" in r.stdout and "0 private imports" in r.stdout, r.stdout


def test_executors_import_nothing_of_the_pipeline():
    for f in (ROOT / "gpucurate" / "executors").glob("*.py"):
        src = f.read_text()
        assert not re.search(r"from \.\.pipeline|import gpucurate\.pipeline|from \.\.curate",
                             src), f


def test_wheel_ships_every_subpackage(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PIP_NO_INDEX": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = tmp_path.glob("gpucurate-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    pkgs = {str(p.parent.relative_to(ROOT)).replace("kernels", "gpucurate/kernels", 1)
            if str(p.parent.relative_to(ROOT)).startswith("kernels") else
            str(p.parent.relative_to(ROOT))
            for p in list((ROOT / "gpucurate").rglob("__init__.py")) +
            list((ROOT / "kernels").rglob("__init__.py"))
            if "__pycache__" not in str(p)}
    for pkg in pkgs:
        for py in (ROOT / ("kernels" if pkg.startswith("gpucurate/kernels") else pkg)).glob("*.py"):
            assert f"{pkg}/{py.name}" in names, f"{pkg}/{py.name} missing from the wheel"


def test_command_line_skips_numbas_blas_probe_only():
    """The command line's start-up: OpenBLAS limited to one thread, and
    numba's set-up does not import scipy.linalg (its probe for np.dot's BLAS);
    the kernels compile and run, and scipy.linalg still imports when asked."""
    import subprocess
    import sys

    pytest.importorskip("scipy", reason="scipy (which numba's probe would import) is absent")
    code = ("import sys\nimport gpucurate.cli\n"
            "import pyarrow as pa\nfrom gpucurate.columns import buffers\n"
            "buffers(pa.array(['a caption'], pa.large_string()))  # numba set up, a kernel run\n"
            "import numba.np.arraymath as a\n"
            "print('linalg' if 'scipy.linalg' in sys.modules else 'no linalg', a._HAVE_BLAS)\n"
            "import scipy.linalg\nprint(scipy.linalg.__name__)\n"
            "import os\nprint(os.environ['OPENBLAS_NUM_THREADS'])\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENBLAS_NUM_THREADS"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split("\n")[:3] == ["no linalg False", "scipy.linalg", "1"], p.stdout
