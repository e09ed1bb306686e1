"""The balancing behaves as its probabilities say (one aggregate test)."""

import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gpucurate.pipeline import curate
from pool import real_rows


def test_kept_counts_follow_the_probabilities(tmp_path, metadata_path, real_matcher):
    table = real_rows("redcaps_explore_samples", 60000, step=5).select(["id", "text"])
    table = table.append_column("row", pa.array(np.arange(table.num_rows)))
    pq.write_table(table, tmp_path / "pool.parquet")
    out = str(tmp_path / "out")
    t = 150
    curate(str(metadata_path), [str(tmp_path / "pool.parquet")], out, t=t, key_column="row",
           device="cpu", seed=11, report=False)
    prob = pq.read_table(os.path.join(out, "entry_counts.parquet")).column("prob").to_numpy()
    counts = pq.read_table(os.path.join(out, "entry_counts.parquet")).column("count").to_numpy()
    lists = real_matcher.match(table.column("text")).to_pylist()
    q = np.array([1.0 - np.prod(1.0 - prob[ids]) if ids else 0.0 for ids in lists])
    kept_rows = np.zeros(len(lists), bool)
    for p in glob.glob(os.path.join(out, "curated", "*.parquet")):
        kept_rows[pq.read_table(p).column("row").to_numpy()] = True
    # 1. the number kept is within 5 standard deviations of its expectation
    mean, sd = q.sum(), np.sqrt((q * (1 - q)).sum())
    assert abs(kept_rows.sum() - mean) < 5 * sd, (kept_rows.sum(), mean, sd)
    assert sd > 10  # the check has power: many captions are uncertain
    # 2. per head entry, the kept captions holding it (Bonferroni over 30 entries)
    head = np.argsort(counts)[::-1][:30]
    assert counts[head[-1]] > t
    for e in head:
        rows = np.array([i for i, ids in enumerate(lists) if e in ids])
        m, s = q[rows].sum(), np.sqrt((q[rows] * (1 - q[rows])).sum())
        z = (kept_rows[rows].sum() - m) / max(s, 1e-9)
        assert abs(z) < 5.5, (e, z)
    # 3. the flattening: no head entry keeps far more than t plus its co-occurrence share
    assert kept_rows.sum() < len(lists)


def test_a_run_stopped_before_its_summary_says_what_ran_it(tmp_path):
    """Every shard done but no summary (stopped between the last marker and
    the summary): the rerun, which runs no pass, names the engine and reader
    that ran the passes, not "auto"."""
    import json

    os.makedirs(tmp_path / "in")
    pq.write_table(pa.table({"text": [f"a dog {i}" for i in range(100)]}),
                   tmp_path / "in" / "a.parquet")
    meta = tmp_path / "m.json"
    meta.write_text('["dog"]')
    first = curate(str(meta), [str(tmp_path / "in")], str(tmp_path / "o"), t=10, report=False)
    assert first["device"] == "cpu" and first["reader"] != "auto"
    os.remove(tmp_path / "o" / "summary.json")
    again = curate(str(meta), [str(tmp_path / "in")], str(tmp_path / "o"), t=10, report=False)
    assert (again["device"], again["reader"]) == (first["device"], first["reader"])
    assert json.load(open(tmp_path / "o" / "summary.json"))["device"] == "cpu"
