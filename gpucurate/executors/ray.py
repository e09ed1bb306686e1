"""Run the curation stages on Ray: many GPUs in one node, many nodes, same output.

:class:`RayExecutor` has :class:`~gpucurate.executors.local.LocalExecutor`'s
interface (``name``, ``remote``, ``workers``, ``map(fn, calls, setup,
on_result)``, ``close()``); the stages are the same functions either way, so
the outputs are identical (tests/test_ray.py). It only schedules: each actor
builds its worker with the setup callable the pipeline hands it.

How the work is laid out:

* The driver loads the metadata and the trie once (from the on-disk trie
  cache, or building it) into the worker setup, put in Ray's object store once.
* Shards run as calls on a fleet of Ray actors (:class:`_Fleet`, which hands
  each idle actor the next shard and returns results in call order): one
  actor per GPU (``num_gpus=1``) when the cluster has GPUs and ``device`` is not
  ``cpu``; else one actor per ``threads`` CPUs (``--threads``, else
  ``$GPUCURATE_THREADS``, else one). Each actor takes
  the trie from the object store and builds its engine once (on a GPU: uploads
  the trie once), then serves shard after shard, pass 1 and pass 2.
  Actors rather than plain tasks, because a task worker is not pinned to a GPU:
  Ray either starts a fresh process per GPU task (its default ``max_calls=1``:
  the trie would be loaded and uploaded per shard) or, when reused, may hand a
  process whose CUDA context is on GPU 0 a task assigned GPU 1. An actor keeps
  its GPU for life.
* Per-shard results stay files (atomic writes and completion markers, in the
  stages), so the driver only sums small sparse count files.
* Fault tolerance: when a worker process or its whole node is lost (any
  RayActorError, ActorUnavailableError included, or a crashed worker or node),
  the actor is killed for good, a new one is asked for (Ray places it on a live
  node with room) and the shard runs again on the next idle worker. A rerun
  rewrites the same files atomically, and the pipeline removes leftover
  temporary files of the lost process once the pass is done. The run fails cleanly only when a
  shard lost its worker more than ``ray_max_retries`` times, or when no worker
  is running or being set up for ``ray_schedule_timeout_s`` seconds; it then
  resumes from its markers when rerun.
* A private local Ray listens on 127.0.0.1 only (:func:`_loopback_only`) and
  uses a token of its own (:func:`_private_token_env`).

``cfg.extra`` may tune it: ``ray_workers`` (at most this many actors),
``ray_max_retries`` (default 3), ``ray_schedule_timeout_s`` (default 120, or
``$GPUCURATE_RAY_SCHEDULE_TIMEOUT``), ``ray_init`` (more ``ray.init`` keywords).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import signal
import threading
import time

from ..config import CurateConfig, threads_choice
from ..errors import ConfigError, DeviceError, GpucurateError
from ..log import logger

_EXTRA = "pip install gpucurate[ray]"


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray, which cannot be imported ({exc}); "
                          f"install it with `{_EXTRA}`, or use --executor local") from None
    return ray


class _ShardWorker:
    """A Ray actor: one process, one worker (one engine per language, on one
    GPU or on its CPUs), any number of shards.

    The constructor only keeps its arguments, so that ``ping`` answers as soon
    as the actor is scheduled and its process runs (the executor's scheduling
    timeout measures that alone); ``info`` then builds the worker."""

    def __init__(self, shared: list, device: str | None, threads: int | None):
        self._shared = shared
        self._how = {"device": device, "threads": threads}
        self.worker = None

    def ping(self) -> int:
        return os.getpid()

    def info(self) -> dict:
        import ray

        if self.worker is None:
            self.worker = ray.get(self._shared[0])(**self._how)
            self._shared = None
        return {**self.worker.describe(), "node": ray.util.get_node_ip_address(),
                "gpus": [str(g) for g in ray.get_gpu_ids()]}

    def run(self, fn, args: tuple):
        if self.worker is None:
            self.info()
        return fn(self.worker, *args)


# ------------------------------------------------------------ loopback
# Self-contained: the private local Ray listens on 127.0.0.1 only.


@contextlib.contextmanager
def _loopback_only():
    """``ray.init`` keywords that keep a new local Ray on 127.0.0.1.

    Ray 2.60 turns ``_node_ip_address="127.0.0.1"`` into the machine's own
    address (``services.resolve_ip_for_localhost``) unless
    ``ray_constants.ENABLE_RAY_CLUSTER`` is false; with the node address
    127.0.0.1, its GCS, raylet, agents, driver and workers all bind to 127.0.0.1
    (else to every address). The attribute is switched for the span of
    ``ray.init`` only (its environment variable,
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, is read when ``ray`` is imported)."""
    try:
        from ray._private import ray_constants
    except ImportError:  # another Ray layout: its default address
        yield {}
        return
    old = getattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield {"_node_ip_address": "127.0.0.1"}
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old


# ------------------------------------------------------------- auth
# Self-contained: the private Ray's own token; a failed join that is an
# authentication failure says so.

_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")


def _private_token_env() -> dict:
    """Give a private local Ray a token of its own (token auth on), passed in
    the environment, unless the user chose a mode: left to itself, Ray 2.60
    writes a new token to ``~/.ray/auth_token``, which then switches token
    auth on for every later ``ray start --head`` of this user. Returns the
    previous values, for :func:`_restore_env`."""
    import secrets

    old = {k: os.environ.get(k) for k in _AUTH_VARS}
    if os.environ.get("RAY_AUTH_MODE") is None:
        os.environ["RAY_AUTH_MODE"] = "token"
        if not os.environ.get("RAY_AUTH_TOKEN"):
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        _reset_token_cache()
    return old


def _restore_env(old: dict) -> None:
    changed = False
    for k, v in old.items():
        if os.environ.get(k) != v:
            changed = True
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if changed:
        _reset_token_cache()


def _reset_token_cache() -> None:
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")  # RayConfig re-reads RAY_AUTH_MODE
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # noqa: BLE001 - a Ray without token auth
        pass


def _driver_token() -> str | None:
    """The token a driver here would send (Ray's own lookup order)."""
    tok = os.environ.get("RAY_AUTH_TOKEN")
    if tok:
        return tok.strip()
    for path in (os.environ.get("RAY_AUTH_TOKEN_PATH"),
                 os.path.join(os.path.expanduser("~"), ".ray", "auth_token")):
        if path and os.path.isfile(path):
            with open(path) as f:
                return f.read().strip() or None
    return None


def auth_failure(exc: BaseException, address: str | None) -> str | None:
    """Why a failed ``ray.init(address=...)`` failed, when the cause is
    authentication (None otherwise).

    Ray 2.60's join error says only "Failed to connect to Ray cluster"; the
    cause shows in InvalidAuthToken warnings and, sometimes, deep in the chained
    exceptions. So read the chain, then ask the GCS directly: Ray's own
    GcsClient raises AuthenticationError at once when the GCS refuses this
    process's token (or its lack of one)."""
    seen, x = [], exc
    while x is not None and len(seen) < 8:
        seen.append(f"{type(x).__name__}: {x}")
        x = x.__cause__ or x.__context__
    text = "\n".join(seen)
    refused = any(k in text for k in ("InvalidAuthToken", "AuthenticationError",
                                      "Unauthenticated", "UNAUTHENTICATED"))
    if not refused and address and "://" not in address:
        try:
            from ray._raylet import GcsClient
            from ray.exceptions import AuthenticationError
        except ImportError:
            return None
        try:
            GcsClient(address=address)
        except AuthenticationError:
            refused = True
        except Exception:  # noqa: BLE001 - no answer: not known to be auth
            return None
    if not refused:
        return None
    mode = os.environ.get("RAY_AUTH_MODE")
    where = ("in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (`ray get-auth-token` "
             "on the head prints it)")
    if (mode or "").lower() == "disabled":  # with or without a token at hand: auth is off
        return ("the cluster uses token authentication and this driver has it off "
                "(RAY_AUTH_MODE=disabled): set RAY_AUTH_MODE=token and the cluster's token"
                + ("" if _driver_token() else " " + where))
    if (mode or "").lower() != "token":  # a token at hand is not sent unless the mode says
        return (f"the cluster uses token authentication and this driver sends no token "
                f"(RAY_AUTH_MODE={mode or 'unset'}): set RAY_AUTH_MODE=token"
                + (" (the token is then read from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                   "~/.ray/auth_token)" if _driver_token() else
                   f" and the cluster's token {where}"))
    return ("the cluster refuses this driver's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
            "~/.ray/auth_token, first found): it is not the one the cluster was started "
            "with (`ray get-auth-token` on the head prints that one)")


@contextlib.contextmanager
def _keep_sigterm():
    """Keep this process's SIGTERM handler across ``ray.init``, which installs
    its own (``sys.exit(15)``) in the driver: the command line's stops the run
    with its message and status 143, as on the local executor."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(old):  # the caller's own; without one, Ray's exit (its clean-up) stays
            signal.signal(signal.SIGTERM, old)


# ----------------------------------------------------------- node loss
# Self-contained: shards run on a fleet of actors that is kept full; a shard
# whose worker or node died is run again on a live worker.


def _lost_worker(ray, exc) -> bool:
    """Whether ``exc`` means the worker (process or node) is gone, not that the
    shard failed: the shard is then run again elsewhere. ActorUnavailableError
    (Ray's "will be retried" case) is a RayActorError too."""
    e = ray.exceptions
    kinds = tuple(getattr(e, n) for n in (
        "RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
        "ActorUnschedulableError", "LocalRayletDiedError", "OutOfMemoryError") if hasattr(e, n))
    if isinstance(exc, kinds):
        return True
    cause = getattr(exc, "cause", None)
    return isinstance(exc, e.RayTaskError) and isinstance(cause, kinds)


def _first_line(exc) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


class _Fleet:
    """``n`` actors of one class, replaced as they die.

    Each actor goes through: scheduling (its ``ping`` pending: Ray has not
    placed it, or its process is starting), installing (``info``: the engine
    is built), then idle / busy. A lost actor is killed for good (it may only be
    unreachable) and a new one asked for; Ray places it on any live node with
    room, or leaves it pending until one has room."""

    def __init__(self, ray, make, n: int, max_retries: int, schedule_timeout: float):
        self.ray, self.make, self.n = ray, make, n
        self.max_retries, self.schedule_timeout = max_retries, schedule_timeout
        self.scheduling: dict = {}   # ping ref -> actor
        self.installing: dict = {}   # info ref -> actor
        self.idle: list = []
        self.busy = 0
        self.workers: list[dict] = []
        self.lost = 0
        self.setup_lost = 0  # actors lost before ready since the last one got ready

    def _live(self) -> int:
        return len(self.scheduling) + len(self.installing) + len(self.idle) + self.busy

    def fill(self) -> None:
        while self._live() < self.n:
            a = self.make()
            self.scheduling[a.ping.remote()] = a

    def drop(self, actor, setting_up: bool = False, exc=None) -> None:
        self.lost += 1
        if setting_up:
            self.setup_lost += 1
            if self.setup_lost > self.n * (self.max_retries + 1):
                self.kill_all()
                raise GpucurateError(
                    f"Ray workers died while starting {self.setup_lost} times in a row, before "
                    f"any could take a shard (the last: {type(exc).__name__}: "
                    f"{_first_line(exc)}); a worker loads the metadata's trie and builds its "
                    "engine: check the nodes' free memory and the Ray workers' logs (ray logs, "
                    "or /tmp/ray/session_latest/logs on each node)")
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def kill_all(self) -> None:
        for a in [*self.scheduling.values(), *self.installing.values(), *self.idle]:
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self.scheduling, self.installing, self.idle, self.busy = {}, {}, [], 0

    def wait_ready(self, errors) -> None:
        """Until one actor is idle (the first map's startup)."""
        self.run(None, [], errors)

    def run(self, fn, work: list, errors, progress=None, names=None) -> list:
        """Run ``fn`` over ``work`` (one call per item) on the fleet; results in
        order. ``work=[]`` waits for a first worker only. ``names``: what each
        call is, for errors (its shard). Should it raise, the actors still busy
        are killed (another call's result is never awaited)."""
        running: dict = {}  # call ref -> (index, actor)
        try:
            return self._run(fn, work, errors, progress, names, running)
        except BaseException:
            for _, a in running.values():
                try:
                    self.ray.kill(a, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            self.busy = 0
            running.clear()
            raise

    def _run(self, fn, work, errors, progress, names, running) -> list:
        ray = self.ray
        todo = list(range(len(work)))  # a heap: the lowest call first, reruns included
        results: list = [None] * len(work)
        tries = [0] * len(work)
        left = len(work)
        no_worker_since = None
        failed: dict = {}  # call -> its error: the first in call order is raised, as
        # the local executor does (not the first to arrive), once every call before it is in
        while left or (not work and not self.idle):
            if failed:
                first = min(failed)
                if not any(j < first for j, _ in running.values()) and \
                        not (todo and todo[0] < first):
                    raise failed[first]
            while todo and self.idle and (not failed or todo[0] < min(failed)):
                a = self.idle.pop()
                i = heapq.heappop(todo)
                running[a.run.remote(fn, work[i])] = (i, a)
                self.busy += 1
            self.fill()
            now = time.monotonic()
            if running or self.idle or self.installing:
                no_worker_since = None
            elif no_worker_since is None:
                no_worker_since = now
            elif now - no_worker_since > self.schedule_timeout:
                raise GpucurateError(
                    f"a Ray worker failed for good (no worker could be scheduled in "
                    f"{self.schedule_timeout:.0f} s; {self.lost} lost so far). Rerun the same "
                    "command to resume")
            refs = [*running, *self.installing, *self.scheduling]
            ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in self.scheduling:
                    a = self.scheduling.pop(ref)
                    try:
                        ray.get(ref)
                    except Exception as exc:  # noqa: BLE001
                        if not _lost_worker(ray, exc):
                            raise
                        self.drop(a, True, exc)
                        continue
                    self.installing[a.info.remote()] = a
                elif ref in self.installing:
                    a = self.installing.pop(ref)
                    try:
                        with errors():
                            self.workers.append(ray.get(ref))
                    except Exception as exc:  # noqa: BLE001
                        if not _lost_worker(ray, exc):
                            raise
                        self.drop(a, True, exc)
                        continue
                    self.setup_lost = 0
                    self.idle.append(a)
                else:
                    i, a = running[ref]  # until its result is in (a raise kills it: run)
                    try:
                        with errors():
                            results[i] = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001
                        if not _lost_worker(ray, exc):
                            del running[ref]
                            self.busy -= 1
                            self.idle.append(a)  # its call failed; the actor stands
                            failed[i] = exc
                            continue
                        del running[ref]
                        self.busy -= 1
                        self.drop(a)
                        tries[i] += 1
                        if tries[i] > self.max_retries:
                            what = names[i] if names else f"call {i}"
                            raise GpucurateError(
                                f"{what}: its Ray worker was lost {tries[i]} times (at most "
                                f"{self.max_retries} reruns; the last: {type(exc).__name__}: "
                                f"{_first_line(exc)}). When it is this call that kills its "
                                "worker (memory: try a smaller --batch-bytes or fewer "
                                "--threads), a rerun resumes from the calls done") from None
                        logger.warning("ray: a worker was lost (%s); its shard runs again",
                                       type(exc).__name__)
                        heapq.heappush(todo, i)
                        continue
                    del running[ref]
                    self.busy -= 1
                    self.idle.append(a)
                    left -= 1
                    if progress is not None:
                        progress(results[i])
        return results


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
        self._fleet = None
        self._shared = None
        self._env_old = None
        self.startup_s = 0.0  # seconds spent starting workers (inside the first map)
        self._cfg_key = None
        self.workers: list[dict] = []
        extra = cfg.extra or {}
        self._max_retries = int(extra.get("ray_max_retries", 3))
        self._max_workers = extra.get("ray_workers")
        self._schedule_timeout = float(extra.get(
            "ray_schedule_timeout_s", os.environ.get("GPUCURATE_RAY_SCHEDULE_TIMEOUT", 120)))
        if ray.is_initialized():
            logger.info("ray: using the Ray session this process already has")
            return
        kw = {"include_dashboard": False, "logging_level": "WARNING"}
        kw.update(extra.get("ray_init", {}))
        if cfg.address is None:
            self._env_old = _private_token_env()
            try:
                with _loopback_only() as lo, _keep_sigterm():
                    ray.init(address="local", **{**lo, **kw})
            except BaseException:
                _restore_env(self._env_old)
                self._env_old = None
                raise
            self._started = True
            logger.info("ray: started a private local Ray on 127.0.0.1 (%s CPUs, %s GPUs)",
                        int(ray.cluster_resources().get("CPU", 0)),
                        int(ray.cluster_resources().get("GPU", 0)))
        else:
            env = {k: v for k, v in os.environ.items() if k.startswith("GPUCURATE_")}
            if env and "runtime_env" not in kw:
                kw["runtime_env"] = {"env_vars": env}
            _check_reachable(cfg.address)
            try:
                with _keep_sigterm():
                    ray.init(address=cfg.address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                why = auth_failure(exc, _gcs_address(cfg.address))
                if why:
                    raise ConfigError(f"--address {cfg.address}: cannot join the Ray cluster "
                                      f"there: authentication failed ({why})") from None
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
            # per actor: --threads, else $GPUCURATE_THREADS, else one (actors fill the cores)
            device = "cpu"
            threads = cfg.threads or (threads_choice() if os.environ.get("GPUCURATE_THREADS")
                                      else 1)
            biggest = max((int(nd.get("Resources", {}).get("CPU", 0)) for nd in ray.nodes()
                           if nd.get("Alive")), default=0)
            if threads > biggest > 0:  # no node could ever hold such a worker
                raise ConfigError(f"--threads {threads} with --executor ray: the largest node "
                                  f"of the Ray cluster has {biggest} CPUs, so no worker of "
                                  f"{threads} threads can be placed; give --threads {biggest} "
                                  "or less (or $GPUCURATE_THREADS)")
            n = max(1, int(avail.get("CPU", 1)) // threads)
            opts = {"num_cpus": threads}
        n = max(1, min(n, n_calls, int(self._max_workers or n)))
        # Held for the executor's life: a replacement actor takes it again.
        self._shared = shared = [ray.put(setup)]
        # No Ray restarts: the fleet replaces a lost actor itself, on any live
        # node (and max_restarts > 0 with an object-store argument is logged at
        # error level by Ray 2.60's core worker).
        cls = ray.remote(_ShardWorker).options(max_restarts=0, max_task_retries=0, **opts)
        self._fleet = _Fleet(ray, lambda: cls.remote(shared, device, threads), n, self._max_retries,
                             self._schedule_timeout)
        self._fleet.wait_ready(self._errors)
        self.workers = self._fleet.workers
        self._cfg_key = cfg
        self.startup_s += time.perf_counter() - t0
        logger.info("ray: %d workers asked for; first ready in %.1f s (%s)", n,
                    time.perf_counter() - t0, ", ".join(
                        f"{w['engine']}{'/gpu ' + ','.join(w['gpus']) if w['gpus'] else ''}"
                        f"@{w['node']}" for w in self.workers))

    def _stop_workers(self) -> None:
        if self._fleet is not None:
            self._fleet.kill_all()
        self._fleet, self._cfg_key, self._shared = None, None, None

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

    # --------------------------------------------------------------- map

    def prepare(self, setup, n_calls: int) -> None:
        """Start the workers now (the first one ready), so that a pass's time
        is its work alone."""
        if self._fleet is None or self._cfg_key != setup.cfg:
            self._start_workers(setup, n_calls)

    def map(self, fn, calls: list[tuple], setup, on_result=None, names=None) -> list:
        if not calls:
            return []
        if self._fleet is None or self._cfg_key != setup.cfg:
            self._start_workers(setup, len(calls))
        return self._fleet.run(fn, calls, self._errors, on_result, names)

    def close(self) -> None:
        self._stop_workers()
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
        if self._env_old is not None:
            _restore_env(self._env_old)
            self._env_old = None


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) ``--address`` that nothing listens on
    is an error now: Ray's own join retries it for minutes, silently."""
    import socket

    if address == "auto":
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rstrip("/").rpartition(":")
    if not sep or not port.isdigit():
        return  # not HOST:PORT: left to Ray, which names what it expects
    host = host.strip("[]")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--address {address}: nothing answers there ({exc.strerror or exc}); "
                          "start the cluster's head there (ray start --head --port "
                          f"{port}), check the host and port, or leave out --address for a "
                          "private local Ray") from None


def _gcs_address(address: str) -> str | None:
    """HOST:PORT of the GCS for an ``--address`` (``auto``: Ray's own record)."""
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            return canonicalize_bootstrap_address("auto")
        except Exception:  # noqa: BLE001
            return None
    return address
