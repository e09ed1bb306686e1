"""Training-ready outputs (--outputs webdataset, uids), plan, rebalance and
--group-column without --worldwide, on real captions, real tars and real runs."""

import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpucurate import cli
from gpucurate.errors import ConfigError, InputError
from gpucurate.keys import keep
from gpucurate.pipeline import curate, run
from gpucurate.config import CurateConfig
from gpucurate.pipeline.plan import plan
from gpucurate.pipeline.rebalance import rebalance
from pool import real_rows, write_parquet_shards

M64 = (1 << 64) - 1


def mix(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def uid_of(i: int) -> str:
    return hashlib.md5(str(i).encode()).hexdigest()


def curated(out):
    parts = sorted(glob.glob(os.path.join(out, "curated", "part-*.parquet")))
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="permissive")


@pytest.fixture(scope="module")
def rows():
    t = real_rows("coco_captions_val2017", 900)
    return t.append_column("uid", pa.array([uid_of(i) for i in t.column("id").to_pylist()]))


def _write_wds(rows: pa.Table, path: str, lo: int, hi: int, seed: int) -> dict:
    """A WebDataset shard of real captions with image-like members of random
    bytes and sizes; every 5th sample has no .json. Returns {key: members}."""
    rng = np.random.default_rng(seed)
    members = {}
    fmt = tarfile.PAX_FORMAT if seed == 3 else tarfile.GNU_FORMAT  # pax headers: shard 3
    with tarfile.open(path, "w", format=fmt) as tf:
        for i in range(lo, hi):
            r = rows.slice(i, 1).to_pylist()[0]
            key = r["uid"]  # a DataComp uid: the sample key is the uid
            m = {"jpg": rng.integers(0, 256, int(rng.integers(100, 5000)), np.uint8).tobytes(),
                 "txt": r["text"].encode(),
                 "cls": str(i % 7).encode()}
            if i % 5:
                m["json"] = json.dumps({"id": r["id"], "uid": r["uid"], "w": i}).encode()
            for ext, blob in m.items():
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size, ti.mtime, ti.mode = len(blob), 1_700_000_000 + i, 0o644
                if fmt == tarfile.PAX_FORMAT and ext == "jpg":
                    ti.pax_headers = {"comment": f"pax {i}"}
                tf.addfile(ti, io.BytesIO(blob))
            members[key] = m
    return members


@pytest.fixture(scope="module")
def wds_pool(tmp_path_factory, rows):
    root = tmp_path_factory.mktemp("wds")
    os.makedirs(root / "in")
    members = {}
    bounds = [0, 250, 260, 600, 900]
    for k in range(4):
        members.update(_write_wds(rows, str(root / "in" / f"shard-{k}.tar"), bounds[k],
                                  bounds[k + 1], k))
    return root, members


def _wds_run(metadata_path, inputs, out, **kw):
    kw.setdefault("outputs", ("parquet", "webdataset", "uids"))
    return curate(str(metadata_path), inputs, out, t=3, key_column="__key__", device="cpu",
                  seed=5, report=False, samples_per_shard=37, **kw)


@pytest.fixture(scope="module")
def wds_run(wds_pool, metadata_path):
    root, members = wds_pool
    out = str(root / "out")
    s = _wds_run(metadata_path, [str(root / "in")], out)
    return root, members, out, s


def _tar_bytes(out):
    d = os.path.join(out, "curated-wds")
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


def test_webdataset_output_reads_back(wds_run):
    import webdataset as wds

    root, members, out, s = wds_run
    kept = curated(out)
    keys = kept.column("__key__").to_pylist()
    ids = kept.column("entry_ids").to_pylist()
    assert 40 < len(keys) < 900 and s["curated"] == len(keys)
    d = os.path.join(out, "curated-wds")
    sizes = json.load(open(os.path.join(d, "sizes.json")))
    n_tars = (len(keys) + 36) // 37
    assert sorted(sizes) == [f"{j:05d}.tar" for j in range(n_tars)]
    assert all(v == 37 for f, v in sizes.items() if f != f"{n_tars - 1:05d}.tar")
    assert sum(sizes.values()) == len(keys)
    urls = [os.path.join(d, f) for f in sorted(sizes)]
    got = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert [g["__key__"] for g in got] == keys  # in input order
    for g, key, eids in zip(got, keys, ids):
        m = members[key]
        assert g["jpg"] == m["jpg"] and g["txt"] == m["txt"] and g["cls"] == m["cls"]
        meta = json.loads(g["json"])
        want = dict(json.loads(m["json"])) if "json" in m else {}
        want["entry_ids"] = eids
        assert meta == want and eids
        if "json" in m:  # the other bytes of the .json are kept as they were
            assert g["json"].startswith(m["json"][:-1])
    per_tar = [sum(1 for _ in wds.WebDataset([u], shardshuffle=False)) for u in urls]
    assert per_tar == [sizes[os.path.basename(u)] for u in urls]
    with tarfile.open(urls[0]) as tf:  # member headers copied as they were
        ti = tf.getmember(keys[0] + ".jpg")
        assert ti.mtime >= 1_700_000_000 and ti.mode == 0o644
    summ = json.load(open(os.path.join(out, "summary.json")))
    assert summ["outputs"]["webdataset"]["samples"] == len(keys)


def test_uids_are_datacomp_subset(wds_run):
    _, _, out, _ = wds_run
    kept = curated(out)
    u = np.load(os.path.join(out, "uids.npy"))
    assert u.dtype == np.dtype("u8,u8")
    want = sorted((int(x[:16], 16), int(x[16:], 16)) for x in kept.column("__key__").to_pylist())
    assert [(int(a), int(b)) for a, b in u.tolist()] == want
    # DataComp's own construction of the same file
    dc = np.array([(int(x[:16], 16), int(x[16:32], 16))
                   for x in kept.column("__key__").to_pylist()],
                  np.dtype("u8,u8"))
    dc.sort()
    assert np.array_equal(dc, u)


def test_webdataset_is_the_same_whatever_the_batching_and_compression(wds_run, wds_pool,
                                                                      metadata_path, tmp_path):
    root, _, out, _ = wds_run
    gz = tmp_path / "gz"
    os.makedirs(gz)
    for p in sorted(glob.glob(str(root / "in" / "*.tar"))):
        with open(p, "rb") as f, open(gz / (os.path.basename(p) + ".gz"), "wb") as g:
            g.write(gzip.compress(f.read()))
    # the draw is keyed by id, so the shard names may differ
    out2 = str(tmp_path / "out2")
    _wds_run(metadata_path, [str(gz)], out2, batch_bytes=2000)
    assert _tar_bytes(out) == _tar_bytes(out2)
    assert np.array_equal(np.load(os.path.join(out, "uids.npy")),
                          np.load(os.path.join(out2, "uids.npy")))
    assert not glob.glob(str(tmp_path / "out2" / "work" / "wds" / "tar-*"))  # scratch gone


def test_webdataset_resumes(wds_run, metadata_path, tmp_path):
    root, _, out, _ = wds_run
    out2 = str(tmp_path / "r")
    shutil.copytree(out, out2)
    d = os.path.join(out2, "curated-wds")
    os.remove(os.path.join(d, "00001.tar"))
    os.remove(os.path.join(d, "sizes.json"))
    m0 = os.stat(os.path.join(d, "00000.tar")).st_mtime_ns
    with open(os.path.join(d, "00002.tar.tmp-1"), "wb") as f:  # an interrupted writer's
        f.write(b"half")
    _wds_run(metadata_path, [str(root / "in")], out2)
    assert _tar_bytes(out) == _tar_bytes(out2)
    assert os.stat(os.path.join(d, "00000.tar")).st_mtime_ns == m0


def test_outputs_without_parquet(wds_pool, metadata_path, tmp_path, wds_run):
    root, _, out, _ = wds_run
    out2 = str(tmp_path / "o")
    s = _wds_run(metadata_path, [str(root / "in")], out2, outputs=("webdataset",))
    assert not os.path.exists(os.path.join(out2, "curated"))
    assert not os.path.exists(os.path.join(out2, "uids.npy"))
    assert _tar_bytes(out) == _tar_bytes(out2)
    _wds_run(metadata_path, [str(root / "in")], out2, outputs=("webdataset",))  # rerun: whole
    assert _tar_bytes(out) == _tar_bytes(out2) and s["curated"] > 0


def test_download_folder_to_webdataset(metadata_path, tmp_path, rows):
    """img2dataset / DataComp: NAME.parquet (key, caption, status, uid) beside
    NAME.tar; failed downloads have no sample in the tar."""
    import webdataset as wds

    dl = tmp_path / "dl"
    os.makedirs(dl)
    rng = np.random.default_rng(1)
    images = {}
    for k in range(2):
        sub = rows.slice(k * 200, 200).to_pylist()
        recs = []
        with tarfile.open(dl / f"{k:05d}.tar", "w") as tf:
            for j, r in enumerate(sub):
                key = f"{k:05d}{j:04d}"
                status = "failed_to_download" if j % 9 == 4 else "success"
                recs.append({"key": key, "caption": r["text"], "status": status, "uid": r["uid"]})
                if status != "success":
                    continue
                img = rng.integers(0, 256, 300 + j, np.uint8).tobytes()
                images[key] = img
                for ext, blob in (("jpg", img), ("txt", r["text"].encode()),
                                  ("json", json.dumps({"key": key, "uid": r["uid"]}).encode())):
                    ti = tarfile.TarInfo(f"{key}.{ext}")
                    ti.size = len(blob)
                    tf.addfile(ti, io.BytesIO(blob))
        pq.write_table(pa.Table.from_pylist(recs), dl / f"{k:05d}.parquet")
    out = str(tmp_path / "out")
    s = curate(str(metadata_path), [str(dl)], out, t=15, key_column="uid", device="cpu",
               report=False, outputs=("webdataset", "uids"), samples_per_shard=50)
    d = os.path.join(out, "curated-wds")
    sizes = json.load(open(os.path.join(d, "sizes.json")))
    got = list(wds.WebDataset([os.path.join(d, f) for f in sorted(sizes)], shardshuffle=False))
    assert len(got) == s["curated"] == sum(sizes.values()) > 0
    for g in got:
        assert g["jpg"] == images[g["__key__"]]
        meta = json.loads(g["json"])
        assert meta["key"] == g["__key__"] and meta["entry_ids"]
    u = np.load(os.path.join(out, "uids.npy"))
    assert u.size == len(got)


def _no_work(out):
    return not os.path.exists(os.path.join(out, "config.json"))


def test_bad_outputs_are_refused_before_any_work(metadata_path, tmp_path, rows):
    write_parquet_shards(rows, tmp_path / "pq", 2)
    out = str(tmp_path / "o1")
    with pytest.raises(ConfigError, match="without a tar beside it"):
        curate(str(metadata_path), [str(tmp_path / "pq")], out, t=15, key_column="id",
               device="cpu", report=False, outputs="parquet,webdataset")
    assert _no_work(out)
    with pytest.raises(InputError, match=r"row 0 has the key \d+.*not a DataComp uid"):
        curate(str(metadata_path), [str(tmp_path / "pq")], out, t=15, key_column="id",
               device="cpu", report=False, outputs="uids")
    assert _no_work(out)
    bad = rows.set_column(rows.schema.get_field_index("uid"), "uid",
                          pa.array([u if i != 137 else u[:31] + "g" for i, u in
                                    enumerate(rows.column("uid").to_pylist())]))
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad.parquet.*row 137 has the key"):
        curate(str(metadata_path), [str(tmp_path / "bad.parquet")], out, t=15,
               key_column="uid", device="cpu", report=False, outputs="uids")
    assert _no_work(out)
    with pytest.raises(ConfigError, match="--outputs takes"):
        CurateConfig(metadata="m", inputs=("x",), out="o", outputs="parquet,tfrecord")
    with pytest.raises(ConfigError, match="uids takes each kept sample's uid from --key-column"):
        curate(str(metadata_path), [str(tmp_path / "pq")], out, t=15, device="cpu",
               report=False, outputs="uids")
    rc = cli.main(["curate", "--metadata", str(metadata_path), "--input", str(tmp_path / "pq"),
                   "--out", out, "--t", "15", "--outputs", "webdataset", "--device", "cpu"])
    assert rc == 2 and _no_work(out)


# ---------------------------------------------------------------- plan
def _brute_expected(root, t):
    counts = pq.read_table(os.path.join(root, "entry_counts.parquet")).column("count").to_numpy()
    total = 0.0
    for f in sorted(glob.glob(os.path.join(root, "matches", "*.parquet"))):
        m = pq.read_table(f)
        e, tid = m.column("entry_id").to_numpy(), m.column("text_id").to_numpy()
        p = np.minimum(1.0, t / counts[e].astype(float))
        keepnot = np.ones(int(tid.max()) + 1)
        np.multiply.at(keepnot, tid, 1 - p)
        has = np.zeros(keepnot.size, bool)
        has[tid] = True
        total += float(np.sum(1 - keepnot[has]))
    return total


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, rows, metadata_path):
    root = tmp_path_factory.mktemp("saved")
    write_parquet_shards(rows, root / "in", 3)
    out = str(root / "out")
    curate(str(metadata_path), [str(root / "in")], out, t=15, key_column="id", device="cpu",
           seed=7, report=False, save_matches=True)
    return root, out


def test_plan_finds_the_nearest_t(saved_run, capsys):
    _, out = saved_run
    target = 300
    rc = cli.main(["plan", out, "--target-size", str(target), "--json"])
    assert rc == 0
    text = capsys.readouterr().out
    last = json.loads(text.strip().splitlines()[-1])
    t = last["t"]
    assert isinstance(t, int) and isinstance(last["expected_curated"], int)
    e = {x: _brute_expected(out, x) for x in (t - 1, t, t + 1) if x >= 1}
    assert abs(e[t] - target) <= min(abs(v - target) for v in e.values()) + 1e-6
    assert last["expected_curated"] == round(e[t])
    assert "expected" in text and f"{t:>12,}" in text  # the table
    d = plan(out, target)
    for tt, ee in d["table"]:
        assert ee == pytest.approx(_brute_expected(out, tt), abs=1e-6)


def test_plan_of_matches_split_mid_caption_and_six_digit_shards(saved_run, tmp_path):
    """The same plan when the saved matches' row groups end inside a caption's
    pairs (a batch with more pairs than a row group holds) and when shard
    numbers reach six digits (shard-100001)."""
    import shutil

    _, out = saved_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    files = sorted(glob.glob(str(copy / "matches" / "*.parquet")))
    for f in files:
        t = pq.read_table(f)
        pq.write_table(t, f, row_group_size=7)
        tid = t.column("text_id").to_numpy()
        assert np.any(tid[6:-1:7] == tid[7::7])  # some group ends inside a caption
    os.rename(copy / "work" / "pass1" / "shard-00001.json",
              copy / "work" / "pass1" / "shard-100001.json")
    os.rename(copy / "matches" / "shard-00001.parquet", copy / "matches" / "shard-100001.parquet")
    assert plan(str(copy), 300) == plan(out, 300)


def test_plan_of_a_grouped_run_counts_the_chosen_captions(tmp_path):
    """A run with --group-column keeps at most each group's chosen caption:
    plan's expected sizes are those of the chosen captions (brute force)."""
    os.makedirs(tmp_path / "in")
    n = 1000
    pq.write_table(pa.table({"caption": ["a dog" if i % 2 else "a cat and a dog" if i % 3
                                         else "a cat" for i in range(n)],
                             "img": [i % 40 for i in range(n)]}), tmp_path / "in" / "s.parquet")
    meta = tmp_path / "m.json"
    meta.write_text('["dog", "cat"]')
    out = str(tmp_path / "out")
    curate(str(meta), [str(tmp_path / "in")], out, t=1000, group_column="img", device="cpu",
           report=False, save_matches=True)
    d = plan(out, 300)
    assert d["one_per_group"] and d["matched_captions"] == 40 and d["expected_curated"] <= 40
    chosen = np.load(os.path.join(out, "work", "groups", "shard-00000.npy"))
    counts = pq.read_table(os.path.join(out, "entry_counts.parquet")).column("count").to_numpy()
    m = pq.read_table(os.path.join(out, "matches", "shard-00000.parquet"))
    e, tid = m.column("entry_id").to_numpy(), m.column("text_id").to_numpy()
    sel = np.isin(tid, chosen)
    for t, expected in d["table"]:
        p = np.minimum(1.0, t / counts[e[sel]].astype(float))
        keepnot = np.ones(n)
        np.multiply.at(keepnot, tid[sel], 1 - p)
        assert expected == pytest.approx(float(np.sum(1 - keepnot[np.unique(tid[sel])])),
                                         abs=1e-6)
    # a count run of the same (what plan's docs name first) plans alike: it
    # left no chosen rows, and plan told to rerun it, which changed nothing
    from gpucurate.config import CurateConfig
    from gpucurate.pipeline import run

    run(CurateConfig(metadata=str(meta), inputs=(str(tmp_path / "in"),),
                     out=str(tmp_path / "cnt"), group_column="img", device="cpu", report=False,
                     save_matches=True), stage="count")
    assert plan(str(tmp_path / "cnt"), 300)["table"] == d["table"]


def test_plan_needs_saved_matches(base_parquet_run):
    with pytest.raises(ConfigError, match="--save-matches"):
        plan(base_parquet_run, 100)
    assert cli.main(["plan", base_parquet_run, "--target-size", "100"]) == 2


@pytest.fixture(scope="module")
def base_parquet_run(saved_run, metadata_path, tmp_path_factory):
    root, _ = saved_run
    out = str(tmp_path_factory.mktemp("nosave") / "out")
    curate(str(metadata_path), [str(root / "in")], out, t=15, key_column="id", device="cpu",
           report=False)
    return out


# ---------------------------------------------------------------- rebalance
def _survivors(rows, frac=0.7, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.array(rows.column("id").to_pylist())
    return ids[rng.random(ids.size) < frac]


def _survivor_pool(root, rows, surv, dest):
    """The survivors alone, in the same shards (same names) as the pool."""
    os.makedirs(dest)
    s = set(surv.tolist())
    for p in sorted(glob.glob(str(root / "in" / "*.parquet"))):
        t = pq.read_table(p)
        keep_ = [i for i, v in enumerate(t.column("id").to_pylist()) if v in s]
        pq.write_table(t.take(keep_), os.path.join(dest, os.path.basename(p)))


def _same_curation(a, b):
    ta, tb = curated(a), curated(b)
    assert ta.num_rows > 0 and ta.equals(tb)
    ea = pq.read_table(os.path.join(a, "entry_counts.parquet"))
    eb = pq.read_table(os.path.join(b, "entry_counts.parquet"))
    assert ea.column("count").equals(eb.column("count")) and ea.column("prob").equals(
        eb.column("prob"))


@pytest.mark.parametrize("rule", ["t", "tail"])
def test_rebalance_equals_curate_of_survivors(saved_run, rows, metadata_path, tmp_path, rule):
    root, out = saved_run
    surv = _survivors(rows)
    fake = np.array([10**12 + 1, 10**12 + 2, 10**12 + 3])
    pq.write_table(pa.table({"id": np.concatenate([surv, fake, surv[:5]])}),
                   tmp_path / "surv.parquet")
    kw = {"t": 9} if rule == "t" else {"tail_fraction": 0.5}
    out2 = str(tmp_path / "re")
    s = rebalance(out, str(tmp_path / "surv.parquet"), "id", out2, device="cpu", report=False,
                  **kw)
    _survivor_pool(root, rows, surv, tmp_path / "sp")
    ref = str(tmp_path / "ref")
    r = curate(str(metadata_path), [str(tmp_path / "sp")], ref, key_column="id", device="cpu",
               seed=7, report=False, **kw)
    _same_curation(out2, ref)
    assert s["survivors"]["not_in_pool"] == 3 and s["survivors"]["keys"] == surv.size + 3
    assert s["pool"] == r["pool"] == surv.size and s["curated"] == r["curated"]
    assert s["matched"] == r["matched"] and s["t"] == r["t"]
    assert not glob.glob(os.path.join(out2, "work", "matches", "*"))
    assert len(glob.glob(os.path.join(out, "matches", "*.parquet"))) == 3  # the source's, kept


def test_rebalance_target_size_and_text_survivors(saved_run, rows, metadata_path, tmp_path,
                                                  capsys):
    root, out = saved_run
    surv = _survivors(rows, 0.6, seed=3)
    (tmp_path / "surv.txt").write_text("\n".join(map(str, surv.tolist())) + "\n")
    out2 = str(tmp_path / "re")
    rc = cli.main(["rebalance", out, "--survivors", str(tmp_path / "surv.txt"), "--key-column",
                   "id", "--target-size", "200", "--out", out2, "--device", "cpu", "--no-report"])
    assert rc == 0
    _survivor_pool(root, rows, surv, tmp_path / "sp")
    ref = str(tmp_path / "ref")
    curate(str(metadata_path), [str(tmp_path / "sp")], str(tmp_path / "count"), key_column="id",
           device="cpu", seed=7, report=False, t=1, save_matches=True)
    t = plan(str(tmp_path / "count"), 200)["t"]
    s2 = json.load(open(os.path.join(out2, "summary.json")))
    assert s2["t"] == t
    curate(str(metadata_path), [str(tmp_path / "sp")], ref, key_column="id", device="cpu",
           seed=7, report=False, t=t)
    _same_curation(out2, ref)


def test_rebalance_bad_input(saved_run, base_parquet_run, tmp_path):
    _, out = saved_run
    pq.write_table(pa.table({"uid": ["a", "b"]}), tmp_path / "s.parquet")
    with pytest.raises(ConfigError, match="has no column 'id'.*--key-column"):
        rebalance(out, str(tmp_path / "s.parquet"), "id", str(tmp_path / "o"), t=5,
                  device="cpu")
    assert _no_work(str(tmp_path / "o"))
    (tmp_path / "s.jsonl").write_text('{"uid": "a"}\n')
    with pytest.raises(ConfigError, match="has no field 'id'"):
        rebalance(out, str(tmp_path / "s.jsonl"), "id", str(tmp_path / "o"), t=5, device="cpu")
    pq.write_table(pa.table({"id": [1, 2]}), tmp_path / "ok.parquet")
    with pytest.raises(ConfigError, match="no saved matches.*--save-matches"):
        rebalance(base_parquet_run, str(tmp_path / "ok.parquet"), "id", str(tmp_path / "o"),
                  t=5, device="cpu")
    assert _no_work(str(tmp_path / "o"))


# ---------------------------------------------------------------- --group-column, MetaCLIP 1
def test_group_column_metaclip1(tmp_path, metadata_path, rows):
    """Several alt-texts per image: one caption per group, the one with the
    smallest pinned draw mix(mix(mix(seed) ^ g) ^ mix(k)) among the group's
    non-null captions, kept when that caption is."""
    t = rows.append_column("img", pa.array([i // 3 for i in range(rows.num_rows)], pa.int64()))
    write_parquet_shards(t, tmp_path / "in", 2)
    out = str(tmp_path / "out")
    seed = 11
    curate(str(metadata_path), [str(tmp_path / "in")], out, t=10, key_column="id",
           group_column="img", device="cpu", seed=seed, report=False)
    kept = curated(out)
    imgs = kept.column("img").to_pylist()
    assert len(imgs) == len(set(imgs)) > 10
    # the chosen caption per group, transcribed
    ec = pq.read_table(os.path.join(out, "entry_counts.parquet"))
    prob = ec.column("prob").to_numpy()
    ref = str(tmp_path / "plain")
    curate(str(metadata_path), [str(tmp_path / "in")], ref, t=10, key_column="id",
           device="cpu", seed=seed, report=False, outputs="parquet")
    # entry ids of every row (a plain run with t large keeps every matched row)
    allm = str(tmp_path / "all")
    curate(str(metadata_path), [str(tmp_path / "in")], allm, t=10**9, key_column="id",
           device="cpu", seed=seed, report=False)
    ids_of = {r["id"]: r["entry_ids"] for r in curated(allm).select(["id", "entry_ids"])
              .to_pylist()}
    by_group: dict = {}
    for r in t.select(["id", "img"]).to_pylist():
        c = mix(mix(mix(seed) ^ r["img"]) ^ mix(r["id"] & M64))
        by_group.setdefault(r["img"], []).append((c, r["id"]))
    want = set()
    for g, cands in by_group.items():
        _, k = min(cands)
        eids = ids_of.get(k, [])
        if eids and keep([eids], prob, np.array([k & M64], np.uint64), seed=seed)[0]:
            want.add(k)
    assert set(kept.column("id").to_pylist()) == want
    assert curated(ref).num_rows > len(want)  # without groups, more are kept


def test_webdataset_the_same_whatever_the_copy_sizes(wds_run, metadata_path, tmp_path,
                                                      monkeypatch):
    """Reads of a few hundred bytes (not whole blocks, splitting members and
    headers), read-ahead and writeback every few KB: the same tars."""
    from gpucurate.pipeline import wds_out

    root, _, out, _ = wds_run
    monkeypatch.setattr(wds_out, "COPY_CHUNK", 700)
    monkeypatch.setattr(wds_out, "READ_AHEAD", 3000)
    monkeypatch.setattr(wds_out, "WRITEBACK", 5000)
    out2 = str(tmp_path / "out2")
    _wds_run(metadata_path, [str(root / "in")], out2)
    assert _tar_bytes(out) == _tar_bytes(out2)


def test_webdataset_from_pass1_spans_equals_a_whole_walk(metadata_path, tmp_path, rows):
    """Pass 1 leaves where each sample of a tar lies; the writer then walks
    the headers of the kept samples' bytes alone. Members that belong to no
    sample lie inside those ranges (a directory, a file without an
    extension, between samples), names longer than 100 bytes need GNU
    headers before theirs, the last sample ends at the end of the archive:
    the tars equal those written after a walk of every header."""
    from gpucurate.io import resolve_inputs
    from gpucurate.pipeline.layout import OutputLayout
    from gpucurate.pipeline.wds_out import write_webdataset

    src = tmp_path / "in"
    os.makedirs(src)
    rng = np.random.default_rng(7)
    for k in range(2):
        with tarfile.open(src / f"s{k}.tar", "w", format=tarfile.GNU_FORMAT) as tf:
            for j, r in enumerate(rows.slice(k * 150, 150).to_pylist()):
                key = ("d" * 120 + "/") * (j % 4 == 1) + r["uid"]
                blobs = [("jpg", rng.integers(0, 256, int(rng.integers(1, 3000)),
                                              np.uint8).tobytes()),
                         ("txt", r["text"].encode())]
                if j % 3:
                    blobs.append(("json", json.dumps({"j": j}).encode()))
                for ext, blob in blobs:
                    ti = tarfile.TarInfo(f"{key}.{ext}")
                    ti.size = len(blob)
                    tf.addfile(ti, io.BytesIO(blob))
                if j % 7 == 3:  # between samples: members of none
                    ti = tarfile.TarInfo(f"dir{j}")
                    ti.type = tarfile.DIRTYPE
                    tf.addfile(ti)
                    ti = tarfile.TarInfo(f"NOTES{j}")
                    ti.size = 5
                    tf.addfile(ti, io.BytesIO(b"notes"))
    out = str(tmp_path / "out")
    s = curate(str(metadata_path), [str(src)], out, t=3, key_column="__key__", device="cpu",
               report=False, outputs=("parquet", "webdataset"), samples_per_shard=40)
    lay = OutputLayout(out)
    assert all(os.path.exists(lay.wds_spans(i)) for i in range(2))
    first = _tar_bytes(out)
    assert sum(json.load(open(os.path.join(out, "stats", f))) ["kept"]
               for f in os.listdir(os.path.join(out, "stats"))) == s["curated"] > 40
    for i in range(2):
        os.remove(lay.wds_spans(i))
    shutil.rmtree(lay.curated_wds_dir)
    os.remove(lay.wds_plan)
    shards = resolve_inputs([str(src)])
    kept = [json.load(open(lay.stats(sh.index)))["kept"] for sh in shards]
    write_webdataset(lay, shards, kept, 40)
    assert _tar_bytes(out) == first
    with tarfile.open(os.path.join(out, "curated-wds", "00000.tar")) as tf:
        names = tf.getnames()
    assert not any(n.startswith(("dir", "NOTES")) for n in names)
    assert any(n.startswith("d" * 120) for n in names)


def test_rebalance_to_webdataset_uses_the_source_runs_spans(wds_pool, metadata_path, tmp_path):
    """rebalance --outputs webdataset of a tar pool: the source run's pass 1
    left where each sample lies; rebalance lends it, and the tars equal those
    written by walking every header (the source's spans removed)."""
    import webdataset as wds

    root, members = wds_pool
    src = str(tmp_path / "src")
    curate(str(metadata_path), [str(root / "in")], src, t=3, key_column="__key__",
           device="cpu", seed=5, report=False, save_matches=True,
           outputs=("parquet", "webdataset"))
    keys = sorted(members)
    rng = np.random.default_rng(1)
    surv = [k for k in keys if rng.random() < 0.6]
    pq.write_table(pa.table({"__key__": surv}), tmp_path / "surv.parquet")
    outs = []
    for name in ("lent", "walked"):
        if name == "walked":
            for p in glob.glob(os.path.join(src, "work", "wds", "*.spans.parquet")):
                os.remove(p)
        out2 = str(tmp_path / name)
        s = rebalance(src, str(tmp_path / "surv.parquet"), "__key__", out2, t=3, device="cpu",
                      report=False, outputs=("parquet", "webdataset"), samples_per_shard=37)
        assert len(glob.glob(os.path.join(out2, "work", "wds", "*.spans.parquet"))) == \
            (4 if name == "lent" else 0)
        outs.append((s, _tar_bytes(out2)))
        got = list(wds.WebDataset([os.path.join(out2, "curated-wds", f)
                                   for f in sorted(outs[-1][1]) if f.endswith(".tar")],
                                  shardshuffle=False, empty_check=False))
        assert len(got) == s["curated"] > 0 and {g["__key__"] for g in got} <= set(surv)
        assert all(g["jpg"] == members[g["__key__"]]["jpg"] for g in got)
    assert outs[0][1] == outs[1][1]


def _member(tf, name, data=b"", typ=None):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime = len(data), 1_700_000_000
    if typ is not None:
        ti.type = typ
    tf.addfile(ti, io.BytesIO(data))


def _gnu_times(path, names):
    """Fill the GNU atime and ctime fields (bytes 345-368, what tar -G
    writes) of these members' headers: tarfile and pass 1 read them as a
    ustar prefix, so they become part of the names."""
    data = bytearray(open(path, "rb").read())
    with tarfile.open(path) as tf:
        offs = [ti.offset for ti in tf if ti.name in names]
    for o in offs:
        data[o + 345:o + 369] = b"14720000000\x0014720000001\x00"
        data[o + 148:o + 156] = b" " * 8
        data[o + 148:o + 156] = b"%06o\x00 " % sum(data[o:o + 512])
    open(path, "wb").write(bytes(data))


def _expected_wds(tars, out, key_column):
    """The members the curated tars must hold, as tarfile reads the inputs:
    each kept sample's members in order, the last .json (any case: the one
    pass 1 read) with entry_ids added, a new .json when it has none."""
    import re

    samples = {}
    for t in tars:
        raw = open(t, "rb").read()
        with tarfile.open(t) as tf:
            for ti in tf:
                km = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", ti.name)  # webdataset's rule
                if ti.isreg() and km:
                    key = km.group(1)
                    samples.setdefault(key, []).append(
                        (ti.name, raw[ti.offset_data:ti.offset_data + ti.size], km.group(2)))
    c = curated(out)
    want = []
    for key, ids in zip(c.column(key_column).to_pylist(), c.column("entry_ids").to_pylist()):
        ms = samples[key]
        js = max((i for i, (_, _, ext) in enumerate(ms) if ext.lower() == "json"), default=-1)
        for i, (n, d, _) in enumerate(ms):
            want.append((n, dict(json.loads(d), entry_ids=ids) if i == js else d))
        if js < 0:
            want.append((key + ".json", {"entry_ids": ids}))
    return want


def _written_wds(out):
    got = []
    for f in sorted(glob.glob(os.path.join(out, "curated-wds", "*.tar"))):
        with tarfile.open(f) as tf:
            for ti in tf:
                d = tf.extractfile(ti).read()
                got.append((ti.name, json.loads(d) if ti.name.lower().endswith(".json") else d))
    return got


def test_webdataset_of_odd_tars_is_what_tarfile_reads(tmp_path):
    """Members the writer once read otherwise than pass 1 and tarfile: a
    member of a type the format does not define, with data, inside a sample
    (its data was taken for headers, and the sample's next members lost);
    names with a doubled slash (kept verbatim in the key, as webdataset keeps
    it), a line break in a directory, GNU times
    where ustar keeps its prefix; a sample whose .json is .JSON. The tars
    hold what tarfile reads of the inputs."""
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(["dog"]))
    src = tmp_path / "in"
    os.makedirs(src)
    with tarfile.open(src / "odd.tar", "w", format=tarfile.GNU_FORMAT) as tf:
        _member(tf, "s0.txt", b"a dog")
        _member(tf, "weird", b"\0" * 1024, b"V")  # zeros: once read as the archive's end
        _member(tf, "s0.jpg", b"IMG0")
        _member(tf, "s1.txt", b"a dog")
        _member(tf, "dump", b"x" * 700, b"D")
        _member(tf, "s1.jpg", b"IMG1")
        _member(tf, "a//b.txt", b"a dog")
        _member(tf, "a//b.jpg", b"IMG2")
        _member(tf, "x\ny/s3.txt", b"a dog")
        _member(tf, "x\ny/s3.jpg", b"IMG3")
        _member(tf, "s4.txt", b"a dog")
        _member(tf, "s4.JSON", b'{"b": 2}')
        _member(tf, "s5.txt", b"a dog")
        _member(tf, "s5.jpg", b"IMG5")
        _member(tf, "s6.txt", b"a dog")
    _gnu_times(src / "odd.tar", {"s5.txt", "s5.jpg"})
    out = str(tmp_path / "out")
    s = curate(str(meta), [str(src)], out, t=100, key_column="__key__", device="cpu",
               report=False, outputs=("parquet", "webdataset"), samples_per_shard=3)
    assert s["curated"] == 7
    got = _written_wds(out)
    assert got == _expected_wds([src / "odd.tar"], out, "__key__")
    names = [n for n, _ in got]
    assert "s0.jpg" in names and "s1.jpg" in names and "a//b.jpg" in names
    assert ("s4.JSON", {"b": 2, "entry_ids": [0]}) in got
    assert "14720000000/s5.jpg" in names
    assert json.load(open(os.path.join(out, "curated-wds", "sizes.json"))) == \
        {"00000.tar": 3, "00001.tar": 3, "00002.tar": 1}


def _download_folder(root, samples, keys=None):
    """root/00000.parquet (key, caption, status) beside root/00000.tar of
    ``samples``: [(key, {ext: bytes})], in the tar's order."""
    os.makedirs(root, exist_ok=True)
    with tarfile.open(root / "00000.tar", "w") as tf:
        for key, members in samples:
            for ext, blob in members.items():
                _member(tf, f"{key}.{ext}", blob)
    keys = keys or list(dict.fromkeys(k for k, _ in samples))
    pq.write_table(pa.table({"key": keys, "caption": ["a dog"] * len(keys),
                             "status": ["success"] * len(keys)}), root / "00000.parquet")


@pytest.mark.parametrize("case", ["repeated_apart", "bad_json", "same_key_side_by_side",
                                  "row_twice"])
def test_webdataset_samples_it_cannot_write_as_they_are(tmp_path, case):
    """A sample the curated tars cannot hold as it is: a clear error naming
    the tar and the sample, never a tar WebDataset reads otherwise."""
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(["dog"]))
    img = {"jpg": b"IMG", "txt": b"a dog"}
    if case == "repeated_apart":  # a download folder's tar: 000, 001, 000 again
        _download_folder(tmp_path / "dl", [("000", img), ("001", img), ("000", img)])
        inputs, key, msg = [tmp_path / "dl"], "key", "'000' appears twice, apart"
    elif case == "bad_json":  # a download folder's .json, which pass 1 never reads
        _download_folder(tmp_path / "dl", [("000", dict(img, json=b'{"k": "000",}'))])
        inputs, key, msg = [tmp_path / "dl"], "key", "sample '000': .json is not valid JSON"
    elif case == "row_twice":  # the parquet names one sample in two rows
        _download_folder(tmp_path / "dl", [("000", img), ("001", img)], ["000", "000", "001"])
        inputs, key, msg = [tmp_path / "dl"], "key", "kept rows 0 and 1 name the same sample"
    else:  # the last sample of one tar shard has the key of the next shard's first
        os.makedirs(tmp_path / "in")
        for name, keys in (("s0", ["k0", "k1"]), ("s1", ["k1", "k2"])):
            with tarfile.open(tmp_path / "in" / f"{name}.tar", "w") as tf:
                for k in keys:
                    _member(tf, f"{k}.txt", b"a dog")
        inputs, key, msg = [tmp_path / "in"], "__key__", "follows the sample of the same key"
    with pytest.raises(InputError) as e:
        curate(str(meta), [str(i) for i in inputs], str(tmp_path / "out"), t=100,
               key_column=key, device="cpu", report=False, outputs=("parquet", "webdataset"))
    assert msg in str(e.value) and ".tar" in str(e.value)


def test_webdataset_pieces_and_sizes_of_the_plan():
    """Which kept rows of which input shard each output tar takes: one walk
    of the shards for every tar (a walk of every shard per tar took 19
    minutes for 100k shards), checked against a walk per tar."""
    import random

    from gpucurate.pipeline.wds_out import _pieces, _sizes, make_plan

    def walk(plan, j):
        s = plan["samples_per_shard"]
        lo, hi = j * s, min((j + 1) * s, sum(plan["kept"]))
        out, start = [], 0
        for pos, k in enumerate(plan["kept"]):
            a, b = max(lo, start), min(hi, start + k)
            if a < b:
                out.append((pos, a - start, b - start))
            start += k
        return out

    rng = random.Random(1)
    for _ in range(300):
        plan = make_plan([rng.choice([0, 0, 1, 2, 3, 5, 10, 17])
                          for _ in range(rng.randint(0, 30))], rng.randint(1, 12))
        pieces = [walk(plan, j) for j in range(plan["tars"])]
        assert _pieces(plan) == pieces
        assert _sizes(plan) == {f"{j:05d}.tar": sum(b - a for _, a, b in p)
                                for j, p in enumerate(pieces)}


def test_webdataset_from_gzip_decompresses_what_each_tar_takes(tmp_path, monkeypatch):
    """A gzipped tar shard feeding three output tars: each decompresses the
    stream up to its own last sample, not the whole shard (nor all of it
    three times); the tars equal those of the plain tar."""
    from gpucurate.pipeline import wds_out

    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(["dog"]))
    for d in ("plain", "gz"):
        os.makedirs(tmp_path / d)
    with tarfile.open(tmp_path / "plain" / "a.tar", "w") as tf:
        for i in range(60):
            _member(tf, f"s{i:03d}.jpg", os.urandom(3000))
            _member(tf, f"s{i:03d}.txt", b"a dog")
    raw = open(tmp_path / "plain" / "a.tar", "rb").read()
    (tmp_path / "gz" / "a.tar.gz").write_bytes(gzip.compress(raw))
    made = []
    real = wds_out._decompress

    def spy(path, dest, upto=None):
        real(path, dest, upto)
        made.append(os.path.getsize(dest))

    monkeypatch.setattr(wds_out, "_decompress", spy)
    monkeypatch.setattr(wds_out, "DECOMPRESS_CHUNK", 16 << 10)
    kw = dict(t=100, key_column="__key__", device="cpu", report=False, threads=1,
              outputs=("parquet", "webdataset"), samples_per_shard=20)
    for d in ("plain", "gz"):
        curate(str(meta), [str(tmp_path / d)], str(tmp_path / f"out-{d}"), **kw)
    assert len(made) == 3 and made[0] < made[1] < len(raw) and sum(made) < 2.5 * len(raw)
    assert _tar_bytes(str(tmp_path / "out-plain")) == _tar_bytes(str(tmp_path / "out-gz"))


def _edge_pool(root, bad_utf8: bool, n=300):
    """Two parquet shards: uint64 keys past 2**63, one caption that is not
    UTF-8 (row 10, with ``bad_utf8``), one null key (row 20), captions of a
    small list."""
    rng = np.random.default_rng(11)
    words = ["cat", "dog", "red cat", "red", "blue dog", "bird", "a", "the"]
    os.makedirs(root)
    for s in range(2):
        caps = [" ".join(rng.choice(words, int(rng.integers(1, 5)))).encode()
                for _ in range(n)]
        if s == 0 and bad_utf8:
            caps[10] = b"a cat \xff\xfe"
        offs = np.concatenate([[0], np.cumsum([len(c) for c in caps])]).astype(np.int32)
        text = pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offs.tobytes()),
                                                      pa.py_buffer(b"".join(caps))])
        keys = pa.array([(2**63 + 977 * (s * n + i)) if (s, i) != (0, 20) else None
                         for i in range(n)], pa.uint64())
        pq.write_table(pa.table({"key": keys, "caption": text}), root / f"s{s}.parquet")


@pytest.mark.parametrize("on_bad_row,source_key", [("skip", "key"), ("skip", None),
                                                   ("error", None)])
def test_rebalance_of_edge_pools_equals_curate_of_survivors(tmp_path, on_bad_row, source_key):
    """rebalance against a curate of the survivors alone, where it once went
    wrong: a source run with --on-bad-row skip (rows after a rejected one were
    given the wrong matches), uint64 keys past 2**63, a null key among the
    rows that did not survive, survivor keys written with a sign, a header
    line and a byte-order mark; rows of null key (no survivor's) in a source
    run keyed by shard and row; the shards' stats count the survivors."""
    meta = tmp_path / "md.json"
    meta.write_text(json.dumps(["cat", "dog", "red cat", "red", "bird", "blue dog"]))
    _edge_pool(tmp_path / "in", on_bad_row == "skip")
    kw = dict(device="cpu", report=False, seed=3, on_bad_row=on_bad_row)
    src = str(tmp_path / "out")
    curate(str(meta), [str(tmp_path / "in")], src, t=1, save_matches=True,
           key_column=source_key, **kw)
    rng = np.random.default_rng(2)
    os.makedirs(tmp_path / "sp")
    surv = []
    for s in range(2):
        t = pq.read_table(tmp_path / "in" / f"s{s}.parquet")
        k = t.column("key").to_pylist()
        take = [i for i in range(t.num_rows) if k[i] is not None and i != 10 and
                rng.random() < 0.6]
        pq.write_table(t.take(take), tmp_path / "sp" / f"s{s}.parquet")
        surv += [k[i] for i in take]
    lines = ["key"] + [f"+{k}" if i % 7 == 0 else str(k) for i, k in enumerate(surv)]
    (tmp_path / "surv.txt").write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())
    out2, ref = str(tmp_path / "re"), str(tmp_path / "ref")
    s = rebalance(src, str(tmp_path / "surv.txt"), "key", out2, t=3, device="cpu",
                  report=False)
    r = curate(str(meta), [str(tmp_path / "sp")], ref, t=3, key_column="key", **kw)
    _same_curation(out2, ref)
    assert s["curated"] == r["curated"] and s["pool"] == r["pool"] == len(surv)
    assert s["survivors"]["not_in_pool"] == 1  # the header line
    for i in range(2):
        a, b = (json.load(open(os.path.join(d, "stats", f"shard-{i:05d}.json")))
                for d in (out2, ref))
        assert {k: a[k] for k in ("captions", "matched", "kept", "null_captions")} == \
            {k: b[k] for k in ("captions", "matched", "kept", "null_captions")}


def _same_parts(a, b):
    """_same_curation part by part (parts whose key columns differ in type)."""
    pa_, pb = (sorted(glob.glob(os.path.join(d, "curated", "part-*.parquet"))) for d in (a, b))
    assert len(pa_) == len(pb) == 2
    for x, y in zip(pa_, pb):
        tx = pq.read_table(x)
        assert tx.num_rows > 0 and tx.equals(pq.read_table(y))
    ea = pq.read_table(os.path.join(a, "entry_counts.parquet"))
    eb = pq.read_table(os.path.join(b, "entry_counts.parquet"))
    assert ea.column("count").equals(eb.column("count")) and ea.column("prob").equals(
        eb.column("prob"))


def test_rebalance_of_a_pool_keyed_by_integers_in_one_shard_and_strings_in_another(tmp_path):
    """Shards whose key columns are of two kinds (int64 here, strings there):
    each shard's keys are compared as that shard holds them, so the result
    equals a curate of the survivors alone, on a fresh run and on a resumed
    one; a survivor of neither kind is counted as in no shard."""
    meta = tmp_path / "md.json"
    meta.write_text(json.dumps(["cat", "dog", "red cat", "bird"]))
    os.makedirs(tmp_path / "in")
    words = ["a cat", "a dog", "a red cat", "a bird", "a red cat and a dog", "nothing"]
    n = 120
    a = pa.table({"key": pa.array(np.arange(n, dtype=np.int64) * 3 + 401),
                  "text": [words[i % 6] + f" {i}" for i in range(n)]})
    # b's keys that read as numbers ("0402") equal none of a's (401 + 3i) as numbers
    b = pa.table({"key": [f"{'0' if i % 4 == 0 else 'k'}{i * 3 + 402}" for i in range(n)],
                  "text": [words[(i + 2) % 6] + f" {i}" for i in range(n)]})
    pq.write_table(a, tmp_path / "in" / "a.parquet")
    pq.write_table(b, tmp_path / "in" / "b.parquet")
    kw = dict(device="cpu", report=False, seed=4)
    src = str(tmp_path / "out")
    curate(str(meta), [str(tmp_path / "in")], src, t=1, save_matches=True, key_column="key",
           **kw)
    rng = np.random.default_rng(5)
    ta, tb = [i for i in range(n) if rng.random() < 0.6], [i for i in range(n)
                                                               if rng.random() < 0.6]
    os.makedirs(tmp_path / "sp")
    pq.write_table(a.take(ta), tmp_path / "sp" / "a.parquet")
    pq.write_table(b.take(tb), tmp_path / "sp" / "b.parquet")
    surv = [str(k) for k in a.column("key").take(ta).to_pylist()] + \
        b.column("key").take(tb).to_pylist() + ["k99999"]
    (tmp_path / "surv.txt").write_text("\n".join(surv) + "\n")
    ref = str(tmp_path / "ref")
    r = curate(str(meta), [str(tmp_path / "sp")], ref, t=3, key_column="key", **kw)
    out2 = str(tmp_path / "re")
    s = rebalance(src, str(tmp_path / "surv.txt"), "key", out2, t=3, device="cpu",
                  report=False)
    _same_parts(out2, ref)
    assert s["pool"] == r["pool"] == len(ta) + len(tb)
    assert s["survivors"]["not_in_pool"] == 1
    # resumed after the first shard: its found survivors are read back
    os.remove(os.path.join(out2, "summary.json"))
    for d in ("stats", "work/pass1"):
        for f in glob.glob(os.path.join(out2, d, "shard-00001.*")):
            os.remove(f)
    s2 = rebalance(src, str(tmp_path / "surv.txt"), "key", out2, t=3, device="cpu",
                   report=False)
    _same_parts(out2, ref)
    assert s2["survivors"]["not_in_pool"] == 1 and s2["pool"] == s["pool"]


def test_rebalance_refuses_a_source_that_moved(tmp_path, rows, metadata_path):
    """A shard gone since the run (the saved matches are named by each
    shard's place), another metadata list behind the same path: refused
    before any work. A run whose DIR lies in its own input folder can be
    rebalanced (DIR is no input)."""
    inp = tmp_path / "in"
    write_parquet_shards(rows.slice(0, 300), inp, 3)
    meta = tmp_path / "md.json"
    entries = json.loads(metadata_path.read_text())
    meta.write_text(json.dumps(entries))
    src = str(inp / "out")  # DIR inside the input folder
    curate(str(meta), [str(inp)], src, t=5, key_column="id", device="cpu", report=False,
           save_matches=True)
    pq.write_table(pa.table({"id": rows.column("id").to_pylist()[:200]}), tmp_path / "s.parquet")
    s = rebalance(src, str(tmp_path / "s.parquet"), "id", str(tmp_path / "ok"), t=5,
                  device="cpu", report=False)
    assert s["survivors"]["rows"] == 200
    meta.write_text(json.dumps(entries[::-1]))
    with pytest.raises(ConfigError, match="not the one the run"):
        rebalance(src, str(tmp_path / "s.parquet"), "id", str(tmp_path / "o1"), t=5,
                  device="cpu")
    meta.write_text(json.dumps(entries))
    first = sorted(glob.glob(str(inp / "*.parquet")))[0]
    os.rename(first, tmp_path / "aside.parquet")
    with pytest.raises(ConfigError, match="is gone"):
        rebalance(src, str(tmp_path / "s.parquet"), "id", str(tmp_path / "o2"), t=5,
                  device="cpu")
    assert _no_work(str(tmp_path / "o1")) and _no_work(str(tmp_path / "o2"))


def test_rebalance_rerun_clears_what_a_stop_after_a_marker_left(saved_run, rows, tmp_path):
    """A rebalance stopped between a shard's pass-2 marker and its clean-up
    left the link to the source's saved matches: the rerun removes it, as
    curate does."""
    _, out = saved_run
    ids = pq.read_table(os.path.join(out, "curated")).column("id").to_pylist()[:80]
    pq.write_table(pa.table({"id": ids}), tmp_path / "s.parquet")
    out2 = str(tmp_path / "re")
    rebalance(out, str(tmp_path / "s.parquet"), "id", out2, t=5, device="cpu", report=False)
    left = os.path.join(out2, "work", "matches", "shard-00001.parquet")
    os.makedirs(os.path.dirname(left), exist_ok=True)
    os.link(os.path.join(out, "matches", "shard-00001.parquet"), left)  # as a stop leaves it
    rebalance(out, str(tmp_path / "s.parquet"), "id", out2, t=5, device="cpu", report=False)
    assert not os.path.exists(left)


def test_rebalance_survivor_files(saved_run, tmp_path):
    """Survivors as a directory of parquet parts, and as jsonl whose other
    fields change type from line to line: only the key is read."""
    _, out = saved_run
    ids = pq.read_table(os.path.join(out, "curated")).column("id").to_pylist()[:50]
    os.makedirs(tmp_path / "parts")
    for i in range(2):
        pq.write_table(pa.table({"id": ids[i::2]}), tmp_path / "parts" / f"part-{i}.parquet")
    lines = [json.dumps({"id": k, "meta": "x" if j % 2 else {"a": [j]}})
             for j, k in enumerate(ids)]
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    got = [rebalance(out, str(tmp_path / f), "id", str(tmp_path / f"o-{f}"), t=5,
                     device="cpu", report=False) for f in ("parts", "s.jsonl")]
    assert got[0]["survivors"]["rows"] == got[1]["survivors"]["rows"] == 50
    assert curated(str(tmp_path / "o-parts")).equals(curated(str(tmp_path / "o-s.jsonl")))


def test_rebalance_target_size_with_groups_counts_the_chosen_captions(tmp_path, rows,
                                                                     metadata_path):
    """--target-size with a group column: the expected size sums over each
    group's chosen caption (the only one that can be kept), not over every
    caption of the survivors (a third of the size asked, before)."""
    t = rows.append_column("img", pa.array([i // 3 for i in range(rows.num_rows)], pa.int64()))
    write_parquet_shards(t, tmp_path / "in", 2)
    src = str(tmp_path / "out")
    curate(str(metadata_path), [str(tmp_path / "in")], src, t=10, key_column="id",
           group_column="img", device="cpu", seed=4, report=False, save_matches=True)
    ids = t.column("id").to_pylist()
    pq.write_table(pa.table({"id": ids[: len(ids) * 2 // 3]}), tmp_path / "s.parquet")
    out2 = str(tmp_path / "re")
    target = 190  # of the 200 groups matched among the survivors
    s = rebalance(src, str(tmp_path / "s.parquet"), "id", out2, target_size=target,
                  device="cpu", report=False)
    counts = pq.read_table(os.path.join(out2, "entry_counts.parquet")).column("count") \
        .to_numpy().astype(float)
    from gpucurate.pipeline.layout import OutputLayout

    lay = OutputLayout(out2)
    pairs = []  # (shard, row, entry) of the chosen captions' matches
    for i, f in enumerate(sorted(glob.glob(os.path.join(src, "matches", "*.parquet")))):
        m = pq.read_table(f)
        chosen = set(np.load(lay.groups(i)).tolist())
        for e, r in zip(m.column("entry_id").to_pylist(), m.column("text_id").to_pylist()):
            if r in chosen:
                pairs.append((i, r, e))

    def expected(tt):
        notkept: dict = {}
        for i, r, e in pairs:
            notkept[(i, r)] = notkept.get((i, r), 1.0) * (1 - min(1.0, tt / counts[e]))
        return sum(1 - v for v in notkept.values())

    best = min(range(1, 200), key=lambda tt: (abs(expected(tt) - target), tt))
    assert expected(1) < target < expected(10**9) and s["t"] == best
    assert abs(s["curated"] - target) < 15
