"""gpucurate: exact MetaCLIP curation of image-text pools, on GPU and CPU.

``import gpucurate`` needs only NumPy, pyarrow and numba; GPU packages (CuPy,
numba-cuda, cuDF, RMM) and Ray are imported when a GPU or Ray path is used.
"""

__version__ = "0.1.0"

from .errors import ConfigError, DeviceError, GpucurateError, InputError, MetadataError  # noqa: E402
from .pipeline import curate  # noqa: E402
from .keys import keep  # noqa: E402
from .matcher import Matcher  # noqa: E402
from .metadata import load_metadata  # noqa: E402

__all__ = ["Matcher", "curate", "keep", "load_metadata", "GpucurateError", "MetadataError",
           "InputError", "ConfigError", "DeviceError", "__version__"]
