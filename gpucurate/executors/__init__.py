"""Executors schedule the pipeline's stages; they know nothing else of it.

An executor has ``name``, ``remote`` (whether its workers live in other
processes, so the driver should load the tables once and ship them),
``workers`` (a description of each worker, filled as they start),
``prepare(setup, n_calls)`` (start the workers before a pass is timed),
``map(fn, calls, setup, on_result=None, names=None)`` and ``close()``. ``map``
builds one worker per process by calling ``setup`` once there
(``setup(device=..., threads=...)`` where the executor places CPU workers),
then runs ``fn(worker, *call)`` for every call, hands each result to
``on_result`` as it comes (in any order), and returns the results in call
order. ``names`` says what each call is (its shard), for the executor's own
errors.
"""

from __future__ import annotations

from ..config import CurateConfig
from .local import LocalExecutor


def make_executor(cfg: CurateConfig):
    """The executor ``cfg.executor`` names (``local`` or ``ray``)."""
    if cfg.executor == "ray":
        from .ray import RayExecutor

        return RayExecutor(cfg)
    return LocalExecutor()


def check_executor(cfg: CurateConfig) -> None:
    """What ``cfg.executor`` needs can be had (Ray importable), said before any work."""
    if cfg.executor == "ray":
        from .ray import _import_ray

        _import_ray()


__all__ = ["LocalExecutor", "check_executor", "make_executor"]
