"""The public matching API: :class:`Matcher`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .columns import buffers, chunks_of, csr_to_arrow
from .errors import ConfigError
from .engine import make_engine, resolve_device
from .metadata import load_metadata
from .tables import load_tables, load_tables_ww


class Matcher:
    """Exact MetaCLIP matching of captions against one metadata list.

    ``metadata``: a list of str or a path (``.json`` list, or one entry per
    line). ``worldwide=True`` applies MetaCLIP 2's rule for one language's list
    (entries unpadded beside CJK-like characters, captions stripped).
    ``device``: ``"auto"`` (GPU when usable, else CPU, logging why), ``"cpu"``
    or ``"gpu"`` (an error when no GPU is usable); None (the default) takes
    ``$GPUCURATE_DEVICE``, else ``"auto"``. The trie is built
    once (or loaded from the on-disk cache) and, on a GPU, uploaded once.
    """

    def __init__(self, metadata, device: str | None = None, threads: int | None = None,
                 cache: bool = True, worldwide: bool = False):
        device = resolve_device(device)  # fail fast, before building anything
        self.metadata = load_metadata(metadata)
        self.tables = (load_tables_ww if worldwide else load_tables)(self.metadata, cache=cache)
        self.trie = self.tables.word
        self.engine = make_engine(self.tables, device, threads)

    @property
    def device(self) -> str:
        return self.engine.name

    def match_buffers(self, tb):
        """CSR (offsets, ids) of Arrow-layout buffers (host NumPy in, host out)."""
        return self.engine.match(tb)

    def match(self, texts):
        """One row per caption: the sorted distinct int32 ids of its matches.

        ``texts``: a list of ``str | None``, a pyarrow ``string``/``large_string``
        Array or ChunkedArray, or (GPU engine) a cudf string Series. Returns a
        pyarrow ListArray (LargeListArray past 2**31 ids), or a cudf list Series
        for cudf input. Null captions give empty lists.
        """
        if type(texts).__module__.startswith("cudf"):
            if not hasattr(self.engine, "match_cudf"):
                raise ConfigError("a cudf Series is matched on the GPU engine; this Matcher "
                                  f"runs on the {self.engine.name.upper()}: pass "
                                  "series.to_arrow(), or make the Matcher with device='gpu'")
            return self.engine.match_cudf(texts)
        parts, row = [], 0
        for chunk in chunks_of(texts):
            tb = buffers(chunk, where="captions", row_base=row)
            parts.append(self.engine.match(tb))
            row += len(chunk)
        if not parts:
            return csr_to_arrow(np.zeros(1, np.int64), np.zeros(0, np.int32))
        if len(parts) == 1:
            return csr_to_arrow(*parts[0])
        shift = np.cumsum([0] + [p[0][-1] for p in parts[:-1]])
        offsets = np.concatenate([[0]] + [p[0][1:] + s for p, s in zip(parts, shift)])
        return csr_to_arrow(offsets, np.concatenate([p[1] for p in parts]))
