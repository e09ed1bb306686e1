"""``python -m bench.e2e`` runs at a tiny size and records every figure (no timing
thresholds: the goals' values are checked present, never met)."""

import glob
import json
import subprocess
import sys

from conftest import ROOT, METADATA, _need

RUN_KEYS = ("wall_s", "peak_rss_bytes", "captions", "captions_per_s", "pass1_s", "pass2_s",
            "startup_s", "report_s", "other_s", "cpu_s", "matched", "curated", "command")


def test_bench_e2e_smoke(tmp_path):
    _need(METADATA)
    # The cold demo (a full numba compile) and the worldwide runs are skipped to
    # stay within a minute; their figures must then be present as null.
    r = subprocess.run([sys.executable, "-m", "bench.e2e", "--n", "2000", "--shards", "4",
                        "--skip-cold-demo", "--cache", str(tmp_path / "cache"),
                        "--out", str(tmp_path / "results")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    [js] = glob.glob(str(tmp_path / "results" / "*-e2e-*.json"))
    res = json.load(open(js))
    for key in ("date", "commit", "command", "machine", "versions", "n", "shards", "seed", "t",
                "pool", "matcher_only", "curate", "curate_1core", "save_matches_sharded",
                "save_matches_one_shard", "e2e_vs_matcher", "threads_speedup", "goals",
                "check_matched_equal"):
        assert key in res, key
    assert res["command"].startswith("python -m bench.e2e --n 2000")
    assert res["machine"]["cores"] >= 1 and res["machine"]["cpu"]
    assert res["n"] == 2000 and res["pool"]["n"] == 2000 and res["pool"]["shards"] == 4
    mo = res["matcher_only"]
    assert mo["captions"] == 2000 and mo["captions_per_s"] > 0 and mo["peak_rss_bytes"] > 0
    for name in ("curate", "curate_1core", "save_matches_sharded", "save_matches_one_shard"):
        run = res[name]
        for key in RUN_KEYS:
            assert key in run, (name, key)
        assert run["captions"] == 2000 and run["wall_s"] > 0 and run["peak_rss_bytes"] > 0
        assert run["pass1_s"] > 0 and run["pass2_s"] > 0
        assert 0 < run["matched"] <= 2000
    # a unique key column: the curated set does not depend on the sharding
    assert res["save_matches_sharded"]["curated"] == res["save_matches_one_shard"]["curated"]
    assert res["curate"]["curated"] == res["curate_1core"]["curated"]
    assert "taskset -c 0" in res["curate_1core"]["command"]
    assert res["check_matched_equal"] is True
    assert set(res["goals"]) == {"e2e_vs_matcher", "threads_speedup", "one_shard_peak_vs_sharded",
                                 "one_shard_peak_gb", "cold_demo_s",
                                 "worldwide_lang_column_captions_per_s",
                                 "worldwide_lid_captions_per_s", "wds_vs_parquet",
                                 "wds_write_vs_read"}
    for name, g in res["goals"].items():
        assert {"value", "target", "met", "what"} <= set(g), name
        skipped = name in ("cold_demo_s", "wds_vs_parquet", "wds_write_vs_read") or \
            name.startswith("worldwide")
        assert (g["value"] is None) == skipped, name
        assert (g["met"] is None) == skipped, name
    assert "| goal |" in r.stdout and glob.glob(js[:-5] + ".md")
