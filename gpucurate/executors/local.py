"""The local executor: every call in this process. The worker says how many
shards may run at once (``shards_at_once``: one per CPU engine thread, up to
4; one on a GPU); they run on threads, so that one shard's reading and writing
(pyarrow, which releases the GIL) overlap another's matching. The engine's own
thread pool is shared, so matching never uses more cores than ``--threads``."""

from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait


class LocalExecutor:
    name = "local"
    remote = False

    def __init__(self):
        self.workers: list[dict] = []

    def prepare(self, setup, n_calls: int) -> None:
        """Build the worker now (tables, engines, a first compile), so that a
        pass's time is its work alone."""
        self._worker = setup()
        self.workers = [self._worker.describe()]

    def map(self, fn, calls: list[tuple], setup, on_result=None, names=None) -> list:
        if not calls:
            return []
        worker = setup()  # the one prepare built, when the configuration is the same
        self.workers = [worker.describe()]
        at_once = min(len(calls), worker.shards_at_once)
        if at_once <= 1:
            out = []
            for args in calls:
                out.append(fn(worker, *args))
                if on_result is not None:
                    on_result(out[-1])
            return out
        return _threaded(fn, worker, calls, at_once, on_result)

    def close(self) -> None:
        pass


def _threaded(fn, worker, calls: list[tuple], at_once: int, on_result) -> list:
    """``fn(worker, *call)`` for every call, ``at_once`` at a time, started in
    call order. At the first failure no further call starts; the calls under
    way finish (each writes its outputs whole or not at all), then the first
    failure in call order is raised."""
    results: list = [None] * len(calls)
    with ThreadPoolExecutor(at_once, thread_name_prefix="gpucurate-shard") as pool:
        futures = {pool.submit(fn, worker, *c): i for i, c in enumerate(calls)}
        pending = set(futures)
        failed = False
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in sorted(done, key=futures.get):
                    if f.cancelled() or f.exception() is not None:
                        failed = True
                        continue
                    results[futures[f]] = f.result()
                    if on_result is not None:
                        on_result(results[futures[f]])
                if failed:
                    for f in pending:
                        f.cancel()
        except BaseException:  # e.g. KeyboardInterrupt: start nothing more
            for f in futures:
                f.cancel()
            raise
    for f in sorted(futures, key=futures.get):  # the first failure, in call order
        if not f.cancelled() and f.exception() is not None:
            raise f.exception()
    return results
