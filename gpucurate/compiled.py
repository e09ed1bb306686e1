"""Numba's compiled code: whether the on-disk cache holds it, and a word
before a first run compiles (it takes a while, once)."""

from __future__ import annotations

from .log import logger


def cached(*dispatchers) -> bool:
    """Whether numba's on-disk cache holds compiled code for every one of
    these functions (an index written by this source; False when unsure)."""
    try:
        return all(bool(d._cache._cache_file._load_index()) for d in dispatchers)
    except Exception:  # noqa: BLE001 - numba internals differ: say it may compile
        return False


_SAID: set = set()


def compile_notice(what: str, *dispatchers) -> None:
    """Say before a first run compiles: it takes a while, once (once per
    process for each ``what``)."""
    if what not in _SAID and not cached(*dispatchers):
        _SAID.add(what)
        import numba

        where = numba.config.CACHE_DIR or "__pycache__ beside the package"
        logger.info("compiling %s (first run only; cached in %s)", what, where)
