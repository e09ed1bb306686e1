"""Bad input: a clear error naming file, row and fix, and no partial output."""

import gzip
import io
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpucurate import cli
from gpucurate.pipeline import curate
from gpucurate.errors import ConfigError, InputError

OUTPUTS = ("entry_counts.parquet", "curated", "summary.json")


def no_outputs(out):
    return not any(os.path.exists(os.path.join(out, p)) for p in OUTPUTS)


@pytest.fixture()
def meta(tmp_path):
    p = tmp_path / "meta.txt"
    p.write_text("dog\ncat\nhot dog\n")
    return str(p)


def _run(meta, path, tmp_path, **kw):
    out = str(tmp_path / "out")
    kw.setdefault("t", 1)
    with pytest.raises((InputError, ConfigError)) as e:
        curate(meta, [str(path)], out, device="cpu", report=False, **kw)
    assert no_outputs(out)
    return str(e.value)


def test_missing_text_column(meta, tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"alt": ["a dog"]}), p)
    msg = _run(meta, p, tmp_path)
    assert str(p) in msg and "no column 'text' or 'caption'" in msg and "--text-column" in msg
    msg = _run(meta, p, tmp_path, text_column="text")
    assert str(p) in msg and "no column 'text'" in msg and "--text-column" in msg


def test_non_string_text_column(meta, tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), p)
    assert "not a string column" in _run(meta, p, tmp_path)


def test_truncated_parquet(meta, tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a dog"] * 1000}), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    msg = _run(meta, p, tmp_path)
    assert str(p) in msg and "truncated" in msg


def test_bad_jsonl_line_and_truncated_gz(meta, tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "a dog"}\n{"text": "a cat"\n')
    msg = _run(meta, p, tmp_path)
    assert "line 2 (row 1)" in msg and str(p) in msg
    g = tmp_path / "b.jsonl.gz"
    data = gzip.compress("".join(f'{{"text": "a dog {i}"}}\n' for i in range(5000)).encode())
    g.write_bytes(data[: len(data) // 2])
    (tmp_path / "a.jsonl").unlink()
    msg = _run(meta, g, tmp_path)
    assert str(g) in msg and "truncated" in msg


def test_truncated_zst(meta, tmp_path):
    import zstandard

    z = tmp_path / "c.jsonl.zst"
    data = zstandard.ZstdCompressor().compress(
        "".join(f'{{"text": "a dog {i}"}}\n' for i in range(5000)).encode())
    z.write_bytes(data[: len(data) // 2])
    msg = _run(meta, z, tmp_path)
    assert str(z) in msg and "truncated" in msg


def test_truncated_tar(meta, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(50):
            blob = b"a dog " * 200
            ti = tarfile.TarInfo(f"s{i:04d}.txt")
            ti.size = len(blob)
            tf.addfile(ti, io.BytesIO(blob))
    t = tmp_path / "d.tar"
    t.write_bytes(buf.getvalue()[:20000])
    msg = _run(meta, t, tmp_path)
    assert str(t) in msg and "truncated" in msg


def test_invalid_utf8_names_file_and_row(meta, tmp_path):
    p = tmp_path / "a.parquet"
    arr = pa.array([b"a dog", b"ok", b"bad \xfe"], pa.binary()).cast(pa.string(), safe=False)
    pq.write_table(pa.table({"text": arr}), p)
    msg = _run(meta, p, tmp_path)
    assert str(p) in msg and "row 2 is not valid UTF-8" in msg


def test_empty_input_and_bad_t(meta, tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    assert "holds no .parquet" in _run(meta, d, tmp_path)
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a dog"]}), p)
    assert "--t must be an integer >= 1" in _run(meta, p, tmp_path, t=0)
    assert cli.main(["curate", "--metadata", meta, "--input", str(p), "--out",
                     str(tmp_path / "o2"), "--t", "0", "--quiet"]) == 2


def test_null_key_and_duplicate_entry_ids_column(meta, tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [1, None, 3], "text": ["a dog", "x", "y"]}), p)
    msg = _run(meta, p, tmp_path, key_column="id")
    assert "row 1 has a null key" in msg
    pq.write_table(pa.table({"text": ["a dog"], "entry_ids": [[1]]}), p)
    assert "already has a column 'entry_ids'" in _run(meta, p, tmp_path)


def test_same_shard_names_need_a_key_column(meta, tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        pq.write_table(pa.table({"text": ["a dog"]}), tmp_path / d / "part.parquet")
    out = str(tmp_path / "out")
    with pytest.raises(InputError, match="--key-column"):
        curate(meta, [str(tmp_path / "x" / "part.parquet"), str(tmp_path / "y" / "part.parquet")],
               out, t=1, device="cpu", report=False)


def test_gpu_required_without_gpu_fails_clearly(meta, tmp_path, capsys):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a dog"]}), p)
    rc = cli.main(["match", "--metadata", meta, "--input", str(p), "--out",
                   str(tmp_path / "m.parquet"), "--device", "gpu"])
    assert rc == 2
    assert "no usable GPU" in capsys.readouterr().err
    assert not (tmp_path / "m.parquet").exists()


def test_the_process_ends_after_exit_handlers_with_the_right_status(tmp_path):
    """``python -m gpucurate`` ends without the interpreter's teardown, but
    only after the exit handlers ran; a bug still prints its traceback."""
    import subprocess
    import sys

    def run(body):
        code = ("import sys, atexit, gpucurate.cli.main\n"
                "m = sys.modules['gpucurate.cli.main']\n"
                "atexit.register(lambda: print('handler ran', flush=True))\n" + body + "\nm.entry()")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    p = run("def boom():\n    raise ZeroDivisionError('a bug')\nm.main = boom")
    assert p.returncode == 1 and "ZeroDivisionError: a bug" in p.stderr
    assert "handler ran" in p.stdout
    p = run("m.main = lambda: 3")
    assert p.returncode == 3 and "handler ran" in p.stdout
    p = subprocess.run([sys.executable, "-m", "gpucurate", "curate"], capture_output=True, text=True)
    assert p.returncode == 2 and "required" in p.stderr
    p = subprocess.run([sys.executable, "-m", "gpucurate", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "usage" in p.stdout


def _cli(argv, capsys):
    """(exit code, stderr) of the command line; a user error is rc 2 without a traceback."""
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _pool(tmp_path):
    import json

    p = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"key": [f"{i:032x}" for i in range(6)],
                             "caption": ["a dog", "a cat", "x", "hot dog", "a dog", "y"]}), p)
    m = tmp_path / "m.json"
    m.write_text(json.dumps(["dog", "cat", "hot dog"]))
    return str(p), str(m)


@pytest.mark.parametrize("case", ["negative", "null_id", "float", "json_big", "json_bool"])
def test_bad_count_files_are_errors(tmp_path, capsys, case):
    """Counts that are no whole numbers >= 0 (a negative, a null id, a
    fraction; a JSON count past 64 bits or a boolean): an error naming the
    file, not a count that wraps around or rounds."""
    import json

    pool, m = _pool(tmp_path)
    c = tmp_path / ("c.json" if case.startswith("json") else "c.parquet")
    if case == "json_big":
        c.write_text(json.dumps({"cat": 2**64}))
    elif case == "json_bool":
        c.write_text(json.dumps({"cat": True}))
    else:
        ids = pa.array([0, None, 2] if case == "null_id" else [0, 1, 2], pa.int32())
        cnt = pa.array([5.0, 5.7, 2.0]) if case == "float" else \
            pa.array([5, -1 if case == "negative" else 3, 2], pa.int64())
        pq.write_table(pa.table({"entry_id": ids, "count": cnt}), c)
    for argv in (["merge-counts", str(c), "--metadata", m, "--out", str(tmp_path / "o.parquet")],
                 ["balance", "--counts", str(c), "--metadata", m, "--input", pool, "--out",
                  str(tmp_path / "b"), "--t", "1", "--quiet"]):
        rc, err = _cli(argv, capsys)
        assert rc == 2 and str(c) in err


def test_counts_that_sum_past_64_bits_are_errors(tmp_path, capsys):
    """Counts each within uint64 whose sum is not (two files, or one entry
    listed twice in one file): an error naming the file, not a sum that
    wraps to a small count (whose entry would then be kept at p = 1)."""
    import json

    pool, m = _pool(tmp_path)
    half = tmp_path / "half.json"
    half.write_text(json.dumps({"dog": 2**63, "cat": 2**64 - 1}))
    half2 = tmp_path / "half2.json"  # another job's file (one file twice is refused)
    half2.write_text(half.read_text())
    twice = tmp_path / "twice.parquet"
    pq.write_table(pa.table({"entry_id": pa.array([0, 0, 1], pa.int32()),
                             "count": pa.array([2**63, 2**63, 1], pa.uint64())}), twice)
    for argv, named in ((["merge-counts", str(half), str(half2), "--metadata", m, "--out",
                          str(tmp_path / "o.parquet")], str(half2)),
                        (["merge-counts", str(twice), "--metadata", m, "--out",
                          str(tmp_path / "o2.parquet")], str(twice)),
                        (["balance", "--counts", str(twice), "--metadata", m, "--input", pool,
                          "--out", str(tmp_path / "b"), "--t", "1", "--quiet"], str(twice))):
        rc, err = _cli(argv, capsys)
        assert rc == 2 and named in err and "2**64" in err, err
    rc, err = _cli(["merge-counts", str(half), "--metadata", m, "--out",
                    str(tmp_path / "o3.parquet")], capsys)
    assert rc == 0 and f"{2**63 + 2**64 - 1:,} matches" in err


def test_unusable_paths_are_errors(tmp_path, capsys):
    """Paths a command cannot use: an error naming them (rc 2), not an OS
    traceback: merge-counts and match --out a directory or under a missing
    one, balance --counts a run's directory, a worldwide counts directory
    holding no count file, demo --out a file, rebalance survivors not UTF-8."""
    import json

    pool, m = _pool(tmp_path)
    c1 = str(tmp_path / "c1")
    assert cli.main(["count", "--metadata", m, "--input", pool, "--out", c1, "--quiet",
                     "--save-matches", "--key-column", "key"]) == 0
    counts = os.path.join(c1, "entry_counts.parquet")
    os.makedirs(tmp_path / "d")
    (tmp_path / "afile").write_text("x")
    ww = tmp_path / "ww"
    os.makedirs(ww)
    (ww / "en.json").write_text(json.dumps(["dog"]))
    os.makedirs(tmp_path / "empty")
    (tmp_path / "bad.txt").write_bytes(b"k\n\xff\n")
    cases = [
        (["merge-counts", counts, "--metadata", m, "--out", str(tmp_path / "d")], "directory"),
        (["merge-counts", counts, "--metadata", m, "--out", str(tmp_path / "afile" / "x")],
         "cannot make"),
        (["match", "--metadata", m, "--input", pool, "--out", str(tmp_path / "d")],
         "directory"),
        (["match", "--metadata", m, "--input", pool, "--out", str(tmp_path / "no" / "x.pq")],
         "does not exist"),
        (["match", "--metadata", m, "--input", str(tmp_path / "gone.parquet"), "--out",
          str(tmp_path / "x.parquet")], "does not exist"),
        (["balance", "--counts", c1, "--metadata", m, "--input", pool, "--out",
          str(tmp_path / "b"), "--t", "1", "--quiet"], "is a directory"),
        (["merge-counts", str(tmp_path / "empty"), "--worldwide", str(ww), "--out",
          str(tmp_path / "mw")], "holds no <lang>.parquet"),
        (["demo", "--out", str(tmp_path / "afile")], "is a file"),
        (["rebalance", c1, "--survivors", str(tmp_path / "bad.txt"), "--key-column", "key",
          "--t", "1", "--out", str(tmp_path / "rb")], "line 2 is not UTF-8"),
    ]
    for argv, msg in cases:
        rc, err = _cli(argv, capsys)
        assert rc == 2 and msg in err, (argv, err[-500:])


def test_uids_check_follows_skip_and_limit_and_views_pass(tmp_path, capsys):
    """--outputs uids checks the rows the run reads: a null key that
    --on-bad-row skip rejects, or a bad key past --limit, no longer refuses
    the run; a string_view column is written (pyarrow has no take for it)."""
    pool, m = _pool(tmp_path)
    t = pq.read_table(pool)
    keys = t.column("key").to_pylist()
    keys[3] = None
    nk = tmp_path / "nullkey.parquet"
    pq.write_table(t.set_column(0, "key", pa.array(keys)), nk)
    base = ["curate", "--metadata", m, "--t", "1", "--key-column", "key", "--quiet",
            "--no-report", "--device", "cpu", "--outputs", "uids"]
    assert _cli(base + ["--input", str(nk), "--out", str(tmp_path / "o1"), "--on-bad-row",
                        "skip"], capsys)[0] == 0
    keys[3] = "not-a-uid"
    bk = tmp_path / "badkey.parquet"
    pq.write_table(t.set_column(0, "key", pa.array(keys)), bk)
    assert _cli(base + ["--input", str(bk), "--out", str(tmp_path / "o2"), "--limit", "2"],
                capsys)[0] == 0
    rc, err = _cli(base + ["--input", str(bk), "--out", str(tmp_path / "o3")], capsys)
    assert rc == 2 and "row 3" in err
    sv = tmp_path / "sv.parquet"
    pq.write_table(t.append_column("url", pa.array([f"u{i}" for i in range(6)],
                                                   pa.string_view())), sv)
    assert _cli(["curate", "--metadata", m, "--t", "100", "--quiet", "--no-report", "--device",
                 "cpu", "--input", str(sv), "--out", str(tmp_path / "o4")], capsys)[0] == 0
    got = pq.read_table(tmp_path / "o4" / "curated")
    assert got.column("url").to_pylist() == ["u0", "u1", "u3", "u4"]


def test_info_says_a_forced_gpu_is_not_there(capsys, monkeypatch):
    monkeypatch.setenv("GPUCURATE_DEVICE", "gpu")
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "gpu -> none (no usable GPU: a run fails)" in out


def test_address_without_ray_is_refused(tmp_path):
    from gpucurate.config import CurateConfig

    with pytest.raises(ConfigError, match="--executor ray"):
        CurateConfig(metadata="m.json", inputs=("a.parquet",), out=str(tmp_path / "o"),
                     address="127.0.0.1:6379")


def test_jsonl_shards_that_read_badly_before_the_run(tmp_path, capsys):
    """What is read of a jsonl before the passes (its first lines for the
    caption column, its lines for --limit): a corrupt or cut .gz / .zst is
    an error naming the file, not a traceback; a first line that is no JSON
    does not hide the caption column of the lines after it; shards that name
    their caption column differently are told apart."""
    import gzip
    import json

    m = tmp_path / "m.json"
    m.write_text('["dog"]')
    lines = b"".join(json.dumps({"caption": f"a dog {i}"}).encode() + b"\n" for i in range(3000))
    gz = gzip.compress(lines)
    bad = bytearray(gz)
    bad[len(bad) // 2:len(bad) // 2 + 40] = b"\xff" * 40
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "corrupt.jsonl.gz").write_bytes(bytes(bad))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "cut.jsonl.gz").write_bytes(gz[:len(gz) // 2])
    for d in ("c", "t"):
        for extra in ([], ["--limit", "10"]):
            rc, err = _cli(["curate", "--metadata", str(m), "--input", str(tmp_path / d), "--out",
                            str(tmp_path / f"o-{d}-{len(extra)}"), "--t", "1", "--quiet",
                            "--no-report", *extra], capsys)
            assert rc == 2 and ".jsonl.gz: " in err, err  # (no traceback: _cli)
            if d == "t":
                assert "cannot read past line" in err, err
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.jsonl").write_bytes(b"{oops\n" + b"".join(lines.splitlines(True)[:5]))
    rc, err = _cli(["curate", "--metadata", str(m), "--input", str(tmp_path / "f"), "--out",
                    str(tmp_path / "of"), "--t", "100", "--no-report", "--on-bad-row", "skip"],
                   capsys)
    assert rc == 0 and "caption column: caption" in err
    summary = json.load(open(tmp_path / "of" / "summary.json"))
    assert (summary["pool"], summary["curated"], summary["rejected"]) == (5, 5, 1)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.jsonl").write_text('{"text": "a dog"}\n')
    (tmp_path / "x" / "b.jsonl").write_text('{"caption": "a dog"}\n')
    rc, err = _cli(["curate", "--metadata", str(m), "--input", str(tmp_path / "x"), "--out",
                    str(tmp_path / "ox"), "--t", "1", "--quiet"], capsys)
    assert rc == 2 and "name their caption column differently" in err and "a.jsonl" in err


def test_jsonl_nested_value_of_another_kind_names_its_line(tmp_path, capsys):
    """A line whose nested value is of another kind than the lines before it
    (a string in a list of integers, a struct field): the error names that
    line, not a range of up to 65536 rows; with --on-bad-row skip that line
    alone is rejected and the run goes on."""
    import json

    m = tmp_path / "m.json"
    m.write_text('["dog"]')
    for name, bad in (("list", {"v": [1, "a"]}), ("struct", {"v": {"a": "s"}})):
        d = tmp_path / name
        d.mkdir()
        with open(d / "a.jsonl", "w") as f:
            for i in range(1000):
                v = bad["v"] if i == 700 else ([i, i] if name == "list" else {"a": i})
                f.write(json.dumps({"text": f"a dog {i}", "v": v}) + "\n")
        rc, err = _cli(["curate", "--metadata", str(m), "--input", str(d), "--out",
                        str(tmp_path / f"e-{name}"), "--t", "1", "--quiet"], capsys)
        assert rc == 2 and "line 701 (row 700): a value does not fit" in err, err
        rc, err = _cli(["curate", "--metadata", str(m), "--input", str(d), "--out",
                        str(tmp_path / f"s-{name}"), "--t", "10000", "--quiet", "--no-report",
                        "--on-bad-row", "skip", "--batch-bytes", "4096"], capsys)
        assert rc == 0
        assert pq.read_table(tmp_path / f"s-{name}" / "rejected").column("row").to_pylist() \
            == [700]
        assert pq.read_table(tmp_path / f"s-{name}" / "curated").num_rows == 999
