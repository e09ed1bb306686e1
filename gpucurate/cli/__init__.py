"""The command line: ``python -m gpucurate SUBCOMMAND`` (or the ``gpucurate``
script). ``main`` parses and dispatches (``main.py``); ``info``, ``demo`` and
``match`` are the subcommands that stand apart from the pipeline."""

import os

# The command line does no linear algebra, but NumPy loads OpenBLAS, and numba
# loads SciPy's: each starts a thread per core that spins for about 0.1 s of
# CPU, in this process and in each language-ID process it spawns (which
# inherit this). Set before NumPy is first imported (``import gpucurate``
# imports none); a value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .main import build_parser, entry, main  # noqa: E402

__all__ = ["main", "entry", "build_parser"]
