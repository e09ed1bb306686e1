"""Run the curation stages on Ray: many GPUs in one node, many nodes, same output.

:class:`RayExecutor` has :class:`~gpucurate.curate.LocalExecutor`'s interface
(``name``, ``map(fn, cfg, out, calls)``, ``close()``); the stages are the same
functions either way, so the outputs are identical (tests/test_ray.py).

How the work is laid out:

* The driver loads the metadata and the trie once (from the on-disk trie
  cache, or building it) and puts them in Ray's object store once.
* Shards run as calls on a pool of Ray actors (``ray.util.ActorPool``, which
  hands each idle actor the next shard and returns results in call order): one
  actor per GPU (``num_gpus=1``) when the cluster has GPUs and ``device`` is not
  ``cpu``; else one actor per ``threads`` CPUs (default one). Each actor takes
  the trie from the object store and builds its engine once (on a GPU: uploads
  the trie once), then serves shard after shard, pass 1 and pass 2.
  Actors rather than plain tasks, because a task worker is not pinned to a GPU:
  Ray either starts a fresh process per GPU task (its default ``max_calls=1``:
  the trie would be loaded and uploaded per shard) or, when reused, may hand a
  process whose CUDA context is on GPU 0 a task assigned GPU 1. An actor keeps
  its GPU for life.
* Large arrays among the call arguments (pass 2's prob array) are put in the
  object store once per map and fetched once per actor.
* Per-shard results stay files (atomic writes and completion markers, in the
  stages), so the driver only sums small sparse count files.
* Fault tolerance: a worker process that dies is restarted (``max_restarts``)
  and its shard rerun (``max_task_retries``); the rerun rewrites the same files
  atomically, and leftover temporary files of the dead process are removed once
  the map is done. A run that still fails resumes from its markers when rerun.

``cfg.extra`` may tune it: ``ray_workers`` (at most this many actors),
``ray_max_retries`` (default 3), ``ray_init`` (more ``ray.init`` keywords).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import time

import numpy as np

from .config import CurateConfig
from .errors import ConfigError, DeviceError, GpucurateError
from .log import logger

_EXTRA = "pip install gpucurate[ray]"


def _import_ray():
    try:
        import ray
        from ray.util import ActorPool  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray, which cannot be imported ({exc}); "
                          f"install it with `{_EXTRA}`, or use --executor local") from None
    return ray


class _Broadcast:
    """A value put once in the object store. Wrapping the reference keeps Ray
    from resolving it per call; each worker fetches it once (:func:`_fetch`)."""

    __slots__ = ("ref",)

    def __init__(self, ref):
        self.ref = ref


def _writable(obj):
    """Own copies of read-only (zero-copy, object-store) arrays, so numba runs
    the same compiled code as in a local run (read-only arrays are another type)."""
    if isinstance(obj, np.ndarray):
        return obj if obj.flags.writeable else obj.copy()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        kw = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if isinstance(v, np.ndarray) or dataclasses.is_dataclass(v):
                w = _writable(v)
                if w is not v:
                    kw[f.name] = w
        return dataclasses.replace(obj, **kw) if kw else obj
    if isinstance(obj, dict):
        return {k: _writable(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)) and len(obj) <= 16:
        return type(obj)(_writable(x) for x in obj)
    return obj


class _ShardWorker:
    """A Ray actor: one process, one engine (one GPU), any number of shards."""

    def __init__(self, cfg: CurateConfig, shared: list):
        import ray

        from .curate import install_worker

        self.cfg = cfg
        install_worker(cfg, _writable(ray.get(shared[0])))
        self._fetched: dict = {}

    def info(self) -> dict:
        import ray

        from .curate import _WORKER

        engines = _WORKER["engines"].values() if "engines" in _WORKER else [_WORKER["engine"]]
        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                "gpus": [str(g) for g in ray.get_gpu_ids()],
                "engine": sorted({e.name for e in engines})[0]}

    def _fetch(self, b: _Broadcast):
        import ray

        k = b.ref.hex()
        if k not in self._fetched:
            if len(self._fetched) >= 4:
                self._fetched.clear()
            self._fetched[k] = _writable(ray.get(b.ref))
        return self._fetched[k]

    def run(self, fn, out: str, args: tuple):
        args = tuple(self._fetch(a) if isinstance(a, _Broadcast) else a for a in args)
        return fn(self.cfg, out, *args)


def _sweep_tmp(out: str) -> None:
    """Remove temporary files left by worker processes that died mid-write
    (their shards were rerun and written whole by another process)."""
    for tmp in glob.glob(os.path.join(glob.escape(out), "**", "*.tmp-*"), recursive=True):
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass


class RayExecutor:
    """Runs stage calls on a Ray cluster: a private local one (``cfg.address``
    None), or the one at ``cfg.address`` (HOST:PORT, ``auto``, ``ray://...``).
    Shuts down only a Ray it started itself."""

    name = "ray"

    def __init__(self, cfg: CurateConfig):
        ray = _import_ray()
        self._ray = ray
        self._started = False
        self._pool = None
        self._actors: list = []
        self._shared = None
        self.startup_s = 0.0  # seconds spent starting workers (inside the first map)
        self._cfg_key = None
        self.workers: list[dict] = []
        extra = cfg.extra or {}
        self._max_retries = int(extra.get("ray_max_retries", 3))
        self._max_workers = extra.get("ray_workers")
        if ray.is_initialized():
            logger.info("ray: using the Ray session this process already has")
            return
        kw = {"include_dashboard": False, "logging_level": "WARNING"}
        kw.update(extra.get("ray_init", {}))
        if cfg.address is None:
            ray.init(address="local", **kw)
            self._started = True
            logger.info("ray: started a private local Ray (%s CPUs, %s GPUs)",
                        int(ray.cluster_resources().get("CPU", 0)),
                        int(ray.cluster_resources().get("GPU", 0)))
        else:
            env = {k: v for k, v in os.environ.items() if k.startswith("GPUCURATE_")}
            if env and "runtime_env" not in kw:
                kw["runtime_env"] = {"env_vars": env}
            try:
                ray.init(address=cfg.address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"--address {cfg.address}: cannot join a Ray cluster there "
                                  f"({exc}); start one with `ray start --head`, or leave out "
                                  "--address for a private local Ray") from None
            self._started = True  # this driver's connection, not the cluster
            res = ray.cluster_resources()
            logger.info("ray: joined the cluster at %s (%s nodes, %s CPUs, %s GPUs)",
                        cfg.address, len([n for n in ray.nodes() if n.get("Alive")]),
                        int(res.get("CPU", 0)), int(res.get("GPU", 0)))

    # ------------------------------------------------------------ workers

    def _start_workers(self, cfg: CurateConfig, n_calls: int) -> None:
        from ray.util import ActorPool

        ray = self._ray
        t0 = time.perf_counter()
        self._stop_workers()
        avail = ray.available_resources()
        gpus = int(avail.get("GPU", 0))
        if cfg.device == "gpu" and gpus == 0:
            raise DeviceError("--device gpu with --executor ray: the Ray cluster has no free "
                              "GPU; use --device cpu or auto, or add GPU nodes")
        if cfg.device != "cpu" and gpus > 0:
            wcfg = cfg
            n, opts = gpus, {"num_gpus": 1, "num_cpus": 1}
        else:
            threads = cfg.threads or 1
            wcfg = dataclasses.replace(cfg, device="cpu", threads=threads)
            n = max(1, int(avail.get("CPU", 1)) // threads)
            opts = {"num_cpus": threads}
        n = max(1, min(n, n_calls, int(self._max_workers or n)))
        # Held for the executor's life: a restarted actor takes it again.
        from .curate import worker_state

        self._shared = shared = [ray.put(worker_state(cfg))]
        cls = ray.remote(_ShardWorker).options(max_restarts=self._max_retries,
                                               max_task_retries=self._max_retries, **opts)
        self._actors = [cls.remote(wcfg, shared) for _ in range(n)]
        self.workers = self._get([a.info.remote() for a in self._actors])
        self._pool = ActorPool(self._actors)
        self._cfg_key = cfg
        self.startup_s += time.perf_counter() - t0
        logger.info("ray: %d workers in %.1f s (%s)", n, time.perf_counter() - t0, ", ".join(
            f"{w['engine']}{'/gpu ' + ','.join(w['gpus']) if w['gpus'] else ''}@{w['node']}"
            for w in self.workers))

    def _stop_workers(self) -> None:
        for a in self._actors:
            try:
                self._ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors, self._pool, self._cfg_key, self._shared = [], None, None, None

    def _get(self, refs):
        with self._errors():
            return self._ray.get(refs)

    @contextlib.contextmanager
    def _errors(self):
        """Ray's wrappers off gpucurate's own errors (bad input raised in a worker)."""
        ray = self._ray
        try:
            yield
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, GpucurateError):
                raise cause from None
            raise
        except ray.exceptions.RayActorError as exc:
            raise GpucurateError(f"a Ray worker failed for good ({exc}); a worker that dies is "
                                 f"restarted {self._max_retries} times at most. Rerun the same "
                                 "command to resume") from None

    # --------------------------------------------------------------- map

    def map(self, fn, cfg: CurateConfig, out: str, calls: list[tuple]) -> list:
        if not calls:
            return []
        if self._pool is None or self._cfg_key != cfg:
            self._start_workers(cfg, len(calls))
        ray = self._ray
        put: dict[int, _Broadcast] = {}

        def share(a):
            if isinstance(a, np.ndarray) and a.nbytes >= 1 << 16:
                if id(a) not in put:
                    put[id(a)] = _Broadcast(ray.put(a))
                return put[id(a)]
            return a

        work = [tuple(share(a) for a in args) for args in calls]
        pool = self._pool
        with self._errors():
            results = list(pool.map(lambda actor, args: actor.run.remote(fn, out, args), work))
        _sweep_tmp(out)
        return results

    def close(self) -> None:
        self._stop_workers()
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
