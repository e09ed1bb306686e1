"""The local executor: every call in this process, one after another (the
engine itself is parallel: CPU threads, or the GPU)."""

from __future__ import annotations


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

    def map(self, fn, calls: list[tuple], setup, on_result=None) -> list:
        if not calls:
            return []
        worker = setup()  # the one prepare built, when the configuration is the same
        self.workers = [worker.describe()]
        out = []
        for args in calls:
            out.append(fn(worker, *args))
            if on_result is not None:
                on_result(out[-1])
        return out

    def close(self) -> None:
        pass
