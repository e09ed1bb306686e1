"""The local executor: every call in this process, one after another (the
engine itself is parallel: CPU threads, or the GPU)."""

from __future__ import annotations


class LocalExecutor:
    name = "local"
    remote = False

    def __init__(self):
        self.workers: list[dict] = []

    def map(self, fn, calls: list[tuple], setup) -> list:
        if not calls:
            return []
        worker = setup()
        self.workers = [worker.describe()]
        return [fn(worker, *args) for args in calls]

    def close(self) -> None:
        pass
