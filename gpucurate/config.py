"""Curation configuration: one frozen, validated dataclass shared by every stage."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import operator
import os
from dataclasses import asdict, dataclass, field

from .errors import ConfigError

DEFAULT_BATCH_BYTES = 32 << 20
DEVICES = ("auto", "cpu", "gpu")


def cache_dir() -> str:
    """``$GPUCURATE_CACHE_DIR`` or ``~/.cache/gpucurate``: built tries and the
    digests of checked metadata files (rebuilt when absent)."""
    return os.environ.get("GPUCURATE_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "gpucurate")


def device_choice(value: str | None = None) -> str:
    """The one place where the device is chosen: an explicit value, else
    ``$GPUCURATE_DEVICE``, else ``auto`` (validated; ``auto`` is resolved to a
    GPU or the CPU by :func:`gpucurate.engine.resolve_device`)."""
    choice = value or os.environ.get("GPUCURATE_DEVICE") or "auto"
    if choice not in DEVICES:
        src = "" if value else " ($GPUCURATE_DEVICE)"
        raise ConfigError(f"device{src} must be one of {', '.join(DEVICES)}, not {choice!r}")
    return choice


def whole(flag: str, value) -> int:
    """``value`` as an int when it is one (a Python or NumPy integer, not a
    bool, a float or a string: those were truncated or raised TypeError)."""
    if isinstance(value, bool):
        raise ConfigError(f"{flag} must be an integer, not {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ConfigError(f"{flag} must be an integer, not {value!r}") from None


def threads_choice(value: int | None = None) -> int:
    """CPU engine threads: an explicit value, else ``$GPUCURATE_THREADS``, else
    every core this process may run on."""
    if value is not None:
        if whole("--threads", value) < 1:
            raise ConfigError(f"--threads must be >= 1, not {value}")
        return int(value)
    env = os.environ.get("GPUCURATE_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ConfigError(f"$GPUCURATE_THREADS must be an integer >= 1, not {env!r}") from None
        if n < 1:
            raise ConfigError(f"$GPUCURATE_THREADS must be >= 1, not {env!r}")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class CurateConfig:
    """What a curation run does. Explicit values beat environment variables
    (``GPUCURATE_DEVICE``, ``GPUCURATE_THREADS``), which beat defaults: the
    device is resolved here (:func:`device_choice`); ``threads`` None means
    :func:`threads_choice` in each worker process."""

    metadata: str | None
    inputs: tuple[str, ...]
    out: str
    t: int | None = None
    tail_fraction: float | None = None
    text_column: str | None = None  # None: text, else caption, chosen from the shards
    key_column: str | None = None
    seed: int = 0
    device: str | None = None        # None: $GPUCURATE_DEVICE, else auto
    reader: str = "auto"             # pass 1's shard reader on a GPU: auto, arrow or cudf
    batch_bytes: int = DEFAULT_BATCH_BYTES
    threads: int | None = None
    limit: int | None = None
    save_matches: bool = False
    overwrite: bool = False
    report: bool = True
    executor: str = "local"
    address: str | None = None
    counts_file: str | None = None   # balance: pool counts from a file instead of pass 1
    worldwide: str | None = None     # MetaCLIP 2: a directory of <lang>.json metadata
    lang_column: str | None = None   # worldwide: the caption's language (else language ID)
    t_lang: tuple = ()               # worldwide: ((lang, t), ...) overrides
    group_column: str | None = None  # worldwide: one caption per group (e.g. per image)
    verify_inputs: bool = False      # the run fingerprint hashes every shard's content
    on_bad_row: str = "error"        # error | skip (bad rows to DIR/rejected/)
    outputs: tuple = ("parquet",)    # parquet, webdataset, uids (gpucurate.pipeline.outputs)
    samples_per_shard: int = 10000   # webdataset: kept samples per output tar
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        for name in ("metadata", "out", "counts_file", "worldwide"):
            v = getattr(self, name)
            if isinstance(v, os.PathLike):
                object.__setattr__(self, name, os.fspath(v))
        if isinstance(self.inputs, (str, os.PathLike)):
            object.__setattr__(self, "inputs", (os.fspath(self.inputs),))
        else:
            object.__setattr__(self, "inputs", tuple(os.fspath(p) for p in self.inputs))
        if not self.inputs:
            raise ConfigError("no input given: pass --input with files, directories or globs")
        if not str(self.out or "").strip():
            raise ConfigError("--out is empty: give the output directory (a new one, or a "
                              "run's to resume)")
        for flag, v in (("--text-column", self.text_column), ("--key-column", self.key_column),
                        ("--group-column", self.group_column),
                        ("--lang-column", self.lang_column)):
            if v is not None and not str(v).strip():
                raise ConfigError(f"{flag} is empty: give a column name, or leave the flag out")
        if (self.metadata is None) == (self.worldwide is None):
            raise ConfigError("give exactly one of --metadata FILE and --worldwide DIR")
        if self.t is not None:
            if isinstance(self.t, bool) or not isinstance(self.t, numbers.Real) or \
                    not math.isfinite(self.t) or int(self.t) != self.t or self.t < 1:
                raise ConfigError(f"--t must be an integer >= 1, not {self.t!r}")
            object.__setattr__(self, "t", int(self.t))
        if self.tail_fraction is not None and (
                isinstance(self.tail_fraction, (bool, str, bytes)) or
                not isinstance(self.tail_fraction, numbers.Real) or
                not (0.0 < self.tail_fraction <= 1.0)):
            raise ConfigError(f"--tail-fraction must be in (0, 1], not {self.tail_fraction!r}")
        if not (0 <= whole("--seed", self.seed) < 2**64):
            raise ConfigError(f"--seed must be in [0, 2**64), not {self.seed!r}")
        if whole("--batch-bytes", self.batch_bytes) < 1:
            raise ConfigError(f"--batch-bytes must be >= 1, not {self.batch_bytes}")
        if self.threads is not None and whole("--threads", self.threads) < 1:
            raise ConfigError(f"--threads must be >= 1, not {self.threads}")
        if self.limit is not None and whole("--limit", self.limit) < 1:
            raise ConfigError(f"--limit must be >= 1, not {self.limit}")
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"--executor must be local or ray, not {self.executor!r}")
        if self.address and self.executor != "ray":
            raise ConfigError(f"--address {self.address} names a Ray cluster: give it with "
                              "--executor ray (the run would be local)")
        object.__setattr__(self, "t_lang", tuple(sorted(dict(self.t_lang).items())))
        for code, t in self.t_lang:
            if isinstance(t, bool) or int(t) != t or t < 1:
                raise ConfigError(f"--t-lang {code}={t}: t must be an integer >= 1")
        if (self.lang_column or self.t_lang) and not self.worldwide:
            raise ConfigError("--lang-column and --t-lang go with --worldwide")
        from .pipeline.outputs import check_output_names
        object.__setattr__(self, "outputs", check_output_names(self.outputs))
        if isinstance(self.samples_per_shard, bool) or int(self.samples_per_shard) < 1:
            raise ConfigError(f"--samples-per-shard must be an integer >= 1, not "
                              f"{self.samples_per_shard!r}")
        object.__setattr__(self, "device", device_choice(self.device))
        if self.on_bad_row not in ("error", "skip"):
            raise ConfigError(f"--on-bad-row must be error or skip, not {self.on_bad_row!r}")
        if self.reader not in ("auto", "arrow", "cudf"):
            raise ConfigError(f"--reader must be auto, arrow or cudf, not {self.reader!r}")

    def require_t(self) -> None:
        if self.worldwide and self.t is None and self.tail_fraction is None and self.t_lang:
            raise ConfigError("--t-lang overrides a t derived from --t (for en) or "
                              "--tail-fraction: give one of those too")
        if (self.t is None) == (self.tail_fraction is None):
            raise ConfigError("give exactly one of --t T (an integer >= 1) and "
                              "--tail-fraction P (0 < P <= 1)")

    def fingerprint_doc(self, metadata_sha: str, shards, stage: str,
                        counts_sha: str | None = None) -> dict:
        """Everything that decides the outputs (not device, threads or batch
        size, which never change them): the settings, and each input shard's
        path, size and modification time (and content hash with
        ``verify_inputs``); ``shards`` is a list of such dicts."""
        doc = {"stage": stage, "metadata": metadata_sha, "inputs": list(shards),
                "text_column": self.text_column, "key_column": self.key_column,
                "t": self.t, "tail_fraction": self.tail_fraction, "seed": int(self.seed),
                "limit": self.limit, "counts": counts_sha, "worldwide": bool(self.worldwide),
                "lang_column": self.lang_column, "t_lang": [list(x) for x in self.t_lang],
                "group_column": self.group_column, "on_bad_row": self.on_bad_row}
        if self.save_matches:  # absent by default: earlier fingerprints still hold
            doc["save_matches"] = True  # a resumed run would lack the done shards' index
        if self.outputs != ("parquet",):  # absent by default: earlier fingerprints still hold
            doc["outputs"] = list(self.outputs)
            if "webdataset" in self.outputs:
                doc["samples_per_shard"] = int(self.samples_per_shard)
        return doc

    @staticmethod
    def fingerprint_of(doc: dict) -> str:
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra", None)
        d["inputs"] = list(self.inputs)
        d["outputs"] = list(self.outputs)
        if self.metadata is not None and not isinstance(self.metadata, (str, os.PathLike)):
            d["metadata"] = f"<list of {len(self.metadata)} entries>"
        return d
