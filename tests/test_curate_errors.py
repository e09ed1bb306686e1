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
