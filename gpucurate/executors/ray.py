"""Run the curation stages on Ray: many GPUs in one node, many nodes, same output.

:class:`RayExecutor` has :class:`~gpucurate.executors.local.LocalExecutor`'s
interface (``name``, ``remote``, ``workers``, ``map(fn, calls, setup)``,
``close()``); the stages are the same functions either way, so the outputs are
identical (tests/test_ray.py). It only schedules: each actor builds its worker
with the setup callable the pipeline hands it.

How the work is laid out:

* The driver loads the metadata and the trie once (from the on-disk trie
  cache, or building it) into the worker setup, which is put in Ray's object
  store once.
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
* Per-shard results stay files (atomic writes and completion markers, in the
  stages), so the driver only sums small sparse count files.
* Fault tolerance: a worker process that dies is restarted (``max_restarts``)
  and its shard rerun (``max_task_retries``); the rerun rewrites the same files
  atomically (the pipeline removes a dead process's temporary files after the
  pass). A run that still fails resumes from its markers when rerun.

``cfg.extra`` may tune it: ``ray_workers`` (at most this many actors),
``ray_max_retries`` (default 3), ``ray_init`` (more ``ray.init`` keywords).
"""

from __future__ import annotations

import contextlib
import os
import time

from ..config import CurateConfig
from ..errors import ConfigError, DeviceError, GpucurateError
from ..log import logger

_EXTRA = "pip install gpucurate[ray]"


def _import_ray():
    try:
        import ray
        from ray.util import ActorPool  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray, which cannot be imported ({exc}); "
                          f"install it with `{_EXTRA}`, or use --executor local") from None
    return ray


class _ShardWorker:
    """A Ray actor: one process, one worker (one engine per language, on one
    GPU or on its CPUs), any number of shards."""

    def __init__(self, shared: list, device: str | None, threads: int | None):
        import ray

        self.worker = ray.get(shared[0])(device=device, threads=threads)

    def info(self) -> dict:
        import ray

        return {**self.worker.describe(), "node": ray.util.get_node_ip_address(),
                "gpus": [str(g) for g in ray.get_gpu_ids()]}

    def run(self, fn, args: tuple):
        return fn(self.worker, *args)


class RayExecutor:
    """Runs stage calls on a Ray cluster: a private local one (``cfg.address``
    None), or the one at ``cfg.address`` (HOST:PORT, ``auto``, ``ray://...``).
    Shuts down only a Ray it started itself."""

    name = "ray"
    remote = True  # workers are other processes: the driver ships the tables once

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

    def _start_workers(self, setup, n_calls: int) -> None:
        from ray.util import ActorPool

        ray = self._ray
        cfg = setup.cfg
        t0 = time.perf_counter()
        self._stop_workers()
        avail = ray.available_resources()
        gpus = int(avail.get("GPU", 0))
        if cfg.device == "gpu" and gpus == 0:
            raise DeviceError("--device gpu with --executor ray: the Ray cluster has no free "
                              "GPU; use --device cpu or auto, or add GPU nodes")
        if cfg.device != "cpu" and gpus > 0:
            device, threads = None, None
            n, opts = gpus, {"num_gpus": 1, "num_cpus": 1}
        else:
            device, threads = "cpu", cfg.threads or 1
            n = max(1, int(avail.get("CPU", 1)) // threads)
            opts = {"num_cpus": threads}
        n = max(1, min(n, n_calls, int(self._max_workers or n)))
        # Held for the executor's life: a restarted actor takes it again.
        self._shared = shared = [ray.put(setup)]
        cls = ray.remote(_ShardWorker).options(max_restarts=self._max_retries,
                                               max_task_retries=self._max_retries, **opts)
        self._actors = [cls.remote(shared, device, threads) for _ in range(n)]
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

    def map(self, fn, calls: list[tuple], setup) -> list:
        if not calls:
            return []
        if self._pool is None or self._cfg_key != setup.cfg:
            self._start_workers(setup, len(calls))
        pool = self._pool
        with self._errors():
            return list(pool.map(lambda actor, args: actor.run.remote(fn, args), calls))

    def close(self) -> None:
        self._stop_workers()
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
