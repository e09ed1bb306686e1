"""Every path of an output directory ``DIR``, named in one place.

::

    config.json                      fingerprint of what decides the outputs
    .lock                            held by the run writing DIR (pid, host)
    work/pass1/shard-NNNNN.json      pass-1 marker and stats of shard NNNNN
    work/pass1/shard-NNNNN.parquet   its sparse entry counts (lang, entry_id, count)
    work/pass1/shard-NNNNN.lang.npy  worldwide, language ID: each row's language
    work/pass1/shard-NNNNN.groups.parquet  --group-column: (group, choice, row)
    work/pass1/shard-NNNNN.schema    jsonl and tar: the shard's columns (Arrow IPC schema)
    work/matches/shard-NNNNN.bin     pass 1's matches for pass 2 (raw CSR frames), removed once
                                     it is done (.parquet: a saved index lent by rebalance)
    work/rows/shard-NNNNN.d          jsonl and tar: pass 1's rows for pass 2 (Arrow IPC), likewise
    work/groups/shard-NNNNN.npy      --group-column: the rows chosen for their group
    work/prob.npz                    prob per entry, per language
    work/pass2/shard-NNNNN.kept.npz  kept captions per entry of shard NNNNN (for the report)
    work/wds/shard-NNNNN.spans.parquet  a tar shard's samples' byte ranges (from pass 1)
    work/wds/plan.json               --outputs webdataset: the kept samples of each output tar
    matches/shard-NNNNN.parquet      with --save-matches: (entry_id, text_id) uint32
                                     (worldwide: and lang, the language of entry_id)
    entry_counts.parquet             entry_id, entry, count (uint64), prob
    entry_counts/<lang>.parquet      the same per language (worldwide)
    curated/part-NNNNN.parquet       kept rows of shard NNNNN, plus entry_ids (and lang)
    curated-wds/NNNNN.tar            kept samples as WebDataset shards (--outputs webdataset)
    curated-wds/sizes.json           {tar name: samples}
    uids.npy                         kept DataComp uids (--outputs uids)
    rejected/part-NNNNN.parquet      rows skipped with --on-bad-row skip
    stats/shard-NNNNN.json           per-shard stats (the pass-2 marker)
    summary.json                     the funnel, t, timings, versions (per language)
    report/                          the HTML report

Paths are strings joined with ``/`` when ``DIR`` is a URL (``s3://...``) and
with the platform's separator otherwise, so the same object serves local
directories and object stores.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

ALL = "all"  # the one "language" of a MetaCLIP 1 run


def _name(i: int, stem: str, ext: str) -> str:
    return f"{stem}-{i:05d}.{ext}"


@dataclass(frozen=True)
class OutputLayout:
    """The paths under one output directory (nothing is touched here)."""

    root: str

    @property
    def is_url(self) -> bool:
        return "://" in self.root

    def join(self, *parts: str) -> str:
        return (posixpath.join if self.is_url else os.path.join)(self.root, *parts)

    # ------------------------------------------------------------- run level
    @property
    def config(self) -> str:
        return self.join("config.json")

    @property
    def lock(self) -> str:
        return self.join(".lock")

    @property
    def summary(self) -> str:
        return self.join("summary.json")

    @property
    def report(self) -> str:
        return self.join("report")

    @property
    def work(self) -> str:
        return self.join("work")

    @property
    def pass1_dir(self) -> str:
        return self.join("work", "pass1")

    @property
    def groups_dir(self) -> str:
        return self.join("work", "groups")

    @property
    def prob(self) -> str:
        return self.join("work", "prob.npz")

    @property
    def matches_dir(self) -> str:
        return self.join("matches")

    @property
    def entry_counts(self) -> str:
        return self.join("entry_counts.parquet")

    @property
    def entry_counts_dir(self) -> str:
        return self.join("entry_counts")

    def entry_counts_of(self, lang: str) -> str:
        """The counts file of one language (``entry_counts.parquet`` for MetaCLIP 1)."""
        return self.entry_counts if lang == ALL else self.join("entry_counts", f"{lang}.parquet")

    @property
    def curated_dir(self) -> str:
        return self.join("curated")

    @property
    def curated_wds_dir(self) -> str:
        return self.join("curated-wds")

    @property
    def uids(self) -> str:
        return self.join("uids.npy")

    @property
    def rejected_dir(self) -> str:
        return self.join("rejected")

    @property
    def stats_dir(self) -> str:
        return self.join("stats")

    # ----------------------------------------------------------- per shard
    def pass1_marker(self, i: int) -> str:
        return self.join("work", "pass1", _name(i, "shard", "json"))

    def pass1_counts(self, i: int) -> str:
        return self.join("work", "pass1", _name(i, "shard", "parquet"))

    def pass1_lang(self, i: int) -> str:
        return self.join("work", "pass1", _name(i, "shard", "lang.npy"))

    def pass1_groups(self, i: int) -> str:
        return self.join("work", "pass1", _name(i, "shard", "groups.parquet"))

    def pass1_schema(self, i: int) -> str:
        return self.join("work", "pass1", _name(i, "shard", "schema"))

    def work_rows(self, i: int) -> str:
        """jsonl and tar shards: the rows pass 1 parsed, kept for pass 2."""
        return self.join("work", "rows", _name(i, "shard", "d"))

    def wds_spans(self, i: int) -> str:
        """A tar shard's samples' byte ranges, from pass 1, for the WebDataset writer."""
        return self.join("work", "wds", _name(i, "shard", "spans.parquet"))

    @property
    def wds_plan(self) -> str:
        """Which kept samples go to which output tar, recorded before any is written."""
        return self.join("work", "wds", "plan.json")

    @property
    def wds_sizes(self) -> str:
        """{tar name: samples} of curated-wds/ (what open_clip reads)."""
        return self.join("curated-wds", "sizes.json")

    def work_matches(self, i: int) -> str:
        return self.join("work", "matches", _name(i, "shard", "bin"))

    def work_matches_index(self, i: int) -> str:
        """A saved inverted index (parquet) lent to pass 2, e.g. by ``rebalance``."""
        return self.join("work", "matches", _name(i, "shard", "parquet"))

    @property
    def work_matches_dir(self) -> str:
        return self.join("work", "matches")

    def groups(self, i: int) -> str:
        return self.join("work", "groups", _name(i, "shard", "npy"))

    def matches(self, i: int) -> str:
        return self.join("matches", _name(i, "shard", "parquet"))

    def curated(self, i: int) -> str:
        return self.join("curated", _name(i, "part", "parquet"))

    def rejected(self, i: int) -> str:
        return self.join("rejected", _name(i, "part", "parquet"))

    def stats(self, i: int) -> str:
        return self.join("stats", _name(i, "shard", "json"))

    def kept_counts(self, i: int) -> str:
        """Pass 2's kept captions per entry of shard ``i`` (for the report)."""
        return self.join("work", "pass2", _name(i, "shard", "kept.npz"))

    @property
    def pass2_dir(self) -> str:
        return self.join("work", "pass2")

    # ---------------------------------------------------------------- sets
    def outputs(self) -> list[str]:
        """Every top-level output a run writes: what ``--overwrite`` clears
        (never anything else under DIR, and nothing outside it)."""
        # The completion markers first (summary, pass 2's stats, pass 1's under
        # work): a clearing cut short never leaves a shard marked done whose
        # outputs are gone (the run it left resumed as whole); config.json last,
        # so that the rest is still known as that run's (and cleared again),
        # never taken for another one's
        return [self.summary, self.stats_dir, self.work, self.matches_dir, self.entry_counts,
                self.entry_counts_dir, self.curated_dir, self.curated_wds_dir, self.uids,
                self.rejected_dir, self.report, self.config]

    def marker_dirs(self) -> list[str]:
        """The directories whose ``*.json`` files mark completed shards."""
        return [self.pass1_dir, self.stats_dir]
