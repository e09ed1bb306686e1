"""The cuDF reader's array level, on real Arrow buffers, and the --reader choice.

cuDF itself cannot run here (it needs a GPU); what feeds the kernels from a
cuDF column is the same Arrow layout, checked below for every slice of a column
with nulls. The device half (UTF-8 check, match, count) runs in the CUDA
simulator in tests/sim_match.py.
"""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpucurate.cudf_io import arrow_layout, available, resolve_reader, row_group_runs
from gpucurate.pipeline import curate
from gpucurate.errors import ConfigError


@pytest.mark.parametrize("typ", [pa.string(), pa.large_string()])
def test_arrow_layout_of_every_slice(typ):
    vals = ["a", None, "bb", None, None, "ccc", "d", None, "日本", "ff", "", None] * 3
    col = pa.array(vals, typ)
    for off in range(len(vals)):
        for n in (0, 1, 7, 8, 9, len(vals) - off):
            s = col.slice(off, min(n, len(vals) - off))
            b = s.buffers()
            mask = np.frombuffer(b[0], np.uint8) if b[0] is not None else None
            offs = np.frombuffer(b[1], np.int64 if typ == pa.large_string() else np.int32)
            data, o, v = arrow_layout(offs, np.frombuffer(b[2], np.uint8), mask, s.offset, len(s))
            assert o.dtype == np.int64 and v.dtype == np.uint8 and o.size == len(s) + 1
            got = [bytes(data[o[i]:o[i + 1]]).decode() if v[i] else None for i in range(len(s))]
            assert got == s.to_pylist(), (off, n)


def test_row_group_runs_bound_text_per_batch():
    runs = row_group_runs([10, 10, 30, 5, 5], [1, 2, 3, 4, 5], 20)
    assert runs == [([0, 1], 0, 3), ([2], 3, 3), ([3, 4], 6, 9)]
    assert row_group_runs([], [], 20) == []


def test_reader_choice(tmp_path):
    assert resolve_reader("auto", "cpu") == "arrow"
    assert resolve_reader("arrow", "gpu") == "arrow"
    with pytest.raises(ConfigError, match="needs the GPU engine"):
        resolve_reader("cudf", "cpu")
    ok, why = available()
    if not ok:  # here: no cuDF, so auto falls back and an explicit cudf is refused
        assert resolve_reader("auto", "gpu") == "arrow"
        with pytest.raises(ConfigError, match="--reader cudf: cuDF is not importable"):
            resolve_reader("cudf", "gpu")
    meta = tmp_path / "m.txt"
    meta.write_text("dog\ncat\n")
    pq.write_table(pa.table({"text": ["a dog", "a cat", None]}), tmp_path / "a.parquet")
    s = curate(str(meta), [str(tmp_path / "a.parquet")], str(tmp_path / "out"), t=1,
               device="cpu", report=False)
    assert s["reader"] == "arrow" and s["matched"] == 2
    with pytest.raises(ConfigError, match="--reader must be"):
        curate(str(meta), [str(tmp_path / "a.parquet")], str(tmp_path / "o2"), t=1,
               device="cpu", reader="spark", report=False)


def test_the_gpu_readers_shards_have_their_keys_checked_on_the_host(tmp_path):
    """cuDF reads the text alone: the key column of such a shard is checked on
    the host before any output, as the arrow path checks it (a null key, a key
    that is no integer or string, or none at all stopped the run only in pass 2)."""
    from gpucurate.config import CurateConfig
    from gpucurate.errors import InputError
    from gpucurate.io import resolve_inputs
    from gpucurate.pipeline.pass1 import _check_keys_on_host

    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a dog"] * 5, "id": [1, 2, 3, None, 5],
                             "f": [0.5] * 5}), p, row_group_size=2)
    shard = resolve_inputs([str(p)])[0]
    names = ["text", "id", "f"]

    def cfg(key):
        return CurateConfig(metadata=str(p), inputs=(str(p),), out=str(tmp_path / "o"),
                            key_column=key)

    with pytest.raises(InputError, match="row 3"):
        _check_keys_on_host(cfg("id"), shard, names, None)
    _check_keys_on_host(cfg("id"), shard, names, 3)  # --limit 3: the null is not in the pool
    with pytest.raises(InputError, match="no key column 'nokey'"):
        _check_keys_on_host(cfg("nokey"), shard, names, None)
    with pytest.raises(InputError, match="double"):
        _check_keys_on_host(cfg("f"), shard, names, None)


def test_a_cudf_series_on_the_cpu_engine_is_a_clear_error(tmp_path):
    """A cudf Series (cuDF cannot be installed here: a class of its module name
    stands for it) given to a CPU Matcher: an error saying what to do, not an
    AttributeError."""
    from gpucurate import Matcher

    class Series:
        pass

    Series.__module__ = "cudf.core.series"
    with pytest.raises(ConfigError, match="to_arrow"):
        Matcher(["dog"], device="cpu").match(Series())
