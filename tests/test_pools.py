"""Pools as users keep them: img2dataset / DataComp download folders, the
caption column's name, WebDataset tars (plain and compressed)."""

import gzip
import io
import json
import logging
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpucurate.errors import InputError
from gpucurate.pipeline import curate


@pytest.fixture()
def meta(tmp_path):
    p = tmp_path / "meta.json"
    p.write_text(json.dumps(["dog", "cat", "hot dog", "car"]))
    return str(p)


CAPS = ["a dog on grass", "a cat", "hot dog stand", "a red car", "nothing here", "dog and cat"]


def _tar(path, rows, gz=False):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for key, cap, status in rows:
            if status != "success":
                continue
            for ext, data in (("jpg", os.urandom(300)), ("txt", cap.encode()),
                              ("json", json.dumps({"key": key, "caption": cap}).encode())):
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if gz else data)


def _download_folder(root, n_shards=2):
    """NNNNN.tar + NNNNN.parquet + NNNNN_stats.json, as img2dataset writes."""
    os.makedirs(root, exist_ok=True)
    rows_all = []
    for s in range(n_shards):
        rows = []
        for i, cap in enumerate(CAPS):
            key = f"{s:05d}{i:04d}"
            status = "success" if i != 4 else "failed_to_download"
            rows.append((key, cap, status))
        _tar(os.path.join(root, f"{s:05d}.tar"), rows)
        pq.write_table(pa.table({
            "key": [r[0] for r in rows], "caption": [r[1] if r[2] == "success" else None
                                                     for r in rows],
            "url": [f"http://x/{r[0]}.jpg" for r in rows], "status": [r[2] for r in rows],
            "width": [64] * len(rows), "height": [48] * len(rows)}),
            os.path.join(root, f"{s:05d}.parquet"))
        with open(os.path.join(root, f"{s:05d}_stats.json"), "w") as f:
            json.dump({"count": len(rows)}, f)
        rows_all += rows
    return rows_all


def test_download_folder_reads_each_sample_once_from_the_parquet(meta, tmp_path):
    rows = _download_folder(tmp_path / "dl")
    s = curate(meta, [str(tmp_path / "dl")], str(tmp_path / "o"), t=1000, key_column="key",
               device="cpu", report=False)
    ok = [r for r in rows if r[2] == "success"]
    assert s["pool"] == len(ok) and s["failed_downloads"] == len(rows) - len(ok)
    t = pq.read_table(tmp_path / "o" / "curated")
    assert "caption" in t.column_names and "url" in t.column_names  # the sidecar's columns
    assert sorted(t.column("key").to_pylist()) == sorted(r[0] for r in ok if r[1] != CAPS[4])
    # the same captions from the tars alone (.txt captions, keys from __key__) match alike
    tars = [str(p) for p in sorted((tmp_path / "dl").glob("*.tar"))]
    s2 = curate(meta, tars, str(tmp_path / "o2"), t=1000, device="cpu", report=False)
    assert s2["pool"] == len(ok) and s2["matched"] == s["matched"]


def test_caption_column_is_found_and_logged(meta, tmp_path, caplog):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"caption": CAPS}), p)
    log = logging.getLogger("gpucurate")  # may not propagate (the CLI's own handler)
    log.addHandler(caplog.handler)
    try:
        with caplog.at_level("INFO", logger="gpucurate"):
            s = curate(meta, [str(p)], str(tmp_path / "o"), t=1000, device="cpu", report=False)
    finally:
        log.removeHandler(caplog.handler)
    assert s["matched"] == 5 and "caption column: caption" in caplog.text
    q = tmp_path / "b.parquet"
    pq.write_table(pa.table({"alt": CAPS}), q)
    with pytest.raises(InputError, match=r"no column 'text' or 'caption' \(columns: alt\)"):
        curate(meta, [str(q)], str(tmp_path / "o2"), t=1000, device="cpu", report=False)


@pytest.mark.parametrize("gz,name", [(False, "x.tar"), (True, "x.tar.gz"), (True, "x.tgz"),
                                     (True, "y.tar")])
def test_tar_compression_by_magic_bytes(meta, tmp_path, gz, name):
    rows = [(f"k{i}", c, "success") for i, c in enumerate(CAPS)]
    _tar(tmp_path / name, rows, gz=gz)
    s = curate(meta, [str(tmp_path / name)], str(tmp_path / "o"), t=1000, device="cpu",
               report=False)
    assert s["pool"] == len(CAPS) and s["matched"] == 5


def _dl_folder(d, stem="00000", n=6, failed=(2,), null_keys=()):
    """An img2dataset-like NAME.parquet (key, caption, status) beside NAME.tar."""
    import io as _io
    import tarfile as _tarfile

    os.makedirs(d, exist_ok=True)
    keys = [None if i in null_keys else f"{stem}{i:04d}" for i in range(n)]
    status = ["failed_to_download" if i in failed else "success" for i in range(n)]
    pq.write_table(pa.table({"key": keys, "caption": [f"a dog {i}" for i in range(n)],
                             "status": status}), os.path.join(d, f"{stem}.parquet"))
    with _tarfile.open(os.path.join(d, f"{stem}.tar"), "w") as tf:
        for i in range(n):
            if i in failed:
                continue
            ti = _tarfile.TarInfo(f"{stem}{i:04d}.jpg")
            ti.size = 3
            tf.addfile(ti, _io.BytesIO(b"IMG"))


def test_inputs_as_users_give_them(tmp_path):
    """Inputs given as users give them: --input repeated (each is read), a
    directory whose subdirectory is a link (followed; a link back to an
    ancestor read once), a download folder of links (paired by the links'
    names), a download folder's parquet given by a glob without its tar
    (its failed downloads are still no captions), a parquet that is no
    download folder's beside a tar of the same name (both are shards)."""
    from gpucurate import cli

    meta = tmp_path / "m.json"
    meta.write_text('["dog", "cat"]')
    base = ["curate", "--metadata", str(meta), "--t", "1000", "--device", "cpu", "--quiet",
            "--no-report"]

    def pool(*inputs, out):
        argv = base + ["--out", str(tmp_path / out)]
        for i in inputs:
            argv += ["--input", str(i)]
        assert cli.main(argv) == 0
        return json.load(open(tmp_path / out / "summary.json"))

    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": ["a dog", "a cat"]}), a)
    pq.write_table(pa.table({"text": ["a dog", "x", "a cat"]}), b)
    assert pool(a, b, out="o1")["pool"] == 5
    ext = tmp_path / "elsewhere"
    os.makedirs(ext / "part2")
    pq.write_table(pa.table({"text": ["a cat"] * 3}), ext / "part2" / "c.parquet")
    os.makedirs(tmp_path / "p")
    pq.write_table(pa.table({"text": ["a dog"] * 2}), tmp_path / "p" / "a.parquet")
    os.symlink(ext / "part2", tmp_path / "p" / "part2")
    os.symlink(tmp_path / "p", tmp_path / "p" / "loop")
    assert pool(tmp_path / "p", out="o2")["pool"] == 5
    _dl_folder(str(tmp_path / "blobs"))
    os.makedirs(tmp_path / "dlink")
    os.symlink(tmp_path / "blobs" / "00000.parquet", tmp_path / "dlink" / "00000.parquet")
    os.symlink(tmp_path / "blobs" / "00000.tar", tmp_path / "dlink" / "00000.tar")
    s = pool(tmp_path / "dlink", out="o3")
    assert (s["pool"], s["failed_downloads"]) == (5, 1)
    s = pool(str(tmp_path / "blobs" / "*.parquet"), out="o4")
    assert (s["pool"], s["failed_downloads"]) == (5, 1)
    os.makedirs(tmp_path / "mixed")
    pq.write_table(pa.table({"text": ["a dog"] * 4}), tmp_path / "mixed" / "train.parquet")
    with tarfile.open(tmp_path / "mixed" / "train.tar", "w") as tf:
        for i in range(3):
            ti = tarfile.TarInfo(f"s{i}.txt")
            ti.size = 5
            tf.addfile(ti, io.BytesIO(b"a cat"))
    assert pool(tmp_path / "mixed", out="o5")["pool"] == 7


def test_download_folder_null_keys_are_numbered_as_in_the_file(tmp_path):
    """--on-bad-row skip in a download folder: a null key's row is its row in
    the parquet file (failed downloads counted, as every other reject is),
    whatever the batch size."""
    from gpucurate.pipeline import curate

    _dl_folder(str(tmp_path / "dl"), n=8, failed=(0, 3), null_keys=(2, 5))
    meta = tmp_path / "m.json"
    meta.write_text('["dog"]')
    got = []
    for bb in (1, 1 << 20):
        out = tmp_path / f"o{bb}"
        curate(str(meta), [str(tmp_path / "dl")], str(out), t=100, key_column="key",
               on_bad_row="skip", device="cpu", report=False, batch_bytes=bb)
        got.append(pq.read_table(out / "rejected").column("row").to_pylist())
    assert got[0] == got[1] == [2, 5]


def test_globs_walk_the_directories_they_match_and_names_ignore_order(tmp_path):
    """A glob matching a directory (Spark's x.parquet/ of parts) reads its
    files; a file reached by two arguments takes one name whatever their
    order (the default key hashes it, so the curated set was order-dependent)."""
    from gpucurate import cli

    meta = tmp_path / "m.json"
    meta.write_text('["dog", "cat"]')
    d = tmp_path / "spark"
    os.makedirs(d / "x.parquet")
    pq.write_table(pa.table({"text": ["a dog", "a cat"]}), d / "x.parquet" / "part-0.parquet")
    pq.write_table(pa.table({"text": ["a dog"]}), d / "y.parquet")
    base = ["curate", "--metadata", str(meta), "--t", "1", "--device", "cpu", "--quiet",
            "--no-report"]
    assert cli.main(base + ["--input", str(d / "*.parquet"), "--out", str(tmp_path / "o1")]) == 0
    assert json.load(open(tmp_path / "o1" / "summary.json"))["pool"] == 3
    os.makedirs(tmp_path / "nest" / "sub")
    pq.write_table(pa.table({"text": [f"a dog {i}" for i in range(300)]}),
                   tmp_path / "nest" / "sub" / "a.parquet")
    one, two = str(tmp_path / "nest"), str(tmp_path / "nest" / "sub" / "a.parquet")
    rows = []
    for i, args in enumerate(([one, two], [two, one])):
        out = tmp_path / f"n{i}"
        assert cli.main(base + ["--input", *args, "--out", str(out)]) == 0
        rows.append(pq.read_table(out / "curated").column("text").to_pylist())
    assert rows[0] == rows[1]


def test_limit_counts_the_rows_downloaded(tmp_path):
    """--limit N over a download folder counts its rows downloaded (its
    failed rows are no captions): N captions, reaching into the next shard."""
    from gpucurate.pipeline import curate

    _dl_folder(str(tmp_path / "dl"), n=6, failed=(1, 2))
    pq.write_table(pa.table({"caption": ["a dog x"] * 5}), tmp_path / "dl" / "zz.parquet")
    meta = tmp_path / "m.json"
    meta.write_text('["dog"]')
    s = curate(str(meta), [str(tmp_path / "dl")], str(tmp_path / "o"), t=100, limit=6,
               device="cpu", report=False)
    assert s["pool"] == 6 and s["shards"] == 2


def test_jsonl_field_kinds_do_not_depend_on_the_batch(tmp_path):
    """A field holding a string in one row and a number in another (at the
    top or inside a struct or a list) is an error whatever the batch size
    (small batches turned the numbers into strings); a field of integers and
    fractions, or nulls then values, reads the same in batches of any size."""
    from gpucurate.pipeline import curate

    meta = tmp_path / "m.json"
    meta.write_text('["cat", "dog"]')
    bad = [[{"text": "a cat", "m": {"b": "x"}}, {"text": "a dog", "m": {"b": 1}}],
           [{"text": "a cat", "l": ["u"]}, {"text": "a dog", "l": [2]}],
           [{"text": "a cat", "v": "7"}, {"text": "a dog", "v": 7}]]
    for i, rows in enumerate(bad):
        p = tmp_path / f"bad{i}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        for bb in (4, 1 << 20):
            with pytest.raises(InputError):
                curate(str(meta), [str(p)], str(tmp_path / f"o{i}-{bb}"), t=10, device="cpu",
                       report=False, batch_bytes=bb)
    good = [{"text": "a cat", "v": None}, {"text": "a dog", "v": 2}, {"text": "a cat", "v": 2.5}]
    p = tmp_path / "good.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in good))
    got = []
    for bb in (4, 1 << 20):
        out = tmp_path / f"g{bb}"
        curate(str(meta), [str(p)], str(out), t=10, device="cpu", report=False, batch_bytes=bb)
        got.append(pq.read_table(out / "curated").column("v").to_pylist())
    assert got[0] == got[1] == [None, 2.0, 2.5]


def test_limit_counts_the_rows_left_after_bad_rows_are_skipped(tmp_path):
    """--limit N with --on-bad-row skip: a skipped row is no part of the pool,
    so N captions come from the rows that pass, reaching into the next shard."""
    from gpucurate.pipeline import curate

    os.makedirs(tmp_path / "in")
    bad = pa.array([b"a dog", b"a \xff dog", b"a cat", b"a dog"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"caption": bad}), tmp_path / "in" / "a.parquet")
    pq.write_table(pa.table({"caption": ["a cat", "a dog", "a cat"]}), tmp_path / "in" / "b.parquet")
    meta = tmp_path / "m.json"
    meta.write_text('["dog", "cat"]')
    for limit, shards in ((3, 1), (4, 2), (5, 2), (9, 2)):
        s = curate(str(meta), [str(tmp_path / "in")], str(tmp_path / f"o{limit}"), t=100,
                   limit=limit, on_bad_row="skip", device="cpu", report=False)
        assert (s["pool"], s["rejected"], s["shards"]) == (min(limit, 6), 1, shards), limit


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_limit_with_skip_rejects_only_the_bad_rows_before_the_limit(tmp_path, fmt):
    """--limit N with --on-bad-row skip: the bad rows recorded are those
    before the N-th caption taken (bad lines, non-UTF-8 strings, null keys),
    whatever the batch size; those past it are not read, as far as the run goes."""
    import json

    from gpucurate.pipeline import curate

    os.makedirs(tmp_path / "in")
    n = 400
    bad = {i for i in range(n) if i % 20 == 7}
    nullkey = {i for i in range(n) if i % 30 == 11} - bad
    if fmt == "jsonl":
        with open(tmp_path / "in" / "a.jsonl", "w") as f:
            for i in range(n):
                if i in bad:
                    f.write("not json\n")
                else:
                    f.write(json.dumps({"key": None if i in nullkey else i,
                                        "caption": f"a dog {i}"}) + "\n")
    else:
        cap = [b"a \xff dog" if i in bad else f"a dog {i}".encode() for i in range(n)]
        pq.write_table(pa.table({"key": pa.array([None if i in nullkey else i for i in range(n)],
                                                 pa.int64()),
                                 "caption": pa.array(cap, pa.binary()).view(pa.string())}),
                       tmp_path / "in" / "a.parquet", row_group_size=64)
    meta = tmp_path / "m.json"
    meta.write_text('["dog"]')
    for limit in (1, 100, 333):
        good = [i for i in range(n) if i not in bad and i not in nullkey]
        last = good[limit - 1]
        want = sum(1 for i in range(last) if i in bad or i in nullkey)
        for bb in (1 << 25, 2048, 1):
            out = tmp_path / f"o{limit}-{bb}"
            s = curate(str(meta), [str(tmp_path / "in")], str(out), t=100, limit=limit,
                       on_bad_row="skip", key_column="key", batch_bytes=bb, device="cpu",
                       report=False)
            assert (s["pool"], s["rejected"]) == (limit, want), (limit, bb)
            rej = pq.read_table(out / "rejected").num_rows
            assert rej == want, (limit, bb)


def test_webdataset_of_a_download_folder_whose_tar_is_cut_short(tmp_path):
    """A download folder's tar (which pass 1 never walks) cut short, in a
    member's data or in a header, or without its end-of-archive marker: an
    error naming the tar and where it ends, before a tar is written (a .json
    cut in its header was written as a new one: the sample's own lost)."""
    import tarfile as _tarfile

    from gpucurate.errors import InputError
    from gpucurate.pipeline import curate

    meta = tmp_path / "m.json"
    meta.write_text('["dog"]')
    _dl_folder(str(tmp_path / "src"), n=4, failed=())
    whole = open(tmp_path / "src" / "00000.tar", "rb").read()
    with _tarfile.open(tmp_path / "src" / "00000.tar") as tf:
        last = tf.getmembers()[-1]
    cuts = {"data": last.offset_data + 2, "header": last.offset + 300,
            "marker": last.offset_data + 512}
    for what, cut in cuts.items():
        d = tmp_path / what
        _dl_folder(str(d), n=4, failed=())
        with open(d / "00000.tar", "wb") as f:
            f.write(whole[:cut])
        with pytest.raises(InputError, match=r"00000\.tar: the tar ends at byte %d" % cut):
            curate(str(meta), [str(d)], str(tmp_path / f"o-{what}"), t=100, device="cpu",
                   report=False, outputs=("parquet", "webdataset"), key_column="key")
        assert not os.path.exists(tmp_path / f"o-{what}" / "curated-wds" / "00000.tar")
    s = curate(str(meta), [str(tmp_path / "src")], str(tmp_path / "ok"), t=100, device="cpu",
               report=False, outputs=("parquet", "webdataset"), key_column="key")
    assert s["curated"] == 4


def test_skip_finds_bad_strings_at_any_depth_and_numbers_rows_as_in_the_file(tmp_path):
    """Non-UTF-8 bytes inside a list or a struct column are a bad row (they
    went into the curated parquet), also beside view columns (a filter of
    those failed); a null key after a bad row is numbered by its row in the
    file; rejected/ lists the rows in file order at every batch size."""
    from gpucurate.errors import InputError
    from gpucurate.pipeline import curate

    os.makedirs(tmp_path / "in")
    n = 3000
    bad = b"bad \xff dog"
    lst = pa.array([[bad if i == 7 else b"ok"] for i in range(n)],
                   pa.list_(pa.binary())).cast(pa.list_(pa.string()), safe=False)
    st = pa.StructArray.from_arrays(
        [pa.array([bad if i == 2000 else b"ok" for i in range(n)], pa.binary()).view(pa.string())],
        ["s"])
    pq.write_table(pa.table({
        "k": pa.array([None if i == 9 else i for i in range(n)], pa.int64()),
        "text": [f"a dog {i}" for i in range(n)], "u": lst, "v": st,
        "w": pa.array([b"x"] * n, pa.binary()).cast(pa.binary_view())}),
        tmp_path / "in" / "a.parquet")
    meta = tmp_path / "m.json"
    meta.write_text('["dog"]')
    with pytest.raises(InputError, match="column 'u', row 7 is not valid UTF-8"):
        curate(str(meta), [str(tmp_path / "in")], str(tmp_path / "e"), t=10**9, device="cpu",
               report=False)
    for bb in (1 << 25, 1):
        out = tmp_path / f"o{bb}"
        s = curate(str(meta), [str(tmp_path / "in")], str(out), t=10**9, key_column="k",
                   on_bad_row="skip", device="cpu", report=False, batch_bytes=bb)
        rej = pq.read_table(out / "rejected")
        assert rej.column("row").to_pylist() == [7, 9, 2000], bb
        assert s["curated"] == n - 3
        kept = pq.read_table(out / "curated")
        assert kept.column("u").to_pylist() == [["ok"]] * (n - 3)  # every string reads back


def test_keys_in_dictionary_and_view_columns_key_as_their_values(tmp_path):
    """--key-column on a dictionary-encoded column (a pandas category) or a
    binary_view column keys each row by its value, as the plain column does
    (they were refused)."""
    from gpucurate.pipeline import curate

    n = 400
    keys = [f"id-{i % 150:04d}-{i}" for i in range(n)]
    text = [f"a dog {i}" if i % 3 else f"a cat {i}" for i in range(n)]
    meta = tmp_path / "m.json"
    meta.write_text('["dog", "cat"]')
    cols = {"plain": pa.array(keys), "dict": pa.array(keys).dictionary_encode(),
            "view": pa.array([k.encode() for k in keys], pa.binary()).cast(pa.binary_view())}
    got = {}
    for name, col in cols.items():
        os.makedirs(tmp_path / name)
        pq.write_table(pa.table({"k": col, "text": text}), tmp_path / name / "a.parquet")
        curate(str(meta), [str(tmp_path / name)], str(tmp_path / f"o-{name}"), t=40,
               key_column="k", device="cpu", report=False)
        got[name] = pq.read_table(tmp_path / f"o-{name}" / "curated").select(
            ["text", "entry_ids"])
    assert 0 < got["plain"].num_rows < n
    assert got["dict"].equals(got["plain"]) and got["view"].equals(got["plain"])
