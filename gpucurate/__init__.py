"""gpucurate: exact MetaCLIP curation of image-text pools, on GPU and CPU.

``import gpucurate`` needs only NumPy, pyarrow and numba; GPU packages (CuPy,
numba-cuda, cuDF, RMM) and Ray are imported when a GPU or Ray path is used.
The names below are imported when first used, so that the command line (and
the processes it spawns) can set up the environment before NumPy loads.
"""

__version__ = "0.1.0"

from .errors import ConfigError, DeviceError, GpucurateError, InputError, MetadataError  # noqa: E402

_LAZY = {"curate": ".pipeline", "keep": ".keys", "Matcher": ".matcher",
         "load_metadata": ".metadata"}

__all__ = ["Matcher", "curate", "keep", "load_metadata", "GpucurateError", "MetadataError",
           "InputError", "ConfigError", "DeviceError", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
