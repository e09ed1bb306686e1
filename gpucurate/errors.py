"""One error hierarchy: every message says what is wrong, where, and the fix."""


class GpucurateError(Exception):
    """Base of every error gpucurate raises on purpose."""


class MetadataError(GpucurateError):
    """The metadata list cannot be used (names the file and the entry)."""


class InputError(GpucurateError):
    """A caption shard cannot be read or has bad rows (names file and row)."""


class ConfigError(GpucurateError):
    """Options that do not fit together, or an output directory in another state."""


class DeviceError(GpucurateError):
    """A GPU was required and none is usable (says why)."""
