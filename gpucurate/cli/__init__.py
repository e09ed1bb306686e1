"""The command line: ``python -m gpucurate SUBCOMMAND`` (or the ``gpucurate``
script). ``main`` parses and dispatches (``main.py``); ``info``, ``demo`` and
``match`` are the subcommands that stand apart from the pipeline."""

import os
import sys

# The command line does no linear algebra, but NumPy loads OpenBLAS (and
# numba, but for the probe skipped below, SciPy's): each starts a thread per
# core that spins for about 0.1 s of CPU, in this process and in each process
# it spawns (which inherit this). Set before NumPy is first imported (``import gpucurate``
# imports none); a value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")



class _SkipNumbaBlasProbe:
    """numba's set-up imports ``scipy.linalg`` (0.1-0.3 s of start-up) only
    to learn whether ``np.dot`` in jitted code may call SciPy's BLAS.
    gpucurate's kernels use no BLAS, so in the command line that one probe is
    answered "no" (numba's own loops would serve ``np.dot``); any other import
    of SciPy, then or later, is left alone."""

    def find_spec(self, name, path=None, target=None):
        if name != "scipy" and not name.startswith("scipy."):
            return None
        f = sys._getframe(1)
        while f is not None:
            if f.f_code.co_name == "_check_blas" and \
                    f.f_globals.get("__name__") == "numba.np.arraymath":
                raise ImportError("numba's BLAS probe, skipped by gpucurate's command line")
            f = f.f_back
        return None


if "numba.np.arraymath" not in sys.modules:
    sys.meta_path.insert(0, _SkipNumbaBlasProbe())

from .main import build_parser, entry, main  # noqa: E402

__all__ = ["main", "entry", "build_parser"]
