"""Compile every CUDA kernel to PTX without a GPU, and read ptxas's report.

``python -m bench.ptx [--cc 9.0] [--out DIR]`` writes one ``.ptx`` per kernel
and ``ptxas.txt`` (registers, shared memory, spills from ``ptxas -v``, when
ptxas is on PATH). Numba compiles a device function for the current device's
compute capability; with no GPU there is none, so it is given explicitly here.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types


def _pin_cc(cc):
    import numba.cuda.dispatcher as d

    d.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)


def compile_all(cc=(9, 0)) -> dict[str, str]:
    """PTX of every kernel in gpucurate.kernels.cuda, for a small real trie."""
    from numba import cuda

    try:
        cuda.get_current_device()
    except Exception:  # noqa: BLE001 - no driver: pin the target instead
        _pin_cc(cc)
    from gpucurate.kernels import cuda as kc
    from gpucurate.tables import load_tables_ww

    tables = load_tables_ww(["a", "a b", "c", "猫"], cache=False)
    out = {}
    for name, (kernel, sig) in kc.signatures(tables.args()).items():
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=cc)
        out[name] = ptx
    return out


def ptxas_report(ptx_by_name: dict[str, str], arch: str = "sm_90") -> str | None:
    """``ptxas -v`` output for each kernel, or None when ptxas is not found.

    When the ptxas found is older than the NVVM that wrote the PTX, the PTX's
    ``.version`` line is lowered to the one ptxas supports (the kernels use no
    newer instruction) and the report says so.
    """
    exe = shutil.which("ptxas")
    if exe is None:
        return None
    lines = []
    with tempfile.TemporaryDirectory() as d:
        for name, ptx in ptx_by_name.items():
            note = ""
            for _ in range(2):
                src = os.path.join(d, f"{name}.ptx")
                with open(src, "w") as f:
                    f.write(ptx)
                r = subprocess.run([exe, "-v", f"-arch={arch}", src, "-o",
                                    os.path.join(d, f"{name}.cubin")], capture_output=True, text=True)
                m = re.search(r"Unsupported \.version ([0-9.]+); current version is '([0-9.]+)'",
                              r.stderr)
                if r.returncode == 0 or not m:
                    break
                ptx = re.sub(r"^\.version [0-9.]+", f".version {m.group(2)}", ptx, count=1, flags=re.M)
                note = f" (PTX .version {m.group(1)} lowered to {m.group(2)} for this ptxas)"
            if r.returncode != 0:
                raise RuntimeError(f"ptxas failed on {name}: {r.stderr}")
            lines.append(f"== {name}{note}\n{r.stderr.strip()}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ptx", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cc", default="9.0", help="compute capability (default 9.0, Hopper)")
    ap.add_argument("--out", default=None, help="directory for the .ptx files and ptxas.txt")
    a = ap.parse_args(argv)
    cc = tuple(int(x) for x in a.cc.split("."))
    ptx = compile_all(cc)
    report = ptxas_report(ptx, f"sm_{cc[0]}{cc[1]}")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        for name, text in ptx.items():
            with open(os.path.join(a.out, f"{name}.ptx"), "w") as f:
                f.write(text)
        if report:
            with open(os.path.join(a.out, "ptxas.txt"), "w") as f:
                f.write(report + "\n")
    sys.stdout.write((report or "ptxas not found: PTX compiled, not assembled") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
