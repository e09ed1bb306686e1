"""The streaming pipeline: outputs independent of sharding and batch size,
pass 2 reusing pass 1's matches, and summary figures that stay true."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpucurate.pipeline import curate, run
from gpucurate.config import CurateConfig
from gpucurate.pipeline.stream import Behind, prefetch
from pool import real_rows, write_parquet_shards


@pytest.fixture(scope="module")
def pool(tmp_path_factory, metadata_path):
    root = tmp_path_factory.mktemp("stream")
    t = real_rows("html_img_alttext", 3000)
    t = t.append_column("uid", pa.array([f"k{i:06d}" for i in range(t.num_rows)]))
    one = write_parquet_shards(t, root / "one", 1)
    eight = write_parquet_shards(t, root / "eight", 8)
    return root, t, one, eight


def _curated(out):
    t = pq.read_table(os.path.join(out, "curated"))
    return sorted(zip(t.column("uid").to_pylist(), t.column("entry_ids").to_pylist()))


def _counts(out):
    return pq.read_table(os.path.join(out, "entry_counts.parquet")).column("count").to_pylist()


def test_one_shard_and_eight_give_the_same_curation(pool, metadata_path):
    root, t, one, eight = pool
    kw = dict(t=3, key_column="uid", device="cpu", report=False)
    curate(metadata_path, one, str(root / "o1"), **kw)
    curate(metadata_path, eight, str(root / "o8"), **kw)
    assert _curated(root / "o1") == _curated(root / "o8")
    assert _counts(root / "o1") == _counts(root / "o8")
    assert len(_curated(root / "o1")) > 0


def test_small_batches_give_identical_outputs(pool, metadata_path):
    root, t, one, eight = pool
    kw = dict(t=3, key_column="uid", device="cpu", report=False)
    curate(metadata_path, one, str(root / "big"), **kw)
    curate(metadata_path, one, str(root / "small"), batch_bytes=4096, **kw)
    a = pq.read_table(root / "big" / "curated")
    b = pq.read_table(root / "small" / "curated")
    assert a.equals(b) and a.num_rows > 0
    assert _counts(root / "big") == _counts(root / "small")
    # the part was written in several row groups as the batches came
    assert pq.ParquetFile(root / "small" / "curated" / "part-00000.parquet").num_row_groups > 1


def test_curated_parts_keep_statistics_but_on_free_text(pool, metadata_path):
    """The parts' footers: min/max and null counts for the key and every
    non-text column, none for captions (their encoding's costliest part);
    dictionary pages for all but text and the key (whose dictionaries would
    overflow)."""
    root, t, one, eight = pool
    t = t.append_column("width", pa.array(np.arange(t.num_rows) % 7 * 64, pa.int64()))
    src = write_parquet_shards(t, root / "stats-in", 1)
    out = root / "stats"
    curate(metadata_path, src, str(out), t=3, key_column="uid", device="cpu", report=False)
    md = pq.ParquetFile(out / "curated" / "part-00000.parquet").metadata
    assert md.num_rows > 0
    cols = {md.row_group(0).column(c).path_in_schema: md.row_group(0).column(c)
            for c in range(md.row_group(0).num_columns)}
    assert cols["uid"].statistics is not None and cols["uid"].statistics.has_min_max
    assert cols["entry_ids.list.element"].statistics is not None
    assert cols["width"].statistics is not None and cols["width"].statistics.has_min_max
    assert cols["text"].statistics is None
    assert cols["width"].has_dictionary_page and cols["entry_ids.list.element"].has_dictionary_page
    for c in ("uid", "text"):
        assert not cols[c].has_dictionary_page, c
    kept = pq.read_table(out / "curated")
    assert set(kept.column("width").to_pylist()) <= {i * 64 for i in range(7)}


def test_pass2_reuses_pass1_matches_and_equals_matching_again(pool, metadata_path, tmp_path):
    root, t, one, eight = pool
    out = str(tmp_path / "c")
    s = curate(metadata_path, eight, out, t=3, key_column="uid", device="cpu", report=False,
               batch_bytes=20000)
    assert not os.path.exists(os.path.join(out, "work", "matches")) or \
        not os.listdir(os.path.join(out, "work", "matches"))  # removed once pass 2 is done
    assert not os.path.exists(os.path.join(out, "matches"))
    # balance has no pass 1: it matches again, and must agree
    cfg = CurateConfig(metadata=metadata_path, inputs=tuple(eight), out=str(tmp_path / "b"),
                       t=3, key_column="uid", device="cpu", report=False,
                       counts_file=os.path.join(out, "entry_counts.parquet"))
    b = run(cfg, "balance")
    assert b["curated"] == s["curated"]
    assert pq.read_table(os.path.join(out, "curated")).equals(
        pq.read_table(str(tmp_path / "b" / "curated")))


def test_save_matches_keeps_metaclip_index_and_pass2_reads_the_spill(pool, metadata_path,
                                                                    tmp_path, monkeypatch):
    """With --save-matches a curate run writes MetaCLIP's parquet index (text
    ids delta-encoded, entry ids with a dictionary) and pass 2 still reads the
    raw spill: the same rows as a run without it, and an index equal to the
    matcher's lists."""
    from gpucurate.matcher import Matcher
    from gpucurate.pipeline import spill

    root, t, one, eight = pool
    kw = dict(t=3, key_column="uid", device="cpu", report=False)
    curate(metadata_path, eight[:2], str(tmp_path / "plain"), **kw)
    took = []
    real = spill.SpillReader.take

    def spy(self, lo, hi):
        took.append(hi - lo)
        return real(self, lo, hi)

    monkeypatch.setattr(spill.SpillReader, "take", spy)
    out = tmp_path / "saved"
    curate(metadata_path, eight[:2], str(out), save_matches=True, **kw)
    assert sum(took) == sum(pq.ParquetFile(p).metadata.num_rows for p in eight[:2])
    assert pq.read_table(out / "curated").equals(pq.read_table(tmp_path / "plain" / "curated"))
    from gpucurate.pipeline.layout import OutputLayout

    path = OutputLayout(str(out)).matches(0)
    md = pq.ParquetFile(path).metadata
    assert "DELTA_BINARY_PACKED" in md.row_group(0).column(1).encodings
    inv = pq.read_table(path)
    texts = pq.read_table(eight[0], columns=["text"]).column("text").to_pylist()
    lists = Matcher(metadata_path, device="cpu").match(texts)
    want = sorted((int(e), i) for i, ids in enumerate(lists) for e in ids)
    got = sorted(zip(inv.column("entry_id").to_pylist(), inv.column("text_id").to_pylist()))
    assert got == want and want


def test_pass2_matches_again_over_another_versions_spill(pool, metadata_path, tmp_path):
    """A run resumed after an upgrade finds pass 1's matches in another
    version's format: pass 2 matches that shard again (and says so), with the
    same rows as the first run."""
    from gpucurate.pipeline.layout import OutputLayout
    from gpucurate.pipeline.spill import MAGIC

    root, t, one, eight = pool
    out = str(tmp_path / "v")
    kw = dict(t=3, key_column="uid", device="cpu", report=False)
    curate(metadata_path, eight, out, **kw)
    first = pq.read_table(os.path.join(out, "curated"))
    lay = OutputLayout(out)
    os.remove(lay.stats(3))  # shard 3's pass 2 to do again
    old = bytearray(MAGIC.to_bytes(8, "little"))
    old[6] = ord("2")  # " GPCSP2": the format before this one
    with open(lay.work_matches(3), "wb") as f:
        f.write(bytes(old) + b"\0" * 64)
    import logging

    from gpucurate.log import logger

    said = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())
    logger.addHandler(handler)  # (the command line's set-up stops propagation)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        curate(metadata_path, eight, out, **kw)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert any("another version of gpucurate" in m for m in said), said
    assert not os.path.exists(lay.work_matches(3))
    assert pq.read_table(os.path.join(out, "curated")).equals(first) and first.num_rows


def test_scratch_left_after_a_shards_marker_is_removed(pool, metadata_path, tmp_path):
    """A stop (or a lost worker) between a shard's pass 2 marker and the
    removal of pass 1's scratch for it leaves a spill and parsed rows: the
    shard run again (a lost worker's retry) and the next run both remove
    them."""
    from gpucurate.pipeline.layout import OutputLayout
    from gpucurate.pipeline.pass2 import pass2_shard
    from gpucurate.pipeline.worker import setup

    root, t, one, eight = pool
    out = str(tmp_path / "s")
    kw = dict(t=3, key_column="uid", device="cpu", report=False)
    curate(metadata_path, eight, out, **kw)
    lay = OutputLayout(out)

    def leave_scratch(i):
        os.makedirs(os.path.dirname(lay.work_matches(i)), exist_ok=True)
        open(lay.work_matches(i), "wb").write(b"x" * 8)
        os.makedirs(os.path.join(lay.work_rows(i), "x"), exist_ok=True)

    leave_scratch(2)
    cfg = CurateConfig(metadata=metadata_path, inputs=tuple(eight), out=out, **kw)
    from gpucurate.io import resolve_inputs

    shard = resolve_inputs(list(eight))[2]
    before = json.load(open(lay.stats(2)))
    assert pass2_shard(setup(cfg), lay, shard, None) == before  # the retry: done already
    assert not os.path.exists(lay.work_matches(2)) and not os.path.exists(lay.work_rows(2))
    leave_scratch(5)
    curate(metadata_path, eight, out, **kw)  # every shard done: the run cleans up
    assert not os.path.exists(lay.work_matches(5)) and not os.path.exists(lay.work_rows(5))


def test_jsonl_columns_that_appear_late_reach_the_output(metadata_path, tmp_path):
    rows = [{"text": "a photo of a dog", "id": i} for i in range(50)]
    rows += [{"text": "a photo of a cat", "id": 50 + i, "extra": "x"} for i in range(50)]
    p = str(tmp_path / "a.jsonl")
    with open(p, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    s = curate(metadata_path, [p], str(tmp_path / "o"), t=1000, device="cpu", report=False,
               batch_bytes=64)
    out = pq.read_table(tmp_path / "o" / "curated")
    assert s["curated"] == out.num_rows == 100
    assert out.column("extra").to_pylist() == [None] * 50 + ["x"] * 50


def test_rerun_that_skips_everything_keeps_true_figures(pool, metadata_path, tmp_path):
    root, t, one, eight = pool
    out = str(tmp_path / "r")
    kw = dict(t=3, key_column="uid", device="cpu", report=False)
    s1 = curate(metadata_path, eight, out, **kw)
    s2 = curate(metadata_path, eight, out, **kw)
    assert s2["seconds"] == s1["seconds"] and s2["captions_per_s"] == s1["captions_per_s"]
    for k in ("pass1", "pass2"):
        assert s1["captions_per_s"][k] == pytest.approx(s1["pool"] / s1["seconds"][k])
    on_disk = json.load(open(os.path.join(out, "summary.json")))
    assert on_disk["captions_per_s"] == s1["captions_per_s"]


def test_prefetch_and_behind_carry_errors_and_order():
    def gen():
        yield 1
        yield 2
        raise ValueError("boom")

    got = []
    with pytest.raises(ValueError, match="boom"):
        for x in prefetch(gen(), 1):
            got.append(x)
    assert got == [1, 2]
    seen = []
    b = Behind(seen.append, 1)
    for i in range(100):
        b.put(i)
    b.close()
    assert seen == list(range(100))

    def bad(x):
        raise OSError("disk full")

    b = Behind(bad, 1)
    b.put(1)
    with pytest.raises(OSError, match="disk full"):
        b.close()


def test_jsonl_and_tar_rows_are_parsed_once(metadata_path, tmp_path):
    """Pass 2 reads pass 1's parsed rows (work/rows/), removed once it is done;
    the outputs equal a run that parses the shard again (balance)."""
    rows = [{"text": f"a photo of a dog {i}" if i % 3 else None, "id": i, "x": i * 0.5}
            for i in range(300)]
    p = str(tmp_path / "a.jsonl")
    with open(p, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    out = tmp_path / "o"
    s = curate(metadata_path, [p], str(out), t=2, key_column="id", device="cpu", report=False,
               batch_bytes=512)
    assert not os.path.exists(out / "work" / "rows" / "shard-00000.d")
    cfg = CurateConfig(metadata=metadata_path, inputs=(p,), out=str(tmp_path / "b"), t=2,
                       key_column="id", device="cpu", report=False, batch_bytes=512,
                       counts_file=str(out / "entry_counts.parquet"))
    b = run(cfg, "balance")
    assert b["curated"] == s["curated"] > 0
    assert pq.read_table(out / "curated").equals(pq.read_table(tmp_path / "b" / "curated"))


def test_shards_at_once_give_the_same_files_as_one_at_a_time(pool, metadata_path):
    """Two shards at once in one process (threads=2) write every part, count
    and marker exactly as one at a time (threads=1)."""
    root, t, one, eight = pool
    kw = dict(t=3, key_column="uid", device="cpu", report=False, save_matches=True)
    curate(metadata_path, eight, str(root / "at1"), threads=1, **kw)
    s2 = curate(metadata_path, eight, str(root / "at2"), threads=2, **kw)
    assert _counts(root / "at1") == _counts(root / "at2")
    from gpucurate.pipeline.layout import OutputLayout

    l1, l2 = OutputLayout(str(root / "at1")), OutputLayout(str(root / "at2"))
    for i in range(8):
        for path in ("curated", "matches"):
            a = pq.read_table(getattr(l1, path)(i))
            b = pq.read_table(getattr(l2, path)(i))
            assert a.equals(b), (path, i)
    assert s2["curated"] == len(_curated(root / "at1")) > 0


class _Worker:
    def __init__(self, at_once):
        self.shards_at_once = at_once

    def describe(self):
        return {"shards_at_once": self.shards_at_once}


def test_local_executor_runs_shards_at_once_in_call_order():
    import threading
    import time

    from gpucurate.executors import LocalExecutor

    lock, running, peak, seen = threading.Lock(), [0], [0], []

    def fn(w, i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02 * (5 - i % 5))  # later calls finish first
        with lock:
            running[0] -= 1
        return i * 10

    ex = LocalExecutor()
    w = _Worker(3)
    out = ex.map(fn, [(i,) for i in range(10)], lambda: w, seen.append)
    assert out == [i * 10 for i in range(10)]  # call order, whatever the finishing order
    assert sorted(seen) == out and peak[0] == 3
    assert ex.workers == [{"shards_at_once": 3}]


def test_local_executor_stops_at_a_failure_and_raises_the_first_in_call_order():
    import threading

    from gpucurate.executors import LocalExecutor

    started = []
    gate = threading.Event()

    def fn(w, i):
        started.append(i)
        if i == 1:
            gate.wait(5)  # call 2 fails first in time; call 1 fails after it
            raise ValueError("call 1")
        if i == 2:
            gate.set()
            raise KeyError("call 2")
        return i

    with pytest.raises(ValueError, match="call 1"):
        LocalExecutor().map(fn, [(i,) for i in range(50)], lambda: _Worker(3))
    assert len(started) < 50  # no call started after the failure was seen


def test_parquet_reads_follow_the_batch_not_the_row_group(tmp_path):
    """One 200k-row group read in small batches: the column chunks are read
    through a buffer, not held whole (pyarrow's pre-buffering would hold all
    of them, ~30 MB here)."""
    from gpucurate.io import Shard
    from gpucurate.io.parquet import read_parquet

    n = 200_000
    t = pa.table({"caption": pa.array([f"a caption number {i} of the pool" for i in range(n)]),
                  "url": pa.array([f"https://example.com/{i:08d}/image.jpg" for i in range(n)]),
                  "key": pa.array([f"{i:032x}" for i in range(n)])})
    path = tmp_path / "one.parquet"
    pq.write_table(t, path, row_group_size=n, compression="none", use_dictionary=False)
    whole = pq.ParquetFile(path).metadata.row_group(0).total_byte_size
    assert whole > 20e6
    base = pa.total_allocated_bytes()
    peak, rows = 0, 0
    for b in read_parquet(Shard(0, str(path), "one.parquet", "parquet"), "caption", 1 << 20):
        rows += b.num_rows
        peak = max(peak, pa.total_allocated_bytes() - base)
        del b
    assert rows == n
    assert peak < whole / 3, (peak, whole)


def test_spill_round_trip_ranges_alignment_and_cuts(tmp_path):
    """Pass 1's raw spill (each batch's lists in row order) read back by
    ranges that split frames: the same CSR and row languages, as aligned
    arrays (numba compiles for aligned arrays), with or without languages and
    odd frame sizes (an empty one too); a file cut anywhere, or of another
    version, is an error."""
    from gpucurate.errors import InputError
    from gpucurate.pipeline.spill import SpillReader, SpillWriter

    rng = np.random.default_rng(5)
    for with_lang in (False, True):
        path = str(tmp_path / f"s{with_lang}.bin")
        w = SpillWriter(path, with_lang)
        want_lens, want_ids, want_l, first = [], [], [], 0
        for n_rows in (7, 1, 0, 12, 5):
            lens = rng.integers(0, 4, n_rows)
            ids = rng.integers(0, 2**30, int(lens.sum())).astype(np.int32)
            li = rng.integers(-1, 3, n_rows).astype(np.int32) if with_lang else None
            w.write(lens, ids, li, first)
            want_lens.append(lens), want_ids.append(ids), want_l.append(li)
            first += n_rows
        w.close()
        want_lens, want_ids = np.concatenate(want_lens), np.concatenate(want_ids)
        want_l = np.concatenate(want_l) if with_lang else None
        for step in (4, first):  # ranges across frame boundaries; all rows at once
            r = SpillReader(path)
            got = []
            for lo in range(0, first, step):
                hi = min(first, lo + step)
                off, ids, li = r.take(lo, hi)
                assert off.size == hi - lo + 1 and off[0] == 0 and off[-1] == ids.size
                assert ids.dtype == np.int32 and (li is None) == (not with_lang)
                for a in (ids,) + ((li,) if with_lang else ()):
                    assert a.flags.aligned and a.ctypes.data % a.itemsize == 0
                got.append((np.diff(off), ids, li))
            r.close()
            assert np.array_equal(np.concatenate([g[0] for g in got]), want_lens)
            assert np.array_equal(np.concatenate([g[1] for g in got]), want_ids)
            if with_lang:
                assert np.array_equal(np.concatenate([g[2] for g in got]), want_l)
        raw = open(path, "rb").read()
        for cut in (len(raw) - 1, 48, 20):
            open(path, "wb").write(raw[:cut])
            with pytest.raises(InputError, match="cut short"):
                SpillReader(path).take(0, first)
        open(path, "wb").write(b"\0" * 8 + raw[8:])
        with pytest.raises(InputError, match="not a matches file of this version"):
            SpillReader(path).take(0, first)


def test_lists_kernels_equal_numpy():
    """Pass 2's one-pass helpers: CSR offsets of rows from ascending (text id,
    entry id) pairs (refused when a pair falls outside the rows or the ids go
    back), and the kept rows' lists gathered with their entries counted, equal
    to what NumPy's repeat, bincount and fancy indexing give."""
    from gpucurate.kernels.lists import csr_of_rows, kept_lists

    rng = np.random.default_rng(9)
    for n in (0, 1, 7, 300):
        lens = rng.integers(0, 5, n)
        first = 1000
        text = np.repeat(np.arange(first, first + n, dtype=np.uint32), lens)
        ids = rng.integers(0, 50, text.size).astype(np.int32)
        off = np.empty(n + 1, np.int64)
        assert csr_of_rows(text, first, n, off)
        want_off = np.concatenate([[0], np.cumsum(lens)])
        assert np.array_equal(off, want_off)
        keep = rng.random(n) < 0.5
        counts = np.zeros(50, np.int64)
        k_off, k_ids = kept_lists(off, ids, keep, counts)
        assert np.array_equal(k_off, np.concatenate([[0], np.cumsum(lens[keep])]))
        assert np.array_equal(k_ids, ids[np.repeat(keep, lens)])
        assert np.array_equal(counts, np.bincount(k_ids, minlength=50))
        off2 = np.empty(n + 1, np.int64)
        if text.size and text[0] != text[-1]:
            assert not csr_of_rows(text[::-1].copy(), first, n, off2)  # not ascending
        if n and lens[0]:
            assert not csr_of_rows(text, first + 1, n, off2)  # a row before the range
        if n and lens[-1]:
            assert not csr_of_rows(text, first, n - 1, off2)  # a row past it


def test_saved_csr_groups_equal_each_languages_own_lists():
    """Pass 2 of a worldwide batch: each language group's CSR, built in one
    pass over the saved pairs, equals its rows' lists of pairs in that
    language (pairs per language in row order, as pass 1 writes them; pairs
    of other rows or another language left out)."""
    from gpucurate.pipeline.pass2 import saved_csr_groups

    rng = np.random.default_rng(3)
    first, n = 1000, 400
    lang_rows = rng.integers(-1, 4, n).astype(np.int32)  # -1: unrouted, no group
    want: dict = {}
    tid, ent, lg = [], [], []
    for code in range(4):  # pass 1 writes the pairs language by language
        for r in np.nonzero(lang_rows == code)[0]:
            ids = sorted(set(rng.integers(0, 50, rng.integers(0, 4)).tolist()))
            want[int(r)] = ids
            tid += [first + r] * len(ids)
            ent += ids
            lg += [code] * len(ids)
    # pairs that must be left out: another language than the row's, rows outside
    tid += [first + 5, first - 1, first + n]
    ent += [49, 48, 47]
    lg += [int(lang_rows[5] + 1) % 4, 0, 0]
    saved = (np.array(tid, np.uint32), np.array(ent, np.int32), np.array(lg, np.int16))
    groups = [(str(c), np.nonzero(lang_rows == c)[0], c) for c in range(4)
              if (lang_rows == c).any()]
    out = saved_csr_groups(saved, first, lang_rows, groups)
    assert len(out) == len(groups)
    for (_, rows, _), (off, ids) in zip(groups, out):
        assert off.size == rows.size + 1
        got = [ids[off[k]:off[k + 1]].tolist() for k in range(rows.size)]
        assert got == [want[int(r)] for r in rows]


def test_jsonl_nested_fields_that_fill_in_later_read_alike_at_every_batch_size(tmp_path):
    """A jsonl whose nested fields fill in later (a list empty so far, a
    struct's null field given a string, a struct gaining a field) reads the
    same whole or in one-row batches: the later type is the one both widen to."""
    from gpucurate import curate

    rows = [{"text": f"a dog {i}", "tags": [], "n": {"w": None}, "m": {"w": i}}
            for i in range(30)]
    rows += [{"text": f"a dog {i}", "tags": ["x"], "n": {"w": "y"}, "m": {"w": i, "h": 2}}
             for i in range(30, 60)]
    os.makedirs(tmp_path / "in")
    with open(tmp_path / "in" / "a.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    meta = tmp_path / "m.json"
    meta.write_text('["dog"]')
    got = []
    for bb in (1, 1 << 25):
        out = tmp_path / f"o{bb}"
        s = curate(str(meta), [str(tmp_path / "in")], str(out), t=100, batch_bytes=bb,
                   device="cpu", report=False)
        assert s["curated"] == 60
        got.append(pq.read_table(out / "curated"))
    assert got[0].equals(got[1])
    assert got[0].column("m").to_pylist()[59] == {"w": 59, "h": 2}
    assert got[0].column("m").to_pylist()[0] == {"w": 0, "h": None}
    assert got[0].column("tags").to_pylist()[59] == ["x"]


def _tar_of(path, metas):
    import io
    import tarfile

    with tarfile.open(path, "w") as tf:
        for i, m in enumerate(metas):
            for ext, blob in (("txt", b"a dog" if i % 2 == 0 else b"a cat"),
                              ("json", json.dumps(dict(m, id=i)).encode())):
                ti = tarfile.TarInfo(f"k{i:04d}.{ext}")
                ti.size = len(blob)
                tf.addfile(ti, io.BytesIO(blob))


def test_tar_fields_that_appear_later_keep_the_column_order_of_one_batch(tmp_path):
    """A tar whose .json field first appears in a later sample gives the same
    columns, in the same order (``__key__``, the fields, the caption), in one
    batch or one row per batch; curate and balance alike."""
    from gpucurate import curate

    os.makedirs(tmp_path / "in")
    _tar_of(tmp_path / "in" / "s.tar", [{}, {"s": "x"}, {"m": {"w": 1}}, {"s": "y"}] * 2)
    meta = tmp_path / "m.json"
    meta.write_text('["dog", "cat"]')
    got = []
    for bb in (1, 1 << 25):
        out = tmp_path / f"o{bb}"
        curate(str(meta), [str(tmp_path / "in")], str(out), t=100, batch_bytes=bb,
               device="cpu", report=False)
        got.append(pq.read_table(out / "curated"))
        cfg = CurateConfig(metadata=str(meta), inputs=(str(tmp_path / "in"),),
                           out=str(tmp_path / f"b{bb}"), t=100, batch_bytes=bb, device="cpu",
                           report=False, counts_file=str(out / "entry_counts.parquet"))
        run(cfg, stage="balance")
        got.append(pq.read_table(tmp_path / f"b{bb}" / "curated"))
    assert got[0].column_names == ["__key__", "id", "s", "m", "text", "entry_ids"]
    for g in got[1:]:
        assert g.equals(got[0])


def test_balance_over_a_tar_whose_field_changes_kind_is_an_error_at_every_batch_size(tmp_path):
    from gpucurate.errors import InputError

    os.makedirs(tmp_path / "in")
    _tar_of(tmp_path / "in" / "s.tar", [{"s": 1}, {"s": 2}, {"s": "x"}, {"s": "y"}])
    meta = tmp_path / "m.json"
    meta.write_text('["dog", "cat"]')
    counts = tmp_path / "c.json"
    counts.write_text(json.dumps({"dog": 2, "cat": 2}))
    for bb in (1, 1 << 25):
        cfg = CurateConfig(metadata=str(meta), inputs=(str(tmp_path / "in"),),
                           out=str(tmp_path / f"b{bb}"), t=1, batch_bytes=bb, device="cpu",
                           report=False, counts_file=str(counts))
        with pytest.raises(InputError, match="field 's'.*one type"):
            run(cfg, stage="balance")


def test_batches_of_wide_rows_follow_the_batch_size(tmp_path):
    """Rows wider than batch_bytes / 1024 (an image column): batches of fewer
    rows than 1,024 (a floor of 1,024 rows made 512 KiB rows into 512 MiB
    batches, whatever --batch-bytes); captions then wide rows: each run of row
    groups sized by its own rows, not the file's average (an 802 MB batch at
    32 MiB). jsonl: the whole line counts, not the caption alone."""
    from gpucurate.io import Shard
    from gpucurate.io.jsonl import read_jsonl
    from gpucurate.io.parquet import read_parquet

    batch = 64 << 10
    img = b"\x89" * (8 << 10)  # 8 KiB a row: 8 rows a batch
    t = pa.table({"text": [f"a dog {i}" for i in range(200)] * 2,
                  "image": pa.array([b""] * 200 + [img] * 200, pa.binary())})
    path = tmp_path / "skew.parquet"
    pq.write_table(t, path, row_group_size=100, use_dictionary=False)
    got = list(read_parquet(Shard(0, str(path), "skew.parquet", "parquet"), "text", batch))
    assert sum(b.num_rows for b in got) == 400
    assert pa.concat_tables(got).equals(pq.read_table(path))
    assert max(b.nbytes for b in got) <= 2 * batch, [b.nbytes for b in got]
    assert min(b.num_rows for b in got) < 1024
    j = tmp_path / "wide.jsonl"
    j.write_text("".join(json.dumps({"text": f"a dog {i}", "jpg_b64": "A" * (8 << 10)}) + "\n"
                         for i in range(200)))
    got = list(read_jsonl(Shard(0, str(j), "wide.jsonl", "jsonl"), "text", batch))
    assert sum(b.num_rows for b in got) == 200
    assert max(b.nbytes for b in got) <= batch, [b.nbytes for b in got]


def test_a_part_of_unknown_columns_is_spilled_not_held(tmp_path):
    """balance over jsonl or tar (no schema from a pass 1): the kept batches go
    to IPC files beside the part and are written one at a time at the end
    (held in memory, they grew with the shard); the part holds every batch's
    columns; the spill is gone once the part is written or given up."""
    from gpucurate.io import Shard
    from gpucurate.pipeline.pass2 import PartWriter

    shard = Shard(0, "x.jsonl", "x.jsonl", "jsonl")
    path = str(tmp_path / "curated" / "part-00000.parquet")
    w = PartWriter(path, None, "x.jsonl", None, lambda s: s)
    batches = [pa.table({"text": ["a"], "n": [1]}),
               pa.table({"text": ["b", "c"], "n": [2, 3], "extra": ["x", None]})]
    for i, b in enumerate(batches):
        w.saw(b.schema, shard, i)
        w.write(b)
    assert w.spilled == 2 and len(os.listdir(w.spill_dir)) == 2
    w.close(None)
    got = pq.read_table(path)
    assert got.to_pylist() == [{"text": "a", "n": 1, "extra": None},
                               {"text": "b", "n": 2, "extra": "x"},
                               {"text": "c", "n": 3, "extra": None}]
    assert os.listdir(tmp_path / "curated") == ["part-00000.parquet"]
    w = PartWriter(path + "2", None, "x.jsonl", None, lambda s: s)
    w.saw(batches[0].schema, shard, 0)
    w.write(batches[0])
    w.abort()
    assert os.listdir(tmp_path / "curated") == ["part-00000.parquet"]
