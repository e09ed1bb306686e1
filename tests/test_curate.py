"""End-to-end curation on real captions (CPU engine)."""

import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpucurate import cli
from gpucurate.pipeline import curate, p_to_t, run, t_to_p
from gpucurate.config import CurateConfig
from gpucurate.keys import fnv1a_str, keep, key_hashes, probabilities, row_key_hashes
from pool import real_rows, write_jsonl, write_parquet_shards, write_tar

M64 = (1 << 64) - 1


def mix(x):
    """splitmix64's finalizer, transcribed from the rule text."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def u(seed, k, e):
    return (mix(mix(mix(seed) ^ k) ^ e) >> 11) * 2.0**-53


def curated(out):
    parts = sorted(glob.glob(os.path.join(out, "curated", "part-*.parquet")))
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="permissive")


def same_outputs(a, b):
    ea, eb = pq.read_table(os.path.join(a, "entry_counts.parquet")), \
        pq.read_table(os.path.join(b, "entry_counts.parquet"))
    assert ea.equals(eb)
    pa_, pb = (sorted(os.listdir(os.path.join(d, "curated"))) for d in (a, b))
    assert pa_ == pb
    for p in pa_:
        assert pq.read_table(os.path.join(a, "curated", p)).equals(
            pq.read_table(os.path.join(b, "curated", p))), p


@pytest.fixture(scope="module")
def coco():
    return real_rows("coco_captions_val2017", 6000)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, coco, metadata_path):
    root = tmp_path_factory.mktemp("base")
    write_parquet_shards(coco, root / "in", 3)
    out = str(root / "out")
    s = curate(str(metadata_path), [str(root / "in")], out, t=40, key_column="id", device="cpu",
               seed=3, report=False)
    return root, out, s


def test_outputs_are_exact(base_run, coco, ac_reference, metadata_entries):
    root, out, s = base_run
    texts = coco.column("text").to_pylist()
    want = [ac_reference.match(t) for t in texts]
    counts = np.zeros(len(metadata_entries), np.uint64)
    for ids in want:
        counts[ids] += 1
    ec = pq.read_table(os.path.join(out, "entry_counts.parquet"))
    assert ec.num_rows == len(metadata_entries)
    assert ec.column("entry").to_pylist()[:5] == metadata_entries[:5]
    assert np.array_equal(ec.column("count").to_numpy(), counts)
    prob = ec.column("prob").to_numpy()
    assert np.array_equal(prob, 40 / np.maximum(counts.astype(float), 40))
    # every kept caption is decided by the transcribed draw, and only those are kept
    by_id = {r["id"]: i for i, r in enumerate(coco.select(["id"]).to_pylist())}
    kept = curated(out)
    kept_ids = set(kept.column("id").to_pylist())
    for i, ids in enumerate(want):
        k = coco.column("id")[i].as_py() & M64
        decision = any(u(3, k, e) < prob[e] for e in ids)
        assert decision == (coco.column("id")[i].as_py() in kept_ids), i
    for r in kept.to_pylist():
        assert r["entry_ids"] == want[by_id[r["id"]]]
        assert r["text"] == texts[by_id[r["id"]]]
    assert s["pool"] == 6000 and s["curated"] == kept.num_rows
    assert s["matched"] == sum(1 for w in want if w)
    stats = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "stats", "*.json")))]
    assert sum(x["kept"] for x in stats) == kept.num_rows and len(stats) == 3
    summary = json.load(open(os.path.join(out, "summary.json")))
    for key in ("pool", "null_captions", "matched", "curated", "t", "tail_fraction", "seed",
                "device", "seconds", "captions_per_s", "versions", "config_fingerprint"):
        assert key in summary


def test_rerun_is_identical_and_resumes(base_run, tmp_path, metadata_path):
    root, out, _ = base_run
    out2 = str(tmp_path / "again")
    curate(str(metadata_path), [str(root / "in")], out2, t=40, key_column="id", device="cpu",
           seed=3, report=False)
    same_outputs(out, out2)
    before = os.path.getmtime(os.path.join(out2, "curated", "part-00000.parquet"))
    curate(str(metadata_path), [str(root / "in")], out2, t=40, key_column="id", device="cpu",
           seed=3, report=False)
    assert os.path.getmtime(os.path.join(out2, "curated", "part-00000.parquet")) == before


def test_sharding_and_batching_invariance(base_run, coco, tmp_path, metadata_path):
    _, out, _ = base_run
    want = curated(out).sort_by("id")
    write_parquet_shards(coco, tmp_path / "one", 1)
    write_parquet_shards(coco, tmp_path / "seven", 7)
    for name, bb, threads in (("one", 1 << 30, 1), ("seven", 3000, 2)):
        o = str(tmp_path / f"out-{name}")
        curate(str(metadata_path), [str(tmp_path / name)], o, t=40, key_column="id",
               device="cpu", seed=3, batch_bytes=bb, threads=threads, report=False)
        assert curated(o).sort_by("id").equals(want), name
        assert pq.read_table(os.path.join(o, "entry_counts.parquet")).equals(
            pq.read_table(os.path.join(out, "entry_counts.parquet")))


def test_all_formats(tmp_path, metadata_path, ac_reference):
    table = real_rows("flickr8k", 900, step=7).select(["id", "text"])
    d = tmp_path / "in"
    d.mkdir()
    pq.write_table(table.slice(0, 300), d / "a.parquet")
    write_jsonl(table.slice(300, 150), str(d / "b.jsonl"))
    write_jsonl(table.slice(450, 150), str(d / "c.jsonl.gz"))
    write_jsonl(table.slice(600, 150), str(d / "d.jsonl.zst"))
    write_tar(table.slice(750, 150), str(d / "e.tar"))
    out = str(tmp_path / "out")
    s = curate(str(metadata_path), [str(d)], out, t=5, device="cpu", report=False)
    assert s["pool"] == 900 and s["shards"] == 5
    counts = pq.read_table(os.path.join(out, "entry_counts.parquet")).column("count").to_numpy()
    want = np.zeros(counts.size, np.uint64)
    for t in table.column("text").to_pylist():
        want[ac_reference.match(t)] += 1
    assert np.array_equal(counts, want)
    tar_part = pq.read_table(os.path.join(out, "curated", "part-00004.parquet"))
    assert {"__key__", "text", "id", "entry_ids"} <= set(tar_part.column_names)
    # default keys: mix(fnv1a(shard name) ^ row)
    k = row_key_hashes("a.parquet", 0, 300)
    assert int(k[5]) == mix(fnv1a_str("a.parquet") ^ 5)


def test_stages_equal_curate(base_run, tmp_path, metadata_path):
    root, out, _ = base_run
    shards = sorted(glob.glob(str(root / "in" / "*.parquet")))
    common = ["--metadata", str(metadata_path), "--key-column", "id", "--device", "cpu", "--quiet"]
    assert cli.main(["count", "--input", shards[0], "--out", str(tmp_path / "c0")] + common) == 0
    assert cli.main(["count", "--input", *shards[1:], "--out", str(tmp_path / "c1")] + common) == 0
    assert cli.main(["merge-counts", str(tmp_path / "c0" / "entry_counts.parquet"),
                     str(tmp_path / "c1" / "entry_counts.parquet"), "--metadata",
                     str(metadata_path), "--out", str(tmp_path / "pool.parquet"), "--quiet"]) == 0
    assert cli.main(["balance", "--counts", str(tmp_path / "pool.parquet"), "--input",
                     str(root / "in"), "--out", str(tmp_path / "b"), "--t", "40", "--seed", "3",
                     "--no-report"] + common) == 0
    same_outputs(out, str(tmp_path / "b"))
    # MetaCLIP's entry -> count JSON mapping works as --counts too
    ec = pq.read_table(os.path.join(out, "entry_counts.parquet")).to_pydict()
    mapping = {e: c for e, c in zip(ec["entry"], ec["count"]) if c}
    (tmp_path / "counts.json").write_text(json.dumps(mapping))
    assert cli.main(["balance", "--counts", str(tmp_path / "counts.json"), "--input",
                     str(root / "in"), "--out", str(tmp_path / "bj"), "--t", "40", "--seed", "3",
                     "--no-report"] + common) == 0
    assert curated(str(tmp_path / "bj")).equals(curated(out))


def test_balance_into_its_own_count_directory(tmp_path, capsys, monkeypatch):
    """count then balance --counts DIR/entry_counts.parquet --out DIR
    --overwrite: a t below 1 is refused before DIR is touched (its counts stay,
    and the error does not promise a pass 1 balance has not); an identical
    rerun is no other run (balance rewrote the counts file with its
    probabilities: the counts are the same); counts merged again under
    another spelling of the metadata path are the same counts."""
    pq.write_table(pa.table({"id": list(range(200)), "text": [
        f"a dog {i}" if i % 2 else f"a cat {i}" for i in range(200)]}), tmp_path / "p.parquet")
    (tmp_path / "md.json").write_text('["dog", "cat", "bird"]')
    monkeypatch.chdir(tmp_path)
    base = ["--metadata", "md.json", "--input", "p.parquet", "--key-column", "id", "--quiet"]
    assert cli.main(["count", *base, "--out", "D"]) == 0
    base.append("--no-report")
    bal = ["balance", *base, "--counts", "D/entry_counts.parquet", "--out", "D"]
    assert cli.main([*bal, "--tail-fraction", "0.000001", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "below 1" in err and "nothing was written" in err and "pass 1" not in err
    assert os.path.exists("D/entry_counts.parquet") and os.path.exists("D/summary.json")
    assert cli.main([*bal, "--t", "20", "--overwrite"]) == 0
    first = curated("D")
    assert cli.main([*bal, "--t", "20"]) == 0  # the same run: nothing to do
    assert curated("D").equals(first)
    for i, m in enumerate(("md.json", "./md.json")):
        assert cli.main(["merge-counts", "D/entry_counts.parquet", "--metadata", m, "--out",
                         f"m{i}.parquet", "--quiet"]) == 0
    assert cli.main(["balance", *base, "--counts", "m0.parquet", "--out", "E", "--t", "20"]) == 0
    assert cli.main(["balance", *base, "--counts", "m1.parquet", "--out", "E", "--t", "20"]) == 0
    assert curated("E").equals(first)


def test_save_matches_skips_matching_with_same_result(base_run, tmp_path, metadata_path):
    root, out, _ = base_run
    o = str(tmp_path / "saved")
    curate(str(metadata_path), [str(root / "in")], o, t=40, key_column="id", device="cpu",
           seed=3, save_matches=True, report=False)
    same_outputs(out, o)
    inv = pq.read_table(os.path.join(o, "matches", "shard-00000.parquet"))
    assert inv.schema.types == [pa.uint32(), pa.uint32()]


def test_keep_api_equals_pipeline(base_run, coco):
    _, out, _ = base_run
    ec = pq.read_table(os.path.join(out, "entry_counts.parquet"))
    prob = ec.column("prob").to_numpy()
    part = pq.read_table(os.path.join(out, "curated", "part-00000.parquet"))
    keys = key_hashes(part.column("id"))
    assert keep(part.column("entry_ids"), prob, keys, seed=3).all()
    assert not keep(part.column("entry_ids"), prob, keys, seed=4).all()
    assert list(keep([[], [0]], np.ones(1), np.array([1, 2], np.uint64))) == [False, True]
    ks = key_hashes(pa.array(["x", "yz"]))
    assert int(ks[1]) == fnv1a_str("yz") and int(key_hashes(pa.array([-1]))[0]) == M64


def test_t_rules_match_metaclip_transcription():
    rng = np.random.default_rng(0)
    counts = rng.zipf(1.5, 5000).astype(np.uint64)
    counts[:100] = 0

    def p_to_t_ref(entry_count, p):  # MetaCLIP 2's curation/curate.py, transcribed
        entry_count_sorted = np.sort(entry_count)
        cumsum = np.cumsum(entry_count_sorted)
        cumsum_norm = cumsum / cumsum[-1]
        return entry_count_sorted[np.argmin(np.abs(cumsum_norm - p))]

    for p in (0.05, 0.2, 0.5, 0.9):
        assert p_to_t(counts, p) == p_to_t_ref(counts.astype(np.float64), p)
    assert t_to_p(counts, 10) == counts[counts < 10].sum() / counts.sum()
    assert np.array_equal(probabilities(np.array([0, 5, 10, 40]), 10), [1, 1, 1, 0.25])


def test_tail_fraction_run(base_run, tmp_path, metadata_path):
    root, out, _ = base_run
    o = str(tmp_path / "tf")
    s = curate(str(metadata_path), [str(root / "in")], o, tail_fraction=0.5, key_column="id",
               device="cpu", report=False)
    counts = pq.read_table(os.path.join(out, "entry_counts.parquet")).column("count").to_numpy()
    assert s["t"] == p_to_t(counts, 0.5) and s["tail_fraction"] == 0.5


def test_fingerprint_guard(base_run, metadata_path):
    root, out, _ = base_run
    args = ["curate", "--metadata", str(metadata_path), "--input", str(root / "in"), "--out",
            out, "--t", "41", "--key-column", "id", "--device", "cpu", "--quiet", "--no-report"]
    assert cli.main(args) == 2  # another t: refused
    assert pq.read_table(os.path.join(out, "entry_counts.parquet")).column("prob")[0].as_py() \
        is not None


def test_nulls_are_counted_never_matched(tmp_path, metadata_path):
    p = tmp_path / "n.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "text": ["a dog", None, "the cat", None]}), p)
    s = curate(str(metadata_path), [str(p)], str(tmp_path / "o"), t=1, key_column="id",
               device="cpu", report=False)
    assert s["null_captions"] == 2 and s["matched"] == 2 and s["pool"] == 4


def test_config_validation():
    from gpucurate.errors import ConfigError

    with pytest.raises(ConfigError, match="--t must be an integer >= 1"):
        CurateConfig(metadata="m.json", inputs=("x",), out="o", t=0)
    with pytest.raises(ConfigError, match="exactly one of --t"):
        CurateConfig(metadata="m.json", inputs=("x",), out="o").require_t()
    with pytest.raises(ConfigError, match="--tail-fraction"):
        CurateConfig(metadata="m.json", inputs=("x",), out="o", tail_fraction=1.5)
    assert run  # the API entry point exists


def test_limit_takes_the_first_captions_in_shard_order(base_run, tmp_path, metadata_path):
    root, out, _ = base_run
    o = str(tmp_path / "lim")
    s = curate(str(metadata_path), [str(root / "in")], o, t=40, key_column="id", device="cpu",
               seed=3, limit=2500, report=False)
    assert s["pool"] == 2500 and s["shards"] == 2  # 2000 rows per shard: 2000 + 500
    kept = curated(o)
    first = set(pq.read_table(root / "in" / "part-00.parquet").column("id").to_pylist()) | set(
        pq.read_table(root / "in" / "part-01.parquet").column("id").slice(0, 500).to_pylist())
    assert set(kept.column("id").to_pylist()) <= first
