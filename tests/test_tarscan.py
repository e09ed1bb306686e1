"""The offset-scanning WebDataset reader against Python's tarfile and the tarfile reference."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import random
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpucurate.io import tar as tarscan
from gpucurate.errors import InputError
from gpucurate.io import Shard
from gpucurate.io.tar import count_samples, read_tar, scan_members
from tar_reference import _tar

CAPTIONS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "captions")
if not os.path.isdir(CAPTIONS):
    CAPTIONS = "/work/shared/data/captions"

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


def _add(tf, name, data=b"", kind=tarfile.REGTYPE, **kw):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    for k, v in kw.items():
        setattr(ti, k, v)
    if kind in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        tf.addfile(ti)


def write_tar(path, members, fmt="pax", **kw):
    """members: (name, bytes) for files, or (name, None, type) for other kinds."""
    with tarfile.open(path, "w", format=FORMATS[fmt], **kw) as tf:
        for m in members:
            if len(m) == 2:
                _add(tf, m[0], m[1])
            else:
                _add(tf, m[0], kind=m[2], linkname="target")
    return path


def old(path, text_column=None, batch_bytes=1 << 62):
    tables = list(_tar(Shard(0, path, os.path.basename(path), "tar"), text_column, batch_bytes))
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def new(path, text_column=None, batch_bytes=1 << 62):
    tables = list(read_tar(path, os.path.basename(path), text_column, batch_bytes))
    out_col = text_column or "text"
    for t in tables:
        assert t.num_rows > 0
        size = pa.compute.sum(pa.compute.binary_length(t.column(out_col))).as_py() or 0
        assert size <= batch_bytes or t.num_rows == 1
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def reference_members(path):
    with tarfile.open(path, "r:*") as tf:
        out = []
        for m in tf.getmembers():
            if m.isreg():
                kind = "file"
            elif m.isdir():
                kind = "dir"
            elif m.issym():
                kind = "symlink"
            elif m.islnk():
                kind = "hardlink"
            else:
                kind = {tarfile.CHRTYPE: "chardev", tarfile.BLKTYPE: "blockdev",
                        tarfile.FIFOTYPE: "fifo"}.get(m.type, "other")
            size = m.size if kind in ("file", "other") else 0
            out.append((m.name, kind, m.offset, size))
        return out


def random_pool(rng, n, json_fields=True, odd=True):
    """Members of n samples with captions, json, images and odd members between."""
    members = []
    for i in range(n):
        d = rng.choice(["", "sub/", "a/b/", "ü/ñ/", "x" * 120 + "/"])
        stem = rng.choice([f"s{i:05d}", f"Sample.{i}"[:0] + f"k{i}", f"é{i}ß"])
        key = f"{d}{stem}"
        cap = rng.choice(["", "a dog", "ünïcödé ✓ 🐕", "x" * rng.choice([1, 511, 512, 513, 1024,
                                                                        3000])])
        img = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 100, 512, 1024, 1500])))
        parts = [(f"{key}.jpg", img), (f"{key}.{rng.choice(['txt', 'TXT', 'Txt'])}", cap.encode())]
        if json_fields:
            parts.append((f"{key}.json", json.dumps({"url": f"http://x/{i}", "w": i,
                                                     "caption": cap, "__key__": "dropped"}
                                                    ).encode()))
        if odd and rng.random() < 0.3:
            parts.append((f"{key}.cls.txt", b"7"))  # ext 'cls.txt' is not a caption
        rng.shuffle(parts)
        members += parts
        if odd and rng.random() < 0.2:
            members.append((f"{d}NODOT", b"no extension"))
        if odd and rng.random() < 0.1:
            members.append((f"dir{i}", None, tarfile.DIRTYPE))
        if odd and rng.random() < 0.1:
            members.append((f"{key}.lnk", None, rng.choice([tarfile.SYMTYPE, tarfile.LNKTYPE])))
    return members


# ---------------------------------------------------------------- valid input
@pytest.mark.parametrize("fmt", ["ustar", "gnu", "pax"])
@pytest.mark.parametrize("seed", range(6))
def test_random_pools_equal_reference(tmp_path, fmt, seed):
    rng = random.Random(seed * 7 + len(fmt))
    members = random_pool(rng, 40, json_fields=seed % 2 == 0)
    if fmt == "ustar":  # ustar holds names up to 255 bytes split at a slash, ASCII-safe here
        members = [m for m in members if len(m[0].encode()) <= 100]
    path = write_tar(tmp_path / f"p.{fmt}.tar", members, fmt)
    path = str(path)
    assert [m[:2] for m in scan_members(open(path, "rb"))] == \
        [m[:2] for m in reference_members(path)]
    assert list(scan_members(open(path, "rb"))) == reference_members(path)
    ref = old(path)
    got = new(path)
    assert got.equals(ref), (got.schema, ref.schema)
    assert count_samples(path) == got.num_rows
    if seed % 2 == 0:
        for bb in (1, 100, 4000):
            assert new(path, batch_bytes=bb).equals(ref)
        assert new(path, "caption").equals(old(path, "caption"))
        assert new(path, "url", batch_bytes=50).equals(old(path, "url"))


def test_scan_members_unseekable_stream(tmp_path):
    members = random_pool(random.Random(3), 20)
    path = str(write_tar(tmp_path / "s.tar", members, "pax"))

    class Pipe(io.RawIOBase):
        def __init__(self, data):
            self._b = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            return self._b.readinto(b)

    got = list(scan_members(io.BufferedReader(Pipe(open(path, "rb").read()))))
    assert got == reference_members(path)


def test_long_and_unicode_names_all_formats(tmp_path):
    long_dir = "/".join(["segment%03d" % i for i in range(30)])  # > 255 bytes
    names = [f"{long_dir}/a.txt", f"{long_dir}/a.json", "ñandú/日本語.TXT", "plain.txt",
             "x" * 99 + ".txt", "y" * 150 + "/z.txt", "./dot.txt", "/abs/root.txt",
             "a//double.txt", "//lead.txt", "dir/.txt", "dir/name.TXT", "dir/name.with.dots"]
    for fmt in ("gnu", "pax"):
        members = [(n, (n[-20:] if not n.endswith(".json") else json.dumps({"n": n}))
                    .encode()) for n in names]
        path = str(write_tar(tmp_path / f"l.{fmt}.tar", members, fmt))
        assert list(scan_members(open(path, "rb"))) == reference_members(path)
        got = new(path)
        assert got.equals(old(path))
        assert got.column("__key__").to_pylist()[:3] == [f"{long_dir}/a", "ñandú/日本語", "plain"]
        assert "a//double" in got.column("__key__").to_pylist()  # verbatim, as webdataset
        assert "//lead" in got.column("__key__").to_pylist()
        assert "dir/" in got.column("__key__").to_pylist()


def test_keys_are_webdatasets_for_dotted_base_names(tmp_path):
    """Keys as webdataset's base_plus_ext makes them: macOS tar's ._ files
    (AppleDouble) at the top level or under ./ belong to no sample, a double
    slash is kept; the rows equal the reference's and webdataset's own."""
    from gpucurate.io.tar import sample_key

    members = [("._000001.jpg", b"mac"), ("000001.jpg", b"img"), ("000001.txt", b"a dog"),
               ("./._000002.jpg", b"mac"), ("./000002.jpg", b"img"), ("./000002.txt", b"a cat"),
               (".txt", b"no sample"), ("a//b.txt", b"a bird"), ("a//b.jpg", b"img")]
    path = str(write_tar(tmp_path / "mac.tar", members, "gnu"))
    got = new(path)
    assert got.equals(old(path))
    assert got.column("__key__").to_pylist() == ["000001", "./000002", "a//b"]
    assert got.column("text").to_pylist() == ["a dog", "a cat", "a bird"]
    assert sample_key(b"._x.jpg") is None and sample_key(b"./._x.jpg") is None
    assert sample_key(b"dir/._x.jpg") == (b"dir/", b"_x.jpg")
    assert sample_key(b"a//b.tar.gz") == (b"a//b", b"tar.gz")
    wds = pytest.importorskip("webdataset")
    keys = [s["__key__"] for s in wds.WebDataset(path, shardshuffle=False, empty_check=False)]
    assert keys == got.column("__key__").to_pylist()


def test_ustar_prefix_names(tmp_path):
    names = ["p" * 60 + "/" + "q" * 60 + f"/s{i}.txt" for i in range(3)]
    path = str(write_tar(tmp_path / "u.tar", [(n, b"cap") for n in names], "ustar"))
    assert list(scan_members(open(path, "rb"))) == reference_members(path)
    assert new(path).equals(old(path))


def test_zero_length_and_block_multiple_sizes(tmp_path):
    members = []
    for i, n in enumerate([0, 1, 511, 512, 513, 1023, 1024, 1025, 4096, 10240]):
        members += [(f"k{i}.bin", b"\xff" * n), (f"k{i}.txt", ("c" * n).encode())]
    path = str(write_tar(tmp_path / "z.tar", members, "gnu"))
    assert list(scan_members(open(path, "rb"))) == reference_members(path)
    got = new(path)
    assert got.equals(old(path))
    assert [len(s) for s in got.column("text").to_pylist()] == \
        [0, 1, 511, 512, 513, 1023, 1024, 1025, 4096, 10240]


def test_pax_global_header_and_size_override(tmp_path):
    path = str(tmp_path / "g.tar")
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "built by a test"}) as tf:
        for i in range(3):
            ti = tarfile.TarInfo(f"s{i}.txt")
            ti.pax_headers = {"comment": "x" * 300}
            data = f"caption {i}".encode()
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    assert list(scan_members(open(path, "rb"))) == reference_members(path)
    assert new(path).equals(old(path))
    # a pax 'size' record overrides the header's size field
    path = str(tmp_path / "sz.tar")
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(2):
            ti = tarfile.TarInfo(f"s{i}.txt")
            data = f"caption {i} " .encode() * 50
            ti.size = len(data)
            ti.pax_headers = {"size": str(len(data))}
            tf.addfile(ti, io.BytesIO(data))
    raw = bytearray(open(path, "rb").read())
    for name, kind, off, size in reference_members(path):
        h = off + 1024  # the member's own header, after the pax header and its data
        assert raw[h:h + 6] == name.encode()[:6]
        raw[h + 124:h + 136] = b"00000000000\0"  # size 0 in the header
        raw[h + 148:h + 156] = b" " * 8
        raw[h + 148:h + 156] = b"%06o\0 " % sum(raw[h:h + 512])
    open(path, "wb").write(bytes(raw))
    assert list(scan_members(open(path, "rb"))) == reference_members(path)
    assert new(path).column("text").to_pylist() == [f"caption {i} " * 50 for i in range(2)]
    assert new(path).equals(old(path))


def test_webdataset_writer(tmp_path):
    wds = pytest.importorskip("webdataset")
    path = str(tmp_path / "w.tar")
    rng = random.Random(0)
    with wds.TarWriter(path) as sink:
        for i in range(300):
            sink.write({"__key__": f"{i:06d}", "jpg": rng.randbytes(rng.randrange(0, 3000)),
                        "txt": f"caption number {i} ✓", "json": {"i": i, "url": f"u{i}"}})
    assert list(scan_members(open(path, "rb"))) == reference_members(path)
    got = new(path)
    assert got.equals(old(path))
    assert got.column_names == ["__key__", "i", "url", "text"]
    assert got.num_rows == count_samples(path) == 300
    assert new(path, batch_bytes=1000).equals(got)


def test_heterogeneous_json_keeps_every_field(tmp_path):
    # the tarfile reference's from_pylist keeps only the first row's fields; here every field is a column
    members = [("a.txt", b"A"), ("b.txt", b"B"), ("b.json", b'{"x": 1}'),
               ("c.txt", b"C"), ("c.json", b'{"y": "v", "x": 2, "text": "ignored"}')]
    path = str(write_tar(tmp_path / "h.tar", members))
    got = new(path)
    assert got.column_names == ["__key__", "x", "y", "text"]
    assert got.to_pylist() == [{"__key__": "a", "x": None, "y": None, "text": "A"},
                               {"__key__": "b", "x": 1, "y": None, "text": "B"},
                               {"__key__": "c", "x": 2, "y": "v", "text": "C"}]


def test_json_caption_nulls(tmp_path):
    members = [("a.json", b'{"c": null, "n": 1}'), ("b.json", b'{"c": null, "n": 2}')]
    path = str(write_tar(tmp_path / "n.tar", members))
    got = new(path, "c")
    assert got.equals(old(path, "c"))
    assert got.schema.field("c").type == pa.large_string()


@pytest.mark.parametrize("comp", ["gzip", "bzip2", "xz", "zstd"])
@pytest.mark.parametrize("name", ["s.tar", "s.tar.gz", "s.tgz"])
def test_compressed_by_magic_not_name(tmp_path, comp, name, monkeypatch):
    members = random_pool(random.Random(5), 60)
    plain = str(write_tar(tmp_path / "plain.tar", members))
    raw = open(plain, "rb").read()
    if comp == "gzip":
        data = gzip.compress(raw)
    elif comp == "bzip2":
        data = bz2.compress(raw)
    elif comp == "xz":
        data = lzma.compress(raw)
    else:
        zstandard = pytest.importorskip("zstandard")
        data = zstandard.ZstdCompressor().compress(raw)
    path = tmp_path / name
    path.write_bytes(data)
    ref = old(plain)
    assert tarscan.compression(str(path)) == comp
    assert new(str(path)).equals(ref)
    monkeypatch.setattr(tarscan._Source, "CHUNK", 700)  # windows smaller than most members
    assert new(str(path), batch_bytes=300).equals(ref)
    assert count_samples(str(path)) == ref.num_rows


def test_many_samples_grow_buffers(tmp_path):
    n = 6000
    members = [(f"{i:07d}.txt", f"c{i}".encode()) for i in range(n)]
    path = str(write_tar(tmp_path / "m.tar", members, "gnu"))
    got = new(path)
    assert got.equals(old(path))
    assert count_samples(path) == n
    assert pa.concat_tables(read_tar(path, "m", None, 5000)).equals(got)


def test_real_captions(tmp_path):
    texts = pq.read_table(os.path.join(CAPTIONS, "html_img_alttext.parquet"),
                          columns=["text"]).column("text").to_pylist()[:3000]
    members = []
    for i, t in enumerate(texts):
        members += [(f"{i:06d}.jpg", b"\x00" * (i % 700)), (f"{i:06d}.txt", t.encode()),
                    (f"{i:06d}.json", json.dumps({"caption": t, "i": i}).encode())]
    path = str(write_tar(tmp_path / "r.tar", members))
    assert new(path).equals(old(path))
    assert new(path).column("text").to_pylist() == texts
    assert new(path, "caption", batch_bytes=10000).equals(old(path, "caption"))


# ---------------------------------------------------------------- errors
def small(tmp_path, fmt="pax", name="t.tar"):
    members = [("s0.jpg", b"\x01" * 700), ("s0.txt", b"first"), ("s1.jpg", b"\x02" * 1024),
               ("s1.txt", b"second"), ("s1.json", b'{"a": 1}'), ("s2.txt", b"third")]
    return str(write_tar(tmp_path / name, members, fmt))


def eoa_offset(path):
    data = open(path, "rb").read()
    last = reference_members(path)[-1]
    hdr = data[last[2]:]
    # the zero blocks follow the last member's data
    off = last[2] + 512 + ((last[3] + 511) // 512) * 512
    assert data[off:off + 1024] == b"\0" * 1024 and hdr
    return off


def expect(path, *words, text_column=None):
    with pytest.raises(InputError) as ei:
        list(read_tar(path, os.path.basename(path), text_column, 1 << 20))
    msg = str(ei.value)
    assert path in msg
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("fmt", ["ustar", "gnu", "pax"])
def test_truncation_at_every_block(tmp_path, fmt):
    path = small(tmp_path, fmt)
    data = open(path, "rb").read()
    eoa = eoa_offset(path)
    ref = new(path)
    cut = tmp_path / "cut.tar"
    for k in range(len(data) // 512 + 1):
        n = k * 512
        cut.write_bytes(data[:n])
        if n >= eoa + 1024:
            assert new(str(cut)).equals(ref)
            assert count_samples(str(cut)) == 3
            continue
        with pytest.raises(InputError) as ei:
            list(read_tar(str(cut), "cut.tar", None, 1 << 20))
        assert str(cut) in str(ei.value) and "byte" in str(ei.value)
        with pytest.raises(InputError):
            count_samples(str(cut))
        with pytest.raises(InputError):
            list(scan_members(open(cut, "rb")))
    for n in (1, 100, 513, eoa - 7, eoa + 1000):  # cuts inside a block
        cut.write_bytes(data[:n])
        with pytest.raises(InputError):
            list(read_tar(str(cut), "cut.tar", None, 1 << 20))


def test_cut_at_member_boundary_message(tmp_path):
    path = small(tmp_path)
    eoa = eoa_offset(path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:eoa])
    msg = expect(path, f"byte {eoa}", "two zero blocks", "'s2'")
    assert "re-create" in msg
    open(path, "wb").write(data[:eoa + 512])
    expect(path, "single zero block", f"byte {eoa}")


def test_truncated_gzip(tmp_path):
    path = small(tmp_path)
    data = open(path, "rb").read()
    eoa = eoa_offset(path)
    gz = tmp_path / "c.tar"
    for n in range(0, len(data), 512):  # a whole gzip stream of a cut tar
        gz.write_bytes(gzip.compress(data[:n]))
        if n >= eoa + 1024:
            assert new(str(gz)).equals(new(path))
        else:
            with pytest.raises(InputError):
                list(read_tar(str(gz), "c.tar", None, 1 << 20))
    comp = gzip.compress(data)
    for n in range(10, len(comp) - 1, 7):  # the gzip stream itself cut
        gz.write_bytes(comp[:n])
        with pytest.raises(InputError) as ei:
            list(read_tar(str(gz), "c.tar", None, 1 << 20))
        assert str(gz) in str(ei.value)


def test_bad_checksum(tmp_path):
    path = small(tmp_path)
    data = bytearray(open(path, "rb").read())
    off = reference_members(path)[2][2]  # s1.jpg
    data[off + 10] ^= 0x20
    open(path, "wb").write(bytes(data))
    expect(path, "checksum", f"byte {off}", "'s0'")
    with pytest.raises(InputError, match="checksum"):
        list(scan_members(open(path, "rb")))


def test_missing_caption_member(tmp_path):
    path = str(write_tar(tmp_path / "m.tar", [("a.txt", b"A"), ("b.jpg", b"x"),
                                               ("b.json", b'{"c": "B"}')]))
    msg = expect(path, "'b'", "no .txt", "--text-column FIELD", "byte 1024")
    assert "row 1" in msg
    expect(path, "'a'", "no string field 'c'", text_column="c")


def test_json_field_not_a_string(tmp_path):
    path = str(write_tar(tmp_path / "j.tar", [("a.json", b'{"c": 3}')]))
    expect(path, "'a'", "no string field 'c'", text_column="c")


def test_reappearing_key(tmp_path):
    path = str(write_tar(tmp_path / "r.tar", [("a.txt", b"A"), ("b.txt", b"B"),
                                               ("a.jpg", b"x")]))
    expect(path, "'a'", "reappears", "contiguous", "byte 2048", "row 0")
    with pytest.raises(InputError, match="reappears"):
        count_samples(path)


def test_invalid_utf8_caption(tmp_path):
    path = str(write_tar(tmp_path / "u.tar", [("a.txt", b"ok"), ("b.txt", b"bad \xff here")]))
    expect(path, "'b'", "not valid UTF-8", "byte 1024", "re-encode")


def test_invalid_json(tmp_path):
    path = str(write_tar(tmp_path / "j.tar", [("a.txt", b"A"), ("a.json", b"{not json")]))
    expect(path, "'a'", ".json", "not valid JSON", "byte 1024")
    path = str(write_tar(tmp_path / "k.tar", [("a.txt", b"A"), ("a.json", b"[1, 2]")]))
    expect(path, "'a'", "not an object")


def test_data_after_end_of_archive(tmp_path):
    a = small(tmp_path, name="a.tar")
    b = str(write_tar(tmp_path / "b.tar", [("z.txt", b"more")]))
    both = tmp_path / "ab.tar"
    both.write_bytes(open(a, "rb").read() + open(b, "rb").read())
    expect(str(both), "after the end-of-archive", "concatenated")


def test_empty_and_not_a_tar(tmp_path):
    e = tmp_path / "e.tar"
    e.write_bytes(b"")
    expect(str(e), "empty")
    j = tmp_path / "j.tar"
    j.write_bytes(b"this is not a tar archive\n" * 100)
    expect(str(j), "checksum", "byte 0")


def test_sparse_member_is_an_error(tmp_path):
    path = str(tmp_path / "sp.tar")
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo("a.txt")
        ti.type = tarfile.GNUTYPE_SPARSE
        ti.size = 0
        tf.addfile(ti)
    expect(path, "sparse")


JSON_VARIANTS = {  # name: (.json members of the samples, whether Arrow's reader may take them)
    "plain": ([b'{"url": "u0", "w": 1, "h": 2.5, "ok": true, "n": null}',
               b'{"url": "u1", "w": 3, "h": 4, "ok": false, "n": null}'], True),
    "fields vary": ([b'{"b": 1, "a": "x"}', b'{}', b'{"a": "y", "c": [1]}'], False),
    "scalars vary": ([b'{"b": 1, "a": "x"}', b'{}', b'{"a": "y", "c": 2}'], True),
    "key and text fields": ([b'{"__key__": "k", "text": "t", "x": 1}'] * 2, True),
    "int then float": ([b'{"x": 1}', b'{"x": 2.5}', b'{"x": 1e2}'], True),
    "date-like string": ([b'{"d": "2020-01-01"}', b'{"d": "2020-01-02 10:00:00"}'], False),
    "nested": ([b'{"o": {"a": 1}, "l": [1, 2]}', b'{"o": {"a": 2}, "l": []}'], False),
    "minus zero": ([b'{"x": -0}', b'{"x": 0.5}'], False),
    "minus zero float": ([b'{"x": -0.0}', b'{"x": 0.5}'], True),
    "bom": ([b'\xef\xbb\xbf{"x": 1}', b'{"x": 2}'], False),
    "lone surrogate": ([b'{"s": "\\ud800"}', b'{"s": "a"}'], False),
    "surrogate pair": ([b'{"s": "\\ud83d\\ude00"}', b'{"s": "a"}'], False),
    "long integer": ([b'{"x": 12345678901234567890}', b'{"x": 1}'], False),
    "19 digits in a string": ([b'{"x": "1234567890123456789012"}', b'{"x": "1"}'], True),
    "pretty": ([b'{\n  "x": 1\n}', b'{"x": 2}'], False),
    "tabs between tokens": ([b'{\t"x":\t1}', b'{"x": 2}'], False),
    "nan": ([b'{"x": NaN}', b'{"x": 1.5}'], True),
    "huge float": ([b'{"x": 1e400}', b'{"x": 1.5}'], False),
    "duplicate key": ([b'{"x": 1, "x": 2}', b'{"x": 3}'], False),
    "not json": ([b'{"x": 1', b'{"x": 2}'], False),
    "an array": ([b'[1, 2]', b'{"x": 2}'], False),
    "string and number": ([b'{"x": "a"}', b'{"x": 2}'], False),
    "bool and number": ([b'{"x": true}', b'{"x": 2}'], False),
    "control byte in a string": ([b'{"x": "a\x01b"}', b'{"x": "c"}'], False),
    "invalid utf-8": ([b'{"x": "a\xffb"}', b'{"x": "c"}'], False),
    "escapes": ([b'{"x": "a\\n\\"b\\u00e9\\/"}', b'{"x": "\xc3\xa9"}'], True),
    "all null": ([b'{"x": null}', b'{"x": null}'], True),
    "a null member": ([b'null', b'{"x": 1}'], False),
    "two objects and an empty member": ([b'{"x": 1} {"x": 2}', b''], False),
    "space before": ([b' {"x": 1}', b'{"x": 2}'], False),
}


@pytest.mark.parametrize("name", sorted(JSON_VARIANTS))
def test_json_members_read_by_arrow_equal_sample_by_sample(tmp_path, monkeypatch, name):
    """A batch's .json members go to Arrow's JSON reader in one call when it
    reads them exactly as json does; the table (or the error) is the same as
    when every sample is parsed on its own, and so the same as the reference's."""
    members, arrow = JSON_VARIANTS[name]
    files = []
    for i, js in enumerate(members):
        files += [(f"s{i}.txt", f"a dog {i}".encode()), (f"s{i}.json", js)]
    path = str(write_tar(tmp_path / "j.tar", files))
    took = []
    fast = tarscan._table_arrow

    def spy(*a):
        t = fast(*a)
        took.append(t is not None)
        return t

    def run():
        try:
            return new(path), None
        except InputError as exc:
            return None, str(exc)

    monkeypatch.setattr(tarscan, "_table_arrow", spy)
    got = run()
    assert took == [arrow]
    monkeypatch.setattr(tarscan, "_table_arrow", lambda *a: None)
    want = run()
    if want[0] is None:
        assert got[0] is None and got[1] == want[1]
    else:  # (repr: a NaN is not equal to itself)
        assert got[0].schema == want[0].schema
        assert repr(got[0].to_pylist()) == repr(want[0].to_pylist())


def test_header_sums_of_every_byte_value():
    """The word-wise header sums equal a byte-by-byte count: the sum of the
    block's bytes, and tar's unsigned and signed checksums (the checksum field
    counted as eight spaces), on blocks of high and low bytes alike."""
    import numpy as np

    rng = np.random.default_rng(1)
    blocks = [np.zeros(512, np.uint8), np.full(512, 255, np.uint8), np.full(512, 128, np.uint8)]
    blocks += [rng.integers(0, 256, 512, dtype=np.uint8) for _ in range(50)]
    buf = np.concatenate([np.zeros(8, np.uint8)] + blocks)  # offset 8: not on a block
    for k, blk in enumerate(blocks):
        raw = int(blk.astype(np.int64).sum())
        field = blk[148:156].astype(np.int64)
        signed = blk.astype(np.int8).astype(np.int64)
        want = (raw, raw - int(field.sum()) + 256,
                int(signed.sum()) - int(signed[148:156].sum()) + 256)
        assert tarscan._header_sums(buf, 8 + 512 * k) == want


def test_json_lines_equals_the_checks_it_replaces():
    """The one-pass copy and check of a batch's .json members accepts exactly
    the batches that the statement of its rules accepts (members joined by
    line breaks: one "{...}" per line, no byte below 0x20, none of what
    _json_rules_needed finds), and then lays them out the same, on random
    members made of the bytes those rules look at."""
    import numpy as np

    rng = random.Random(11)
    alphabet = [b"{", b"}", b":", b",", b"[", b"]", b" ", b"-", b"0", b"1", b"9", b".", b"e",
                b"E", b"\\", b"u", b"d", b"D", b"\xef", b"\xbb", b"\xbf", b"\n", b"\t", b"a",
                b'"', b"-0", b": -0", b"[-0.", b", 0", b"\\ud8", b"\xef\xbb\xbf"]
    accepted = refused = 0
    for case in range(3000):
        members = []
        for _ in range(rng.randint(1, 4)):
            body = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            if rng.random() < 0.3:  # a long run of digits after a separator
                body += rng.choice([b":", b",", b"[", b"x"]) + b" " * rng.randint(0, 2) + \
                    rng.choice([b"", b"-"]) + b"7" * rng.randint(14, 17)  # 16: the bound
            if rng.random() < 0.9:
                body = b"{" + body + b"}"
            members.append(body if rng.random() < 0.97 else b"")
        js = b"".join(members)
        rows = np.zeros((len(members), 5), np.int64)
        at = 0
        for i, m in enumerate(members):
            rows[i, 1], rows[i, 2] = at, len(m)
            at += len(m)
        buf = b"\n".join(members) + b"\n"
        raw = np.frombuffer(buf, np.uint8)
        want = all(m[:1] == b"{" and m[-1:] == b"}" for m in members) and \
            int(np.count_nonzero(raw < 0x20)) == len(members) and \
            not tarscan._json_rules_needed(buf, raw)
        out = np.zeros(len(buf), np.uint8)
        got = tarscan._json_lines(np.frombuffer(js, np.uint8), rows, out)
        assert got == want, (case, members)
        if got:
            assert out.tobytes() == buf
            accepted += 1
        else:
            refused += 1
    assert accepted > 300 and refused > 300, (accepted, refused)


def test_json_members_with_many_brackets_never_reach_arrow():
    """A member holding more than MAX_ARROW_OPENS '{' and '[' bytes (strings
    included) goes to json's rules: Arrow's reader overflows its stack on deep
    nesting (it crashed the process at 20000 levels). The one-pass check and
    its statement agree at the bound."""
    import numpy as np

    k = tarscan.MAX_ARROW_OPENS
    cases = {b'{"x": "' + b"[" * (k - 1) + b'"}': True,  # k opens: handed to Arrow
             b'{"x": "' + b"[" * k + b'"}': False,
             b'{"x": ' + b"[" * (k - 1) + b"]" * (k - 1) + b"}": True,
             b'{"x": ' + b"[" * k + b"]" * k + b"}": False,
             b'{"a": {"b": ' * (k // 2) + b"1" + b"}" * k: True,
             b'{"a": {"b": ' * (k // 2 + 1) + b"1" + b"}" * (k + 2): False}
    for m, want in cases.items():
        rows = np.array([[0, 0, len(m), 0, 0]], np.int64)
        out = np.zeros(len(m) + 1, np.uint8)
        got = tarscan._json_lines(np.frombuffer(m, np.uint8), rows, out)
        buf = m + b"\n"
        assert got == want == (not tarscan._json_rules_needed(buf, np.frombuffer(buf, np.uint8))), m


def test_tar_json_integers_past_2_53_are_never_rounded(tmp_path):
    """A .json field holding a fraction in one sample and an integer past
    2**53 in another: Arrow's JSON reader made both doubles (the integer
    rounded); the batch is read by json's rules instead, which refuse the
    mixed field. Integers alone stay exact."""
    import io as _io
    import tarfile as _tarfile

    from gpucurate.errors import InputError
    from gpucurate.pipeline import curate

    meta = tmp_path / "m.json"
    meta.write_text('["cat"]')
    for name, ids in (("mixed", ["1.5", "9007199254740993"]), ("ints", ["2", "9007199254740993"])):
        with _tarfile.open(tmp_path / f"{name}.tar", "w") as tf:
            for i, v in enumerate(ids):
                for ext, b in (("txt", b"a cat"), ("json", b'{"id":' + v.encode() + b"}")):
                    ti = _tarfile.TarInfo(f"s{i}.{ext}")
                    ti.size = len(b)
                    tf.addfile(ti, _io.BytesIO(b))
    with pytest.raises(InputError, match="mixed types"):
        curate(str(meta), [str(tmp_path / "mixed.tar")], str(tmp_path / "o1"), t=100,
               device="cpu", report=False)
    curate(str(meta), [str(tmp_path / "ints.tar")], str(tmp_path / "o2"), t=100, device="cpu",
           report=False)
    got = pq.read_table(tmp_path / "o2" / "curated").column("id").to_pylist()
    assert got == [2, 9007199254740993]


@pytest.mark.parametrize("names", [("a.txt", "a.TXT"), ("a.json", "a.json"), ("a.Json", "a.json")])
def test_a_sample_with_two_captions_is_an_error(tmp_path, names):
    """A sample with two .txt (or two .json) members, the extension in any
    case: which one holds the caption is not clear (the last one was taken
    without a word); an error naming the sample."""
    import io as _io
    import tarfile as _tarfile

    from gpucurate.errors import InputError
    from gpucurate.pipeline import curate

    meta = tmp_path / "m.json"
    meta.write_text('["cat"]')
    with _tarfile.open(tmp_path / "a.tar", "w") as tf:
        members = [("a.txt", b"a cat")] if "json" in names[0].lower() else []
        members += [(n, b'{"x": 1}' if "json" in n.lower() else b"a cat") for n in names]
        members += [("b.txt", b"a cat")]
        for n, b in members:
            ti = _tarfile.TarInfo(n)
            ti.size = len(b)
            tf.addfile(ti, _io.BytesIO(b))
    with pytest.raises(InputError, match="sample 'a' has a second"):
        curate(str(meta), [str(tmp_path / "a.tar")], str(tmp_path / "o"), t=100, device="cpu",
               report=False)


def _patched(path, member: int, off: int, value: bytes):
    """The tar at ``path`` with bytes ``off`` of member ``member``'s header
    set to ``value``, its checksum made right again."""
    raw = bytearray(open(path, "rb").read())
    with tarfile.open(path) as tf:
        h = tf.getmembers()[member].offset
    raw[h + off:h + off + len(value)] = value
    raw[h + 148:h + 156] = b" " * 8
    raw[h + 148:h + 156] = b"%06o\0 " % sum(raw[h:h + 512])
    with open(path, "wb") as f:
        f.write(bytes(raw))


def test_number_fields_read_as_tarfile_reads_them(tmp_path):
    """A uid written as a negative base-256 number (tarfile reads it) is a
    sample like any; a device number that reads as no number (tarfile stops
    there, the rest unread) is an error naming the header, as a damaged mode,
    owner or time is."""
    from gpucurate.errors import InputError

    members = [("a.txt", b"a dog"), ("b.txt", b"a cat"), ("c.txt", b"a bird")]
    neg = str(write_tar(tmp_path / "neg.tar", members, "gnu"))
    _patched(neg, 1, 108, b"\xff" * 8)
    assert new(neg).column("__key__").to_pylist() == ["a", "b", "c"]
    assert new(neg).equals(old(neg))
    dev = str(write_tar(tmp_path / "dev.tar", members, "gnu"))
    _patched(dev, 1, 329, b"zzzzzzz\0")
    with pytest.raises(InputError, match="invalid number field .* at byte 1024"):
        new(dev)


def test_compressed_tar_cut_short_names_where_its_bytes_end(tmp_path):
    """A .tar.gz cut short: the bytes that decompress are walked first, and
    the error names the tar byte where they end and the last sample read
    (it named byte 0 and no sample when the cut fell in the first window);
    junk after a whole stream is damage after the archive."""
    import zlib

    from gpucurate.errors import InputError

    rng = random.Random(3)
    members = []
    for i in range(300):
        members += [(f"s{i:04d}.jpg", bytes(rng.getrandbits(8) for _ in range(6000))),
                    (f"s{i:04d}.txt", f"a dog {i}".encode())]
    plain = str(write_tar(tmp_path / "t.tar", members, "gnu"))
    gz = gzip.compress(open(plain, "rb").read(), compresslevel=1)
    cut = gz[:int(len(gz) * 0.6)]
    (tmp_path / "cut.tar.gz").write_bytes(cut)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    avail = len(d.decompress(cut))
    with pytest.raises(InputError) as e:
        new(str(tmp_path / "cut.tar.gz"))
    msg = str(e.value)
    assert f"ends early, at tar byte {avail}," in msg, msg
    last = int(msg.split("in or after sample 's")[1][:4])
    per = 512 + 6144 + 512 + 512  # a sample's bytes: the .jpg's header and data, the .txt's
    assert last * per <= avail <= (last + 2) * per  # the sample where those bytes end
    (tmp_path / "junk.tar.gz").write_bytes(gz + b"junk" * 10)
    with pytest.raises(InputError, match="damaged after the end of the tar archive"):
        new(str(tmp_path / "junk.tar.gz"))
