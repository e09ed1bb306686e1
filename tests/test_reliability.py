"""Bad input, odd files and concurrent runs: a clean error naming the file (and
row or column) and the fix, or a correct result; nothing outside OUT touched."""

import fcntl
import gzip
import json
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpucurate.cli import main
from gpucurate.errors import ConfigError, InputError, MetadataError
from gpucurate.pipeline import curate, run
from gpucurate.config import CurateConfig


@pytest.fixture()
def meta(tmp_path):
    p = tmp_path / "meta.json"
    p.write_text(json.dumps(["dog", "cat", "hot dog", "a"]))
    return str(p)


def _cur(meta, inputs, out, **kw):
    kw.setdefault("t", 1000)
    kw.setdefault("device", "cpu")
    kw.setdefault("report", False)
    return curate(meta, inputs if isinstance(inputs, list) else [str(inputs)], str(out), **kw)


def _err(meta, inputs, out, **kw):
    with pytest.raises((InputError, ConfigError)) as e:
        _cur(meta, inputs, out, **kw)
    return str(e.value)


def _rows(out):
    return pq.read_table(os.path.join(out, "curated")).to_pylist()


def test_jsonl_field_changing_type_after_a_batch(meta, tmp_path):
    p = tmp_path / "a.jsonl"
    with open(p, "w") as f:
        for i in range(70000):
            f.write(json.dumps({"text": "a dog", "x": i if i < 65536 else str(i)}) + "\n")
    msg = _err(meta, p, tmp_path / "o")
    assert str(p) in msg and "'x'" in msg and "line 65537" in msg


def test_parquet_with_two_text_columns(meta, tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["a dog"]), pa.array(["x"])],
                                        names=["text", "text"]), p)
    msg = _err(meta, p, tmp_path / "o")
    assert str(p) in msg and "2 columns named 'text'" in msg


def test_out_that_is_a_file_or_cannot_be_made(meta, tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a dog"]}), p)
    f = tmp_path / "file"
    f.write_text("x")
    assert "exists and is not a directory" in _err(meta, p, f)
    assert "cannot create" in _err(meta, p, "/proc/x")
    assert main(["curate", "--metadata", meta, "--input", str(p), "--out", str(f), "--t", "5",
                 "--device", "cpu", "--quiet"]) == 2


def test_symlinked_shards_take_the_links_name(meta, tmp_path):
    src = tmp_path / "data.bin"
    pq.write_table(pa.table({"text": ["a dog", "cat"]}), src)
    d = tmp_path / "in"
    d.mkdir()
    os.symlink(src, d / "x.parquet")
    s = _cur(meta, d, tmp_path / "o")
    assert s["pool"] == 2 and s["curated"] == 2
    d2 = tmp_path / "in2"
    d2.mkdir()
    os.symlink("/dev/zero", d2 / "z.jsonl")
    msg = _err(meta, d2, tmp_path / "o2")
    assert "z.jsonl" in msg and "not a regular file" in msg
    os.symlink(d2 / "loop.parquet", d2 / "loop.parquet")
    os.unlink(d2 / "z.jsonl")
    assert "symlink loop" in _err(meta, d2, tmp_path / "o3")


def test_fifo_in_an_input_directory_is_an_error_not_a_hang(meta, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    pq.write_table(pa.table({"text": ["a dog"]}), d / "a.parquet")
    os.mkfifo(d / "x.jsonl")
    done = []
    th = threading.Thread(target=lambda: done.append(_err(meta, d, tmp_path / "o")), daemon=True)
    th.start()
    th.join(60)
    assert done and "a FIFO" in done[0] and "x.jsonl" in done[0]


def test_overwrite_removes_symlinks_never_their_targets(meta, tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a dog", "a cat"]}), p)
    out = tmp_path / "o"
    _cur(meta, p, out, t=5)
    keep = tmp_path / "elsewhere"
    keep.mkdir()
    (keep / "precious.txt").write_text("x")
    os.rename(out / "curated", tmp_path / "old-curated")
    os.symlink(keep, out / "curated")
    _cur(meta, p, out, t=1, overwrite=True)
    assert (keep / "precious.txt").read_text() == "x"
    assert not os.path.islink(out / "curated") and len(_rows(str(out))) >= 1


def test_sweep_never_follows_symlinks_out_of_out(meta, tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a dog"]}), p)
    out = tmp_path / "o"
    _cur(meta, p, out)  # the run whose rerun sweeps what its writers left
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "data.tmp-1").write_text("x")
    (other / "sub" / "backup.tmp-2024").write_text("y")
    os.symlink(other, out / "mylink")
    (out / "summary.json.tmp-99999").write_text("z")  # a writer of the run's, interrupted
    (out / "work" / "prob.npz.tmp-99998").write_text("z")
    (out / "notes.tmp-1").write_text("a user's")  # not the run's: kept
    (out / "sub").mkdir()  # another run's, inside DIR (its own lock): kept
    (out / "sub" / "summary.json.tmp-99997").write_text("its own")
    _cur(meta, p, out)
    assert (other / "data.tmp-1").exists() and (other / "sub" / "backup.tmp-2024").exists()
    assert not (out / "summary.json.tmp-99999").exists()
    assert not (out / "work" / "prob.npz.tmp-99998").exists()
    assert (out / "notes.tmp-1").exists() and (out / "sub" / "summary.json.tmp-99997").exists()


def test_sweep_between_passes_keeps_this_runs_live_writes(tmp_path):
    """After a pass on Ray workers the driver sweeps what a dead worker left,
    while a thread of its own is writing entry_counts beside pass 2: its
    ``.tmp-<own pid>`` file is live and must stay (it was once swept, and the
    write failed with FileNotFoundError)."""
    from gpucurate.pipeline.outdir import OutputLayout, sweep_tmp

    out = tmp_path / "o"
    (out / "curated").mkdir(parents=True)
    mine = out / f"entry_counts.parquet.tmp-{os.getpid()}"
    mine.write_text("being written")
    dead = out / "curated" / "part-00001.parquet.tmp-1"
    dead.write_text("left by a dead worker")
    sweep_tmp(OutputLayout(str(out)), keep_own=True)
    assert mine.read_text() == "being written"
    assert not dead.exists()
    sweep_tmp(OutputLayout(str(out)))  # at a run's start nothing of it is live
    assert not mine.exists()


def test_corrupt_page_with_checksums_is_an_error(meta, tmp_path):
    p = tmp_path / "a.parquet"
    texts = [f"caption number {i} of a dog" for i in range(2000)]
    pq.write_table(pa.table({"text": texts}), p, write_page_checksum=True, compression="none")
    data = bytearray(p.read_bytes())
    i = data.find(b"caption number 1000")
    data[i + 3] ^= 0x20
    p.write_bytes(bytes(data))
    msg = _err(meta, p, tmp_path / "o")
    assert str(p) in msg and "corrupt" in msg


def _histogram_mismatch(path) -> None:
    """A parquet file whose footer says that the optional column ``score`` is
    required: its size statistics then hold a definition-level histogram of 2
    entries for a column whose levels allow 1 (what a flipped bit did)."""
    n = 24
    pq.write_table(pa.table({"id": pa.array(range(n), pa.int64()),
                             "text": [f"a dog number {i}" for i in range(n)],
                             "score": pa.array([0.5] * n, pa.float64())}), path)
    data = path.read_bytes()
    # SchemaElement: repetition_type (field 3, i32, zigzag 1 = OPTIONAL), then name
    assert data.count(b"\x25\x02\x18\x05score") == 1
    path.write_bytes(data.replace(b"\x25\x02\x18\x05score", b"\x25\x00\x18\x05score"))


def test_footer_that_pyarrow_column_metadata_aborts_on(meta, tmp_path):
    """pyarrow's per-column metadata ends the process on such a footer (an
    untranslated C++ exception); the run reads the footer itself and the
    column read raises: a clean error naming the file."""
    import subprocess
    import sys

    from gpucurate.io.footer import row_group_facts
    from gpucurate.io.parquet import columns_bytes, no_nulls

    p = tmp_path / "a.parquet"
    _histogram_mismatch(p)
    probe = subprocess.run([sys.executable, "-c", "import pyarrow.parquet as pq; "
                            f"pq.ParquetFile({str(p)!r}).metadata.row_group(0).column(2)"],
                           capture_output=True, text=True)
    if probe.returncode == 0:  # a pyarrow that raises or accepts: nothing to guard
        pytest.skip("this pyarrow's column metadata does not abort on the file")
    assert "histogram" in probe.stderr
    md = pq.ParquetFile(p).metadata
    facts = row_group_facts(md)
    assert [c.path for c in facts[0].columns] == ["id", "text", "score"]
    assert columns_bytes(md, ["text"]) == facts[0].columns[1].uncompressed > 0
    assert no_nulls(str(p), "id") is True and no_nulls(str(p), "nope") is False
    run = subprocess.run([sys.executable, "-m", "gpucurate", "curate", "--metadata", meta,
                          "--input", str(p), "--out", str(tmp_path / "o"), "--t", "1",
                          "--device", "cpu", "--no-report"], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"{p}: cannot read parquet" in run.stderr and "histogram" in run.stderr


def test_footer_facts_equal_pyarrows(tmp_path):
    """io.footer's sizes and null counts are pyarrow's, on row groups, lists,
    structs, maps, booleans, nulls and files without statistics."""
    from gpucurate.io.footer import row_group_facts

    n = 5000
    t = pa.table({"a": [None if i % 7 == 0 else f"x{i}" for i in range(n)],
                  "b": np.arange(n) / 3,
                  "tags": [[f"t{i}"] * (i % 3) if i % 5 else None for i in range(n)],
                  "s": [{"x": i, "y": str(i)} for i in range(n)],
                  "flag": [i % 2 == 0 for i in range(n)],
                  "m": pa.array([[("k", i)] for i in range(n)], pa.map_(pa.string(), pa.int64()))})
    for i, kw in enumerate([{}, {"row_group_size": 700}, {"write_statistics": False},
                            {"compression": "zstd", "use_dictionary": False,
                             "row_group_size": 1234, "write_page_index": True}]):
        p = tmp_path / f"{i}.parquet"
        pq.write_table(t, p, **kw)
        md = pq.ParquetFile(p).metadata
        facts = row_group_facts(md)
        assert len(facts) == md.num_row_groups
        for g, f in enumerate(facts):
            rg = md.row_group(g)
            assert (f.num_rows, f.total_byte_size) == (rg.num_rows, rg.total_byte_size)
            assert len(f.columns) == rg.num_columns
            for j, c in enumerate(f.columns):
                cc = rg.column(j)
                st = cc.statistics
                assert c.path == cc.path_in_schema
                assert c.uncompressed == cc.total_uncompressed_size
                assert c.null_count == (st.null_count if st is not None and st.has_null_count
                                        else None)


def test_metadata_extension_is_case_insensitive(tmp_path):
    m = tmp_path / "m.JSON"
    m.write_text(json.dumps(["dog", "cat"]))
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a dog", "a cat", "x"]}), p)
    s = _cur(str(m), p, tmp_path / "o")
    assert s["entries"] == 2 and s["matched"] == 2


def test_invalid_utf8_in_another_string_column(meta, tmp_path):
    p = tmp_path / "a.parquet"
    url = pa.array([b"ok", b"bad \xff"], pa.binary()).cast(pa.string(), safe=False)
    pq.write_table(pa.table({"text": ["a dog", "a cat"], "url": url}), p)
    msg = _err(meta, p, tmp_path / "o")
    assert "column 'url', row 1 is not valid UTF-8" in msg and str(p) in msg


@pytest.mark.parametrize("ext", ["jsonl.gz", "jsonl.zst"])
def test_zero_byte_compressed_jsonl_is_truncated(meta, tmp_path, ext):
    p = tmp_path / f"a.{ext}"
    p.write_bytes(b"")
    msg = _err(meta, p, tmp_path / "o")
    assert str(p) in msg and "truncated" in msg


def test_gzip_detected_by_magic_bytes(meta, tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(gzip.compress(b'{"text": "a dog"}\n'))
    assert _cur(meta, p, tmp_path / "o")["matched"] == 1


def test_shard_rewritten_in_place_is_refused_naming_it(meta, tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a dog"] * 10}), p)
    out = tmp_path / "o"
    _cur(meta, p, out)
    pq.write_table(pa.table({"text": ["a cat"] * 12}), p)
    msg = _err(meta, p, out)
    assert f"input {p} changed since that run" in msg and "--overwrite" in msg
    assert _cur(meta, p, out, overwrite=True)["matched"] == 12


def test_verify_inputs_hashes_content(meta, tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a dog"]}), p)
    out = tmp_path / "o"
    _cur(meta, p, out, verify_inputs=True)
    st = os.stat(p)
    data = bytearray(p.read_bytes())
    i = data.find(b"a dog")
    data[i + 2:i + 5] = b"cat"
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "sha256" in _err(meta, p, out, verify_inputs=True)


def test_config_mismatch_says_what_differs(meta, tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a dog"]}), p)
    out = tmp_path / "o"
    _cur(meta, p, out, t=20000)
    msg = _err(meta, p, out, t=5)
    assert "t 20000 -> 5" in msg


def test_counts_of_another_metadata_list_are_refused(tmp_path):
    m1, m2 = tmp_path / "m1.json", tmp_path / "m2.json"
    m1.write_text(json.dumps(["a", "b"]))
    m2.write_text(json.dumps(["b", "a"]))
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a", "b a"]}), p)
    assert main(["count", "--metadata", str(m1), "--input", str(p), "--out",
                 str(tmp_path / "c"), "--device", "cpu", "--quiet"]) == 0
    counts = str(tmp_path / "c" / "entry_counts.parquet")
    cfg = CurateConfig(metadata=str(m2), inputs=(str(p),), out=str(tmp_path / "b"), t=5,
                       counts_file=counts, device="cpu", report=False)
    with pytest.raises(InputError, match=r"made with the metadata list .*m1\.json"):
        run(cfg, "balance")
    assert main(["merge-counts", counts, "--metadata", str(m2), "--out",
                 str(tmp_path / "mm.parquet"), "--quiet"]) == 2


def test_balance_with_a_missing_counts_file(meta, tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a dog"]}), p)
    cfg = CurateConfig(metadata=meta, inputs=(str(p),), out=str(tmp_path / "b"), t=5,
                       counts_file=str(tmp_path / "nope.parquet"), device="cpu")
    with pytest.raises(ConfigError, match="does not exist"):
        run(cfg, "balance")


def test_out_inside_an_input_directory_is_never_read(meta, tmp_path):
    d = tmp_path / "pool"
    d.mkdir()
    pq.write_table(pa.table({"text": ["a dog", "a cat"]}), d / "a.parquet")
    out = d / "out"
    s1 = _cur(meta, d, out)
    s2 = _cur(meta, d, out)
    assert s1["pool"] == s2["pool"] == 2
    s3 = _cur(meta, [str(d / "**" / "*.parquet")], out, overwrite=True, t=1)
    assert s3["pool"] == 2 and os.path.exists(out / "entry_counts.parquet")


def test_a_second_run_on_the_same_out_fails_at_once(meta, tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a dog"]}), p)
    out = tmp_path / "o"
    out.mkdir()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"the run of pid 1 on elsewhere\n", 0)
    (out / "x.parquet.tmp-1").write_text("live")
    try:
        msg = _err(meta, p, out)
        assert "in use by the run of pid 1 on elsewhere" in msg
        assert (out / "x.parquet.tmp-1").exists()  # a live run's temporary file stays
    finally:
        os.close(fd)
    assert _cur(meta, p, out)["pool"] == 1


@pytest.mark.parametrize("kind", ["string_view", "null", "dictionary"])
def test_valid_text_column_types(meta, tmp_path, kind):
    p = tmp_path / "a.parquet"
    base = pa.array(["a dog", None, "hot dog"])
    col = {"string_view": base.cast(pa.string_view()), "null": pa.nulls(3),
           "dictionary": base.dictionary_encode()}[kind]
    pq.write_table(pa.table({"text": col, "id": [1, 2, 3]}), p)
    s = _cur(meta, p, tmp_path / "o")
    assert s["pool"] == 3 and s["matched"] == (0 if kind == "null" else 2)


def test_jsonl_bad_utf8_names_its_line(meta, tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b"".join(b'{"text": "a dog"}\n' for _ in range(5)) + b'{"text": "a \xff"}\n')
    msg = _err(meta, p, tmp_path / "o")
    assert "line 6 (row 5) is not valid UTF-8" in msg


def test_jsonl_lone_surrogate(meta, tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "a dog"}\n{"text": "a \\ud800 dog"}\n')
    msg = _err(meta, p, tmp_path / "o")
    assert "line 2 (row 1)" in msg and "lone surrogate" in msg


def test_trie_cache_tampering_is_detected(tmp_path, monkeypatch):
    from gpucurate.trie import cache_dir, load_trie

    monkeypatch.setenv("GPUCURATE_CACHE_DIR", str(tmp_path / "cache"))
    entries = ["dog", "cat", "hot dog"]
    t1 = load_trie(entries)
    (path,) = [os.path.join(r, f) for r, _, fs in os.walk(cache_dir()) for f in fs]
    raw = bytearray(open(path, "rb").read())
    from gpucurate.trie import PAGE

    assert len(raw) > PAGE
    raw[PAGE + (len(raw) - PAGE) // 2] ^= 0xFF  # a byte of the tables (they start on a page)
    with open(path, "wb") as f:
        f.write(raw)
    t2 = load_trie(entries)  # rebuilt, not read
    assert all(np.array_equal(a, b) for a, b in zip(t1.arrays(), t2.arrays()))
    assert open(path, "rb").read() != bytes(raw)  # and the cache file written anew
    with open(path, "ab") as f:
        f.write(b"x")  # a longer file than its header says
    t3 = load_trie(entries)
    assert all(np.array_equal(a, b) for a, b in zip(t1.arrays(), t3.arrays()))
    # read from the cache: views of a private mapping, writable and aligned like
    # the arrays built in memory (numba compiles for writable, aligned arrays)
    t4 = load_trie(entries)
    for a, b in zip(t1.arrays(), t4.arrays()):
        assert np.array_equal(a, b) and a.dtype == b.dtype
        if isinstance(b, np.ndarray) and b.ndim:
            assert b.flags.aligned and b.ctypes.data % 64 == 0


def test_trie_cache_checksums_every_window(tmp_path, monkeypatch):
    """The cache's CRC-32s are per window (checked on every core at once): a
    file of many windows loads, and a byte changed in any window, the last
    one included, has the file rebuilt."""
    from gpucurate import trie

    monkeypatch.setenv("GPUCURATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(trie, "CRC_WINDOW", 4096)
    entries = [f"entry {i}" for i in range(300)]
    t1 = trie.load_trie(entries)
    (path,) = [os.path.join(r, f) for r, _, fs in os.walk(trie.cache_dir()) for f in fs]
    good = open(path, "rb").read()
    windows = -(-(len(good) - trie.PAGE) // 4096)
    assert windows > 3
    assert trie.cache_load("trie", t1.sha256, trie.WordTrie) is not None
    for at in (trie.PAGE + 5000, len(good) - 1):  # a middle window, the last byte
        raw = bytearray(good)
        raw[at] ^= 0x01
        open(path, "wb").write(raw)
        assert trie.cache_load("trie", t1.sha256, trie.WordTrie) is None
        t2 = trie.load_trie(entries)  # rebuilt and written anew
        assert all(np.array_equal(a, b) for a, b in zip(t1.arrays(), t2.arrays()))
        assert open(path, "rb").read() == good


def test_trie_cache_files_unused_for_a_week_are_pruned(tmp_path, monkeypatch):
    """Writing a cache file removes the trie cache's files not used for
    PRUNE_AFTER_S (other versions' and lists', older formats', dead writers'
    temporary files); loading a file marks it used, so a file in use stays;
    nothing else in the directory is touched."""
    import time

    from gpucurate import trie

    monkeypatch.setenv("GPUCURATE_CACHE_DIR", str(tmp_path / "cache"))
    trie.load_trie(["dog", "cat"])
    (used,) = [os.path.join(r, f) for r, _, fs in os.walk(trie.cache_dir()) for f in fs]
    d = os.path.dirname(used)
    old = time.time() - trie.PRUNE_AFTER_S - 3600
    stale = [os.path.join(d, n) for n in ("x-v6-aaaaaaaaaaaa.bin", "x-bytes-v5-b.npz",
                                          "x-v7-c.bin.123.tmp")]
    other = [os.path.join(d, n) for n in ("notes.txt", "fresh-v7-d.bin")]
    for p in stale + other:
        open(p, "wb").write(b"x")
    for p in stale + [other[0], used]:
        os.utime(p, (old, old))
    trie.load_trie(["dog", "cat"])  # loaded: marked used, nothing written, nothing pruned
    assert all(os.path.exists(p) for p in stale) and os.path.getmtime(used) > old + 3600
    trie.load_trie(["hot dog"])  # a new list's file written: the unused ones go
    assert not any(os.path.exists(p) for p in stale)
    assert all(os.path.exists(p) for p in other + [used])
    assert len(os.listdir(d)) == 4


def test_on_bad_row_skip_records_every_skipped_row(meta, tmp_path):
    j = tmp_path / "a.jsonl"
    lines = [b'{"text": "a dog", "k": 1}', b'{"text": "a cat", "k": 2', b'{"text": 5, "k": 3}',
             b'{"text": "a \xff dog", "k": 4}', b'{"text": "hot dog", "k": 5}',
             b'{"text": "a \\ud800", "k": 6}', b'[1, 2]', b'{"text": "cat", "k": 8}']
    j.write_bytes(b"\n".join(lines) + b"\n")
    p = tmp_path / "b.parquet"
    bad = pa.array([b"a dog", b"bad \xfe", b"a cat"], pa.binary()).cast(pa.string(), safe=False)
    url = pa.array([b"u1", b"u2", b"u\xff3"], pa.binary()).cast(pa.string(), safe=False)
    pq.write_table(pa.table({"text": bad, "url": url}), p)
    with pytest.raises(InputError):  # the default stops at the first
        _cur(meta, [str(j)], tmp_path / "e")
    out = tmp_path / "o"
    s = _cur(meta, [str(j), str(p)], out, on_bad_row="skip")
    rej = pq.read_table(out / "rejected").to_pylist()
    assert s["rejected"] == len(rej) == 5 + 2
    assert sorted((os.path.basename(r["file"]), r["row"]) for r in rej) == sorted(
        [("a.jsonl", i) for i in (1, 2, 3, 5, 6)] + [("b.parquet", 1), ("b.parquet", 2)])
    assert any(r["raw"].rstrip(b"\n") == lines[1] for r in rej)
    assert s["pool"] == 3 + 1  # the good rows only
    assert {r["text"] for r in _rows(str(out))} == {"a dog", "hot dog", "cat"} | {"a dog"}
    assert main(["report", str(out), "--quiet"]) == 0
    assert "bad rows skipped" in (out / "report" / "index.html").read_text()


def test_metadata_digest_is_kept_per_file_bytes_and_new_bytes_are_checked(tmp_path, monkeypatch):
    """A metadata file is checked and hashed once per content: the digest is
    kept under the cache keyed by the file's bytes; a file whose bytes changed
    (even at the same size) is checked again and its bad entry named."""
    from gpucurate import metadata as M

    monkeypatch.setenv("GPUCURATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(M, "_LOADED", {})
    for name, good, bad in (("a.json", '["dog", "cat"]', '["dog", ""   ]'),
                            ("a.txt", "dog\ncat\n", "dog\n\ncat\n")):
        p = tmp_path / name
        p.write_text(good)
        md = M.load_metadata(str(p))
        assert md.entries == ("dog", "cat") and md.sha256 == M._digest(["dog", "cat"])
        kept = list((tmp_path / "cache" / "metadata").glob("*.json"))
        assert kept and any(json.loads(k.read_text())["sha256"] == md.sha256 for k in kept)
        M._LOADED.clear()
        again = M.load_metadata(str(p))  # from the kept digest and Arrow copy: the same list
        assert again == md and again._entries is None and again.entries == md.entries
        assert again.arrow().to_pylist() == ["dog", "cat"]
        arrow = Path(M._digest_cache(p.read_bytes(), "json" if name.endswith(".json")
                                     else "text")).with_suffix(".arrow")
        raw = bytearray(arrow.read_bytes())
        raw[len(raw) // 2] ^= 0x01  # a changed copy is not used: the file is read again
        arrow.write_bytes(bytes(raw))
        M._LOADED.clear()
        third = M.load_metadata(str(p))
        assert third._entries is not None and third.entries == md.entries
        assert arrow.read_bytes() != bytes(raw)  # and the copy written anew
        arrow.unlink()
        M._LOADED.clear()
        assert M.load_metadata(str(p)).entries == md.entries
        M._LOADED.clear()
        p.write_text(bad)
        with pytest.raises(MetadataError, match="index 1 is empty|line 2 is empty"):
            M.load_metadata(str(p))
        M._LOADED.clear()


def test_metadata_check_names_every_kind_of_bad_entry_fast_path_or_not(tmp_path):
    from gpucurate.metadata import load_metadata

    cases = [([" dog", None], "index 1 is NoneType"), (["dog", 5], "index 1 is int"),
             (["dog", True], "index 1 is bool"), (["dog", ["x"]], "index 1 is list"),
             (["dog", "a\ud800"], "index 1 is not valid Unicode"), (["", "dog"], "index 0 is empty")]
    for entries, msg in cases:
        with pytest.raises(MetadataError, match=msg):
            load_metadata(entries)
    p = tmp_path / "s.json"
    p.write_text('["dog", "a \\ud800 b"]')  # a lone surrogate escape: orjson refuses, json reads
    with pytest.raises(MetadataError, match="index 1 is not valid Unicode"):
        load_metadata(str(p))


@pytest.mark.parametrize("worldwide", [False, True])
def test_a_list_rewritten_between_two_runs_of_one_process_is_read_again(tmp_path, worldwide):
    """The process keeps its worker (engines, tables) between runs of one
    configuration; a metadata list rewritten in between (same path, same
    size) is read again, never matched with the old tables."""
    pq.write_table(pa.table({"text": ["a dog", "a cow", "a cat"], "lang": ["en"] * 3}),
                   tmp_path / "p.parquet")
    if worldwide:
        os.makedirs(tmp_path / "ww")
        path = tmp_path / "ww" / "en.json"
        kw = dict(worldwide=str(tmp_path / "ww"), lang_column="lang")
    else:
        path = tmp_path / "m.json"
        kw = {}
    got = []
    for i, entries in enumerate((["cat", "dog"], ["cat", "cow"])):
        path.write_text(json.dumps(entries))
        cfg = CurateConfig(metadata=None if worldwide else str(path),
                           inputs=(str(tmp_path / "p.parquet"),), out=str(tmp_path / f"o{i}"),
                           t=100, device="cpu", report=False, **kw)
        run(cfg)
        got.append(sorted(r["text"] for r in _rows(tmp_path / f"o{i}")))
    assert got == [["a cat", "a dog"], ["a cat", "a cow"]]


def _pool_with_bad_rows(tmp_path):
    """A parquet shard and a jsonl shard whose 3 lines are not JSON."""
    d = tmp_path / "pool"
    d.mkdir()
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(300)],
                             "text": [["a dog", "a cat", "hot dog", "a bird"][i % 4] + f" {i}"
                                      for i in range(300)]}), d / "a.parquet")
    lines = [json.dumps({"key": f"j{i}", "text": f"a dog {i}"}) for i in range(50)]
    for i in (5, 17, 40):
        lines[i] = "{not json"
    (d / "b.jsonl").write_text("\n".join(lines) + "\n")
    return d


def _same_rows(a, b):
    ta, tb = (pq.read_table(os.path.join(x, "curated")) for x in (a, b))
    assert ta.num_rows > 0 and ta.equals(tb)
    ea, eb = (pq.read_table(os.path.join(x, "entry_counts.parquet")) for x in (a, b))
    assert ea.column("count").equals(eb.column("count"))


def _overwrite_cut_short(meta, tmp_path, monkeypatch, cut_after: int):
    """A run at t=1000 in tmp_path/o, then one at t=5 with --overwrite whose
    process dies after ``cut_after`` outputs are removed: (pool, kw, out)."""
    from gpucurate.pipeline import outdir

    pool = _pool_with_bad_rows(tmp_path)
    kw = dict(key_column="key", on_bad_row="skip")
    out = tmp_path / "o"
    _cur(meta, pool, out, t=1000, **kw)
    real, n = outdir._remove, []

    def cut(path):
        if len(n) == cut_after:
            raise KeyboardInterrupt
        n.append(path)
        real(path)

    monkeypatch.setattr(outdir, "_remove", cut)
    with pytest.raises(KeyboardInterrupt):
        _cur(meta, pool, out, t=5, overwrite=True, **kw)
    monkeypatch.setattr(outdir, "_remove", real)
    return pool, kw, out


def test_an_overwrite_cut_short_is_no_run_of_the_new_settings(meta, tmp_path, monkeypatch):
    """--overwrite clears the old run's outputs, config.json last: cut short,
    what is left is still known as the old run's (a rerun without --overwrite
    is refused, with it the result is a clean run's), never resumed as the
    new one's."""
    pool, kw, out = _overwrite_cut_short(meta, tmp_path, monkeypatch, 1)
    with pytest.raises(ConfigError, match="holds another run"):
        _cur(meta, pool, out, t=5, **kw)
    _cur(meta, pool, out, t=5, overwrite=True, **kw)
    _cur(meta, pool, tmp_path / "clean", t=5, **kw)
    _same_rows(out, tmp_path / "clean")


def test_leftovers_of_another_run_that_completed_no_shard_are_cleared(meta, tmp_path):
    """A run of other settings stopped before completing any shard left its
    saved matches, parsed rows and parts: the next run clears them (they
    were reused: another list's entry ids in the parts), and equals a clean
    run; outputs without a config.json that says whose they are are refused,
    or cleared with --overwrite."""
    pool = _pool_with_bad_rows(tmp_path)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(["bird", "dog", "cat"]))
    out = tmp_path / "o"
    _cur(str(other), pool, out, t=1000, key_column="key", on_bad_row="skip",
         save_matches=True)
    for d in ("stats", os.path.join("work", "pass1")):  # as if no shard had completed
        for f in os.listdir(out / d):
            if f.endswith(".json"):
                os.remove(out / d / f)
    os.remove(out / "summary.json")
    kw = dict(t=1000, key_column="key", on_bad_row="skip")
    _cur(meta, pool, out, **kw)
    assert not (out / "matches").exists()
    _cur(meta, pool, tmp_path / "clean", **kw)
    _same_rows(out, tmp_path / "clean")
    os.remove(out / "config.json")
    with pytest.raises(ConfigError, match="config.json is gone"):
        _cur(meta, pool, out, **kw)
    _cur(meta, pool, out, overwrite=True, **kw)
    _same_rows(out, tmp_path / "clean")


def test_save_matches_is_part_of_the_run(meta, tmp_path):
    """A rerun that asks for --save-matches where the run made none is
    another run (the shards done would have no index), not a silent resume."""
    pool = _pool_with_bad_rows(tmp_path)
    out = tmp_path / "o"
    _cur(meta, pool, out, key_column="key", on_bad_row="skip")
    with pytest.raises(ConfigError, match="save_matches"):
        _cur(meta, pool, out, key_column="key", on_bad_row="skip", save_matches=True)
    _cur(meta, pool, out, key_column="key", on_bad_row="skip", save_matches=True,
         overwrite=True)
    assert len(os.listdir(out / "matches")) == 2


def test_balance_records_its_bad_rows_and_reads_counts_before_clearing(meta, tmp_path):
    """balance with --on-bad-row skip writes rejected/ and counts them (it
    has no pass 1 that would); --counts DIR/entry_counts.parquet with --out
    DIR --overwrite reads the counts before DIR is cleared; --save-matches
    with balance, which has no pass 1, is refused."""
    pool = _pool_with_bad_rows(tmp_path)
    kw = dict(key_column="key", on_bad_row="skip")
    cur = tmp_path / "cur"
    _cur(meta, pool, cur, t=20, **kw)
    c = str(tmp_path / "c")
    run(CurateConfig(metadata=meta, inputs=(str(pool),), out=c, device="cpu", report=False,
                     **kw), stage="count")
    bal = str(tmp_path / "bal")
    s = run(CurateConfig(metadata=meta, inputs=(str(pool),), out=bal, t=20, device="cpu",
                         report=False, counts_file=os.path.join(c, "entry_counts.parquet"),
                         **kw), stage="balance")
    assert s["rejected"] == 3
    assert pq.read_table(os.path.join(bal, "rejected")).equals(
        pq.read_table(os.path.join(cur, "rejected")))
    _same_rows(bal, str(cur))
    s = run(CurateConfig(metadata=meta, inputs=(str(pool),), out=c, t=20, device="cpu",
                         report=False, counts_file=os.path.join(c, "entry_counts.parquet"),
                         overwrite=True, **kw), stage="balance")
    _same_rows(c, str(cur))
    with pytest.raises(ConfigError, match="balance has no pass 1"):
        run(CurateConfig(metadata=meta, inputs=(str(pool),), out=str(tmp_path / "x"), t=20,
                         device="cpu", report=False, save_matches=True,
                         counts_file=os.path.join(c, "entry_counts.parquet")), stage="balance")


def test_counts_of_another_list_are_refused_by_their_entries(meta, tmp_path):
    """A MetaCLIP counts mapping naming entries the list does not have, and
    an entry_counts.parquet without the list's stamp whose entries differ:
    refused (another list's counts were read as this one's)."""
    pool = _pool_with_bad_rows(tmp_path)
    (tmp_path / "m.json").write_text(json.dumps({"dog": 5, "horse": 100000, "zebra": 7}))
    with pytest.raises(InputError, match="2 of its entries are not in the metadata"):
        run(CurateConfig(metadata=meta, inputs=(str(pool),), out=str(tmp_path / "a"), t=5,
                         device="cpu", report=False, on_bad_row="skip",
                         counts_file=str(tmp_path / "m.json")), stage="balance")
    pq.write_table(pa.table({"entry_id": pa.array([0, 1], pa.int32()), "entry": ["dog", "cow"],
                             "count": pa.array([3, 4], pa.uint64())}), tmp_path / "c.parquet")
    with pytest.raises(InputError, match="entry 1 is 'cow' there but 'cat'"):
        run(CurateConfig(metadata=meta, inputs=(str(pool),), out=str(tmp_path / "b"), t=5,
                         device="cpu", report=False, on_bad_row="skip",
                         counts_file=str(tmp_path / "c.parquet")), stage="balance")


def test_a_rerun_of_a_done_run_keeps_its_summary(meta, tmp_path):
    """A rerun that finds every shard done starts no worker: summary.json
    keeps the engine and reader of the run that did the work; adding
    --verify-inputs is said to be that, not a change of every input."""
    pool = _pool_with_bad_rows(tmp_path)
    out = tmp_path / "o"
    kw = dict(key_column="key", on_bad_row="skip", device="auto")
    a = _cur(meta, pool, out, **kw)
    b = _cur(meta, pool, out, **kw)
    assert (a["device"], a["reader"]) == (b["device"], b["reader"]) == ("cpu", "arrow")
    with pytest.raises(ConfigError) as e:
        _cur(meta, pool, out, verify_inputs=True, **kw)
    assert "--verify-inputs was given to this run only" in str(e.value)
    assert "changed since" not in str(e.value)


@pytest.mark.parametrize("cut_after", [1, 3, 7, 10])
def test_an_overwrite_cut_short_then_the_old_run_again_is_whole(meta, tmp_path, monkeypatch,
                                                                cut_after):
    """--overwrite with new settings cut short after some outputs are
    cleared, then the old command again: the old run resumes and is whole
    (a shard's part gone while its completion marker stayed was taken as
    done: a curated set short of it, reported as a success)."""
    pool, kw, out = _overwrite_cut_short(meta, tmp_path, monkeypatch, cut_after)
    _cur(meta, pool, out, t=1000, **kw)
    _cur(meta, pool, tmp_path / "clean", t=1000, **kw)
    _same_rows(out, tmp_path / "clean")
