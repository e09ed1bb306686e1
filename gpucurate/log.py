"""The one progress/log layer: library code logs here and never prints."""

import logging
import sys
import time

logger = logging.getLogger("gpucurate")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure(quiet: bool = False) -> None:
    """Send gpucurate's log to stderr (INFO, or WARNING with ``quiet``)."""
    if not logger.handlers:
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("gpucurate: %(message)s"))
        logger.addHandler(h)
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


class Progress:
    """A per-pass progress line with captions/s, written through the logger.

    Updates are rate limited (one line per ``every`` seconds) so that it costs
    nothing on the hot path and stays readable in batch logs.
    """

    def __init__(self, label: str, total: int | None = None, every: float = 2.0):
        self.label, self.total, self.every = label, total, every
        self.done = 0
        self.t0 = self.last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)
            self.shown = self.done

    def close(self) -> float:
        now = time.perf_counter()
        if getattr(self, "shown", None) != self.done:
            self._line(now)
        return now - self.t0

    def _line(self, now: float) -> None:
        dt = max(now - self.t0, 1e-9)
        of = f"/{self.total:,}" if self.total else ""
        logger.info("%s: %s%s captions, %s captions/s", self.label, f"{self.done:,}", of,
                    f"{self.done / dt:,.0f}")
