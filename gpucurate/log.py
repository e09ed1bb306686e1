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


def _tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Formatter(logging.Formatter):
    """``gpucurate: message`` on a terminal; with a timestamp when stderr is a
    file or a pipe (batch logs)."""

    def format(self, record):
        msg = record.getMessage()
        if _tty():
            return f"gpucurate: {msg}"
        return f"{self.formatTime(record, '%Y-%m-%d %H:%M:%S')} gpucurate: {msg}"


def configure(quiet: bool = False) -> None:
    """Send gpucurate's log to stderr (INFO, or WARNING with ``quiet``). The
    command line calls it; the Python API logs through the ``gpucurate``
    logger and calls it only when asked (``progress=True``)."""
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        h = _StderrHandler()
        h.setFormatter(_Formatter())
        logger.addHandler(h)
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


class RunProgress:
    """The run-level progress of one pass: shards done k/N, captions,
    captions/s and the time left. On a terminal one line updated in place;
    elsewhere a timestamped log line at most every ``every`` seconds. Captions
    are counted as batches finish (``add``, in this process) and as shards
    finish (``shard_done``, for shards run by other processes)."""

    current = None  # the pass running in this process, fed by Progress.update

    def __init__(self, label: str, shards: int, rows: int | None = None, every: float = 2.0):
        self.label, self.shards, self.rows, self.every = label, shards, rows, every
        self.done = 0
        self.captions = 0       # captions of finished shards
        self.partial = 0        # captions of shards still running here
        self.t0 = self.last = time.perf_counter()
        self.live = _tty() and logger.isEnabledFor(logging.INFO)
        RunProgress.current = self

    def add(self, n: int) -> None:
        self.partial += n
        self._maybe()

    def shard_done(self, result) -> None:
        self.done += 1
        n = int(result.get("captions", 0) or 0) if isinstance(result, dict) else 0
        self.captions += n
        self.partial = 0
        self._maybe(force=self.done == self.shards)

    def _maybe(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= (0.5 if self.live else self.every):
            self.last = now
            self._show(now)

    def _text(self, now: float) -> str:
        seen = self.captions + self.partial
        dt = max(now - self.t0, 1e-9)
        rate = seen / dt
        if self.rows:
            frac = min(1.0, seen / self.rows)
        else:
            frac = self.done / self.shards if self.shards else 1.0
        eta = ""
        if 0 < frac < 1:
            eta = f", {dt * (1 - frac) / frac:,.0f} s left"
        return (f"{self.label}: {self.done}/{self.shards} shards, {seen:,} captions, "
                f"{rate:,.0f} captions/s{eta}")

    def _show(self, now: float) -> None:
        if self.live:
            sys.stderr.write("\r\x1b[2K" + f"gpucurate: {self._text(now)}")
            sys.stderr.flush()
        else:
            logger.info("%s", self._text(now))

    def close(self) -> None:
        if RunProgress.current is self:
            RunProgress.current = None
        if self.live:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
            logger.info("%s", self._text(time.perf_counter()))


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
        if RunProgress.current is not None:
            RunProgress.current.add(n)
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
        logger.debug("%s: %s%s captions, %s captions/s", self.label, f"{self.done:,}", of,
                     f"{self.done / dt:,.0f}")
