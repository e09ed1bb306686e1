"""Stages that overlap: a reader thread ahead of the matcher, a writer thread
behind it, each joined by a bounded queue.

pyarrow releases the GIL while it decodes and encodes parquet, and the CPU
engine's numba code runs ``nogil``, so reading batch k+1, matching batch k and
writing batch k-1 proceed together; the queues' depth bounds how many batches
are in memory at once (the memory of a pass is the batch size times the
depth, never the shard's size).
"""

from __future__ import annotations

import queue
import threading

_DONE = object()


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(it, depth: int = 1):
    """Yield the items of the iterable ``it``, produced by a thread of their
    own at most ``depth`` items ahead. An error in the producer is raised here,
    at the item where it happened; closing this generator stops the producer."""
    if depth <= 0:
        yield from it
        return
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run():
        try:
            for x in it:
                if not put(x):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(_Failed(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass

    th = threading.Thread(target=run, name="gpucurate-read", daemon=True)
    th.start()
    try:
        while True:
            x = q.get()
            if x is _DONE:
                return
            if isinstance(x, _Failed):
                raise x.exc
            yield x
    finally:
        stop.set()
        th.join()


class Behind:
    """Runs ``fn(item)`` for each item put, in order, on a thread of its own at
    most ``depth`` items behind the caller. ``close()`` waits for every item
    and raises the first error; ``abort()`` drops what is left."""

    def __init__(self, fn, depth: int = 1, name: str = "gpucurate-write"):
        self._fn = fn
        self._q: queue.Queue = queue.Queue(depth)
        self._exc: BaseException | None = None
        self._th = threading.Thread(target=self._run, name=name, daemon=True)
        self._th.start()

    def _run(self):
        while True:
            x = self._q.get()
            if x is _DONE:
                return
            if self._exc is None:
                try:
                    self._fn(x)
                except BaseException as exc:  # noqa: BLE001 - raised by close()
                    self._exc = exc

    def put(self, item) -> None:
        if self._exc is not None:
            raise self._exc
        self._q.put(item)

    def close(self) -> None:
        self._q.put(_DONE)
        self._th.join()
        if self._exc is not None:
            raise self._exc

    def abort(self) -> None:
        self._exc = self._exc or RuntimeError("aborted")
        self._q.put(_DONE)
        self._th.join()


class Aside:
    """``fn(*args)`` on a thread of its own, beside the work that follows;
    :meth:`join` waits for it and raises its error, if any."""

    def __init__(self, fn, *args, name: str = "gpucurate-aside"):
        self._exc: BaseException | None = None

        def run():
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - raised again by join()
                self._exc = exc

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()
        if self._exc is not None:
            exc, self._exc = self._exc, None
            raise exc
