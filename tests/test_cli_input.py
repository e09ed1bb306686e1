"""The command line on unusual input: the user's own files are never removed or
replaced unasked, nothing is dropped unsaid, a fixed input resumes its run,
and every fault is an error naming the file and row."""

import io
import json
import os
import subprocess
import sys
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpucurate import cli
from gpucurate.errors import ConfigError, InputError
from gpucurate.pipeline import curate


def _cli(argv, capsys):
    """(exit code, stderr): a user error is rc 2 without a traceback."""
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


@pytest.fixture()
def pool(tmp_path):
    meta = tmp_path / "md.json"
    meta.write_text(json.dumps(["dog", "cat", "photo", "red", "car"]))
    p = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"text": ["a photo of a dog", "the red car", "a cat"] * 10,
                             "id": list(range(30))}), p)
    return str(meta), str(p)


def _cur(meta, inputs, out, **kw):
    kw.setdefault("t", 5)
    return curate(meta, inputs if isinstance(inputs, list) else [str(inputs)], str(out),
                  device="cpu", report=False, **kw)


def test_an_out_of_the_users_own_files_is_refused_unless_overwrite(pool, tmp_path):
    """A DIR whose work/, report/, curated/ or config.json gpucurate did not
    write: refused without --overwrite (they were removed silently)."""
    meta, p = pool
    proj = tmp_path / "proj"
    (proj / "work").mkdir(parents=True)
    (proj / "work" / "thesis.tex").write_text("mine")
    with pytest.raises(ConfigError, match="may be files of your own") as e:
        _cur(meta, p, proj)
    assert "work" in str(e.value) and "--overwrite" in str(e.value)
    assert (proj / "work" / "thesis.tex").read_text() == "mine"
    app = tmp_path / "app"
    app.mkdir()
    (app / "config.json").write_text('{"name": "my app"}')
    with pytest.raises(ConfigError, match="not a gpucurate run's"):
        _cur(meta, p, app)
    assert json.loads((app / "config.json").read_text()) == {"name": "my app"}
    _cur(meta, p, proj, overwrite=True)  # asked for: replaced
    assert not (proj / "work" / "thesis.tex").exists()
    assert (proj / "summary.json").exists()
    # other files in DIR are no output's and stay; an empty DIR is a new run's
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("x")
    _cur(meta, p, tmp_path / "e")
    assert (tmp_path / "e" / "notes.txt").read_text() == "x"


def test_empty_out_and_column_names_are_refused(pool, tmp_path):
    meta, p = pool
    for kw, flag in ((dict(key_column=""), "--key-column"),
                     (dict(group_column=" "), "--group-column"),
                     (dict(text_column=""), "--text-column")):
        with pytest.raises(ConfigError, match=f"{flag} is empty"):
            _cur(meta, p, tmp_path / "o", **kw)
    with pytest.raises(ConfigError, match="--out is empty"):
        _cur(meta, p, "")
    assert not (tmp_path / "o").exists()


def test_match_never_writes_over_its_input(pool, tmp_path, capsys):
    meta, p = pool
    before = open(p, "rb").read()
    rc, err = _cli(["match", "--metadata", meta, "--input", p, "--out",
                    os.path.join(os.path.dirname(p), ".", "pool.parquet"), "--quiet"], capsys)
    assert rc == 2 and "is the input file itself" in err
    assert open(p, "rb").read() == before


def test_files_of_no_shard_format_are_said(pool, tmp_path, capsys):
    """A directory's files that are no shard (b.json, c.ndjson) are named in a
    warning, not dropped unsaid; the shards are read."""
    from gpucurate.log import configure

    configure()  # the command line's log on stderr (a test run alone has no handler)
    meta, p = pool
    d = tmp_path / "d"
    d.mkdir()
    os.link(p, d / "a.parquet")
    (d / "b.json").write_text('{"text": "a red car"}\n')
    (d / "c.ndjson").write_text('{"text": "a red car"}\n')
    capsys.readouterr()
    s = _cur(meta, d, tmp_path / "o")
    assert s["pool"] == 30
    said = [x for x in capsys.readouterr().err.splitlines() if "not read" in x]
    assert len(said) == 1 and "2 input files" in said[0] and "b.json" in said[0] \
        and "c.ndjson" in said[0]
    glob = [str(d / "**" / "*")]  # the run's own files below: no input, unsaid
    _cur(meta, glob, d / "run")
    _cur(meta, glob, d / "run")
    said = [x for x in capsys.readouterr().err.splitlines() if "not read" in x]
    assert said and all("run" not in x.split("(")[1] for x in said), said


def test_one_file_by_two_names_is_read_once(pool, tmp_path, capsys):
    """Hard links, as symlinks: one file, read once (it was counted twice);
    merge-counts refuses one counts file given twice (it summed it twice)."""
    meta, p = pool
    d = tmp_path / "d"
    d.mkdir()
    os.link(p, d / "a.parquet")
    os.link(p, d / "b.parquet")
    assert _cur(meta, d, tmp_path / "o")["pool"] == 30
    c = tmp_path / "c"
    assert _cli(["count", "--metadata", meta, "--input", p, "--out", str(c), "--quiet"],
                capsys)[0] == 0
    f = str(c / "entry_counts.parquet")
    rc, err = _cli(["merge-counts", f, os.path.join(str(c), ".", "entry_counts.parquet"),
                    "--metadata", meta, "--out", str(tmp_path / "m.parquet")], capsys)
    assert rc == 2 and "are the same file" in err
    assert not (tmp_path / "m.parquet").exists()


def test_demo_never_takes_a_directory_of_other_files(tmp_path, capsys):
    d = tmp_path / "dm"
    (d / "input" / "pool").mkdir(parents=True)
    (d / "mine.txt").write_text("x")
    rc, err = _cli(["demo", "--out", str(d), "--quiet"], capsys)
    assert rc == 2 and "holds other files than an earlier demo's" in err
    assert (d / "mine.txt").read_text() == "x" and not (d / "input" / "metadata.json").exists()


def test_a_shard_fixed_after_its_error_resumes_the_run(pool, tmp_path):
    """The error says "fix the line": once fixed, the rerun resumes (the done
    shards stand) and equals a clean run; a change to a done shard is still
    another run."""
    meta, p = pool
    d = tmp_path / "fx"
    d.mkdir()
    os.link(p, d / "a.parquet")
    b = d / "b.jsonl"
    b.write_text('{"text": "a dog"}\n\n{"text": "a cat"}\n')
    out = tmp_path / "o"
    with pytest.raises(InputError, match="line 2"):
        _cur(meta, d, out, threads=1)
    assert (out / "work" / "pass1" / "shard-00000.json").exists()
    b.write_text('{"text": "a dog"}\n{"text": "a cat"}\n')
    _cur(meta, d, out, threads=1)
    _cur(meta, d, tmp_path / "clean", threads=1)
    for f in ("curated", "entry_counts.parquet"):
        assert pq.read_table(out / f).equals(pq.read_table(tmp_path / "clean" / f))
    os.utime(d / "a.parquet", ns=(1, 1))  # a done shard changed: refused
    with pytest.raises(ConfigError, match="holds another run"):
        _cur(meta, d, out, threads=1)


def test_jsonl_wide_integers_then_fractions_fail_alike_in_any_batch(pool, tmp_path):
    """Integers past 2**53 then fractions in one field: no column holds both.
    The fraction's line is named (and rejected with skip) whether it falls in
    the first batch or a later one (a later batch failed in pass 2, naming no
    row)."""
    meta, _ = pool
    f = tmp_path / "big.jsonl"
    rows = [{"text": "a dog", "uid": 2**53 + 1 + i} for i in range(5)] + \
        [{"text": "a cat", "uid": 1.5}, {"text": "a cat", "uid": 7}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for bb in (1 << 20, 16):  # one batch; a batch per row or two
        with pytest.raises(InputError, match="line 6 .* is a fraction, but an integer past"):
            _cur(meta, f, tmp_path / f"o{bb}", batch_bytes=bb)
        s = _cur(meta, f, tmp_path / f"s{bb}", batch_bytes=bb, on_bad_row="skip")
        assert s["rejected"] == 1 and s["pool"] == 6
        got = pq.read_table(tmp_path / f"s{bb}" / "rejected").column("row").to_pylist()
        assert got == [5]


def test_jsonl_byte_order_mark_and_deep_nesting(pool, tmp_path):
    meta, _ = pool
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"text": "a dog"}\n{"text": "a cat"}\n')
    assert _cur(meta, f, tmp_path / "o")["matched"] == 2
    g = tmp_path / "deep.jsonl"
    g.write_text('{"text": "a dog", "x": ' + "[" * 5000 + "]" * 5000 + "}\n")
    with pytest.raises(InputError, match="line 1 .* nested deeper"):
        _cur(meta, g, tmp_path / "o2")


def _tar(path, samples):
    with tarfile.open(path, "w") as tf:
        for key, members in samples:
            for ext, b in members.items():
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(b)
                tf.addfile(ti, io.BytesIO(b))


@pytest.mark.parametrize("case", ["caption", "field_name", "deep"])
def test_tar_json_faults_name_the_sample(pool, tmp_path, case):
    """A lone surrogate in a .json caption or field name (a traceback before),
    and a .json nested 30000 deep (Arrow's reader crashed the process)."""
    meta, _ = pool
    js = {"caption": b'{"caption": "a dog \\ud800"}',
          "field_name": b'{"\\ud800": 1}',
          "deep": b'{"x": ' + b"[" * 30000 + b"]" * 30000 + b"}"}[case]
    t = tmp_path / "a.tar"
    _tar(t, [("000", {"txt": b"a dog", "json": js}), ("001", {"txt": b"a cat",
                                                              "json": b'{"caption": "x"}'})])
    want = {"caption": "lone surrogate", "field_name": "field name that holds a lone",
            "deep": "nested deeper"}[case]
    code = ("import sys; from gpucurate.pipeline import curate\n"
            "try:\n"
            f"    curate({meta!r}, [{str(t)!r}], {str(tmp_path / 'o')!r}, t=5, device='cpu', "
            f"report=False{', text_column=' + repr('caption') if case == 'caption' else ''})\n"
            "except Exception as e:\n"
            "    print(type(e).__name__, e); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])  # never a crash
    assert r.stdout.startswith("InputError") and "'000'" in r.stdout and want in r.stdout


def test_parquet_invalid_utf8_names_the_files_row_past_the_first_batch(pool, tmp_path):
    meta, _ = pool
    p = tmp_path / "bad.parquet"
    texts = [b"a dog"] * 3000 + [b"dog \xff bad"]
    pq.write_table(pa.table({"text": pa.array(texts, pa.binary()).cast(pa.string(), safe=False)}),
                   p)
    with pytest.raises(InputError, match=r"bad.parquet: row 3000 is not valid UTF-8"):
        _cur(meta, p, tmp_path / "o", batch_bytes=4096)


def test_worldwide_language_column_of_numbers_is_refused_and_no_list_is_said(tmp_path, capsys):
    ww = tmp_path / "ww"
    ww.mkdir()
    (ww / "en.json").write_text('["dog", "cat", "photo"]')
    (ww / "de.json").write_text('["hund"]')
    p = tmp_path / "lang.parquet"
    pq.write_table(pa.table({"text": ["a dog", "a cat", "a hund", "a photo", "a dog"],
                             "language": ["EN", "en-US", "DE", None, "en"],
                             "code": [1, 2, 3, 4, 5]}), p)
    rc, err = _cli(["curate", "--worldwide", str(ww), "--input", str(p), "--out",
                    str(tmp_path / "a"), "--t", "5", "--lang-column", "code", "--no-report"],
                   capsys)
    assert rc == 2 and "'code' is int64, not text" in err
    rc, _ = _cli(["curate", "--worldwide", str(ww), "--input", str(p), "--out",
                  str(tmp_path / "b"), "--t", "5", "--lang-column", "language", "--no-report"],
                 capsys)
    assert rc == 0
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["unrouted"] == 4


def test_rebalance_finds_a_runs_relative_paths_from_anywhere(pool, tmp_path, monkeypatch):
    meta, p = pool
    monkeypatch.chdir(tmp_path)
    _cur("md.json", "pool.parquet", "o9", key_column="id", save_matches=True)
    pq.write_table(pa.table({"id": list(range(20))}), tmp_path / "surv.parquet")
    from gpucurate.pipeline.rebalance import rebalance

    monkeypatch.chdir("/")
    s = rebalance(str(tmp_path / "o9"), str(tmp_path / "surv.parquet"), "id",
                  str(tmp_path / "o9b"), t=5, device="cpu", report=False)
    assert s["pool"] == 20


def test_python_api_inputs_of_the_wrong_kind_are_errors_of_its_own(pool, tmp_path):
    """curate, keep and Matcher: settings of the wrong type are ConfigError (a
    float seed ran as its integer part, a str raised ValueError); keys outside
    64 bits, mixed keys and lists that are no integer lists are InputError (a
    list view was read as plain offsets, wrongly); a Python list or NumPy array
    of integer keys is hashed as integers; dictionary and null caption columns
    are matched as the pipeline reads them."""
    import numpy as np

    import gpucurate
    from gpucurate.keys import key_hashes

    meta, p = pool
    for kw in (dict(t="x"), dict(t=float("inf")), dict(t=5, seed=1.5), dict(t=5, seed=None),
               dict(t=5, threads="2"), dict(t=5, batch_bytes=None), dict(tail_fraction="0.5")):
        with pytest.raises(ConfigError):
            gpucurate.curate(meta, [p], str(tmp_path / "o"), report=False, device="cpu", **kw)
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError):
        gpucurate.keep([[0]], [0.5], [1], seed=1.7)
    lv = pa.array([[0, 1], [2], [1]], pa.list_view(pa.int32()))
    assert gpucurate.keep(lv, np.ones(3), [1, 2, 3], seed=0).tolist() == [True] * 3
    for lists, keys in ((pa.array([[0.5]]), [1]), ([[0]], [2**64 + 5]), ([[0], [0]], [1, "a"])):
        with pytest.raises(InputError):
            gpucurate.keep(lists, [0.5], keys, seed=0)
    want = key_hashes(pa.array([1, -2]))
    assert key_hashes([1, -2]).tolist() == key_hashes(np.array([1, -2])).tolist() == want.tolist()
    m = gpucurate.Matcher(["dog"], device="cpu")
    assert m.match(pa.array(["a dog", None]).dictionary_encode()).to_pylist() == [[0], []]
    assert m.match(pa.nulls(2)).to_pylist() == [[], []]


def test_progress_shows_the_log_for_its_own_call_only(pool, tmp_path):
    """curate(progress=True) sends the log to stderr for that call; the logger's
    handlers, level and propagation (an application's own logging) are as
    they were after it (they stayed changed for the rest of the process)."""
    import logging

    import gpucurate
    from gpucurate.log import logger

    meta, p = pool
    was = (list(logger.handlers), logger.propagate, logger.level)
    logger.handlers[:] = []  # an application's set-up: none of the command line's
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
    try:
        gpucurate.curate(meta, [p], str(tmp_path / "o"), t=5, report=False, device="cpu",
                         progress=True)
        assert (logger.handlers, logger.propagate, logger.level) == ([], True, logging.NOTSET)
    finally:
        logger.handlers[:] = was[0]
        logger.propagate = was[1]
        logger.setLevel(was[2])


def test_a_jsonl_key_that_is_no_uid_stops_the_run_before_any_output(pool, tmp_path):
    """--outputs uids over jsonl: a key that is no DataComp uid is an error at
    its input row, in pass 1 (it was found only when uids.npy was written,
    after the whole run, by its row in a curated part)."""
    meta, _ = pool
    f = tmp_path / "a.jsonl"
    f.write_text("".join(json.dumps({"text": "a dog", "uid": f"{i:032x}" if i != 37 else "abc"})
                         + "\n" for i in range(50)))
    out = tmp_path / "o"
    with pytest.raises(InputError, match=r"a.jsonl \(key column 'uid'\): row 37 .*'abc'"):
        _cur(meta, f, out, key_column="uid", outputs=("parquet", "uids"))
    assert not (out / "entry_counts.parquet").exists() and not (out / "curated").exists()
