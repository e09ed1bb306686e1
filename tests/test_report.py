"""DIR/report: rendered from a real CPU curation, numbers read back from the
HTML and checked against the run's own files, images checked in a headless
browser (required in CI through GPUCURATE_REQUIRE_BROWSER=1)."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import caption_file

SHARDS, ROWS, T = 3, 2000, 50


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, metadata_path):
    from gpucurate.pipeline import curate

    base = tmp_path_factory.mktemp("report")
    table = pq.read_table(caption_file("coco_captions_val2017")).slice(0, SHARDS * ROWS)
    os.makedirs(base / "in")
    for i in range(SHARDS):
        pq.write_table(table.slice(i * ROWS, ROWS), base / "in" / f"coco-{i}.parquet")
    out = base / "out"
    curate(metadata_path, [str(base / "in")], out, t=T, device="cpu", threads=2,
           key_column="id")
    return out


class _Cells(HTMLParser):
    """Per table id: rows as (row attributes, [data-value or text of each cell])."""

    def __init__(self):
        super().__init__()
        self.tables, self.imgs = {}, []
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = (a, [])
        elif tag in ("td", "th") and self._row is not None:
            self._cell = [a.get("data-value"), ""]
        elif tag == "img":
            self.imgs.append(a)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            v, text = self._cell
            self._row[1].append(v if v is not None else text)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row[0]:
                self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def _parse(path):
    p = _Cells()
    p.feed(open(path, encoding="utf-8").read())
    return p


def _keyed(rows, attr="data-key"):
    return {a[attr]: cells for a, cells in rows}


def _after_counts(out, n):
    after = np.zeros(n, np.int64)
    rows = 0
    for f in sorted((out / "curated").glob("part-*.parquet")):
        col = pq.read_table(f, columns=["entry_ids"]).column("entry_ids").combine_chunks()
        rows += len(col)
        np.add.at(after, col.flatten().to_numpy(), 1)
    return after, rows


def test_report_numbers_match_the_run(run_dir):
    path = run_dir / "report" / "index.html"
    assert path.exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    ec = pq.read_table(run_dir / "entry_counts.parquet")
    before = ec.column("count").to_numpy().astype(np.int64)
    names = ec.column("entry").to_pylist()
    after, kept_rows = _after_counts(run_dir, before.size)
    assert kept_rows == summary["curated"] > 0
    p = _parse(path)

    funnel = _keyed(p.tables["funnel"])
    for k in ("pool", "null_captions", "matched", "curated"):
        assert int(funnel[k][1]) == summary[k], k
    assert summary["pool"] == SHARDS * ROWS

    facts = {k: int(v[1]) for k, v in _keyed(p.tables["facts"]).items()}
    head = before > T
    assert facts["t"] == summary["t"] == T
    assert facts["entries"] == before.size == summary["entries"]
    assert facts["entries_matched"] == np.count_nonzero(before) == summary["entries_matched"]
    assert facts["matches_before"] == before.sum() == summary["matches"]
    assert facts["head_entries"] == head.sum() > 0
    assert facts["head_matches_before"] == before[head].sum()
    assert facts["matches_after"] == after.sum()
    assert facts["head_matches_after"] == after[head].sum()
    assert facts["entries_kept"] == np.count_nonzero(after)

    rows = p.tables["head"]
    assert 0 < len(rows) <= 25
    shown = [int(a["data-entry-id"]) for a, _ in rows]
    assert shown == list(np.argsort(-before, kind="stable")[:len(rows)])
    for (a, cells), e in zip(rows, shown):
        _, eid, name, b, k, prob = cells
        assert int(eid) == e and name == names[e]
        assert int(b) == before[e] > T and int(k) == after[e]
        assert float(prob) == pytest.approx(T / before[e])

    stats = {}
    for f in sorted((run_dir / "stats").glob("shard-*.json")):
        s = json.loads(f.read_text())
        stats[s["shard"]] = s
    shards = _keyed(p.tables["shards"], "data-shard")
    assert set(shards) == set(stats) and len(stats) == SHARDS
    for name, cells in shards.items():
        s = stats[name]
        assert cells[0] == name
        assert [int(c) for c in cells[1:4]] == [s["captions"], s["matched"], s["kept"]]
        assert float(cells[4]) == s["seconds_pass1"] and float(cells[5]) == s["seconds_pass2"]
    assert sum(s["kept"] for s in stats.values()) == summary["curated"]


def test_report_is_self_contained(run_dir):
    rdir = run_dir / "report"
    text = (rdir / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<script" not in text
    imgs = _parse(rdir / "index.html").imgs
    assert sorted(a["data-file"] for a in imgs) == ["counts.png", "cumulative.png", "funnel.png"]
    for a in imgs:
        prefix = "data:image/png;base64,"
        assert a["src"].startswith(prefix)
        png = base64.b64decode(a["src"][len(prefix):])
        assert png == (rdir / a["data-file"]).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert not [f for f in os.listdir(rdir) if ".tmp-" in f]


def test_report_cli_and_extra_summary_keys(run_dir, tmp_path):
    from gpucurate.cli import main

    d = tmp_path / "copy"
    shutil.copytree(run_dir, d)
    s = json.loads((d / "summary.json").read_text())
    s["languages"] = {"en": {"pool": s["pool"], "t": 20}, "de": {"pool": 0, "t": None}}
    s["t_per_language"] = {"en": 20}
    (d / "summary.json").write_text(json.dumps(s))
    shutil.rmtree(d / "report")
    assert main(["report", str(d), "--quiet"]) == 0
    assert (d / "report" / "index.html").exists()
    assert {f.name for f in (d / "report").iterdir()} == {
        "index.html", "counts.png", "cumulative.png", "funnel.png"}


def test_report_escapes_names_and_handles_count_only(tmp_path):
    from gpucurate.config import CurateConfig
    from gpucurate.pipeline import run
    from gpucurate.pipeline.report import write_report

    md = tmp_path / "md.txt"
    md.write_text("a\n<b>dog</b>\ncat & mouse\nx\"y\n")
    pq.write_table(pa.table({"text": [
        "a <b>dog</b> here", "a cat & mouse", "a x\"y", "nothing"] * 5}), tmp_path / "p.parquet")
    out = tmp_path / "out"
    run(CurateConfig(metadata=str(md), inputs=(str(tmp_path / "p.parquet"),), out=str(out),
                     device="cpu", threads=1), "count")
    assert not (out / "report").exists()  # count runs write no report of their own
    text = open(write_report(out), encoding="utf-8").read()
    p = _parse(out / "report" / "index.html")
    assert "curated" not in _keyed(p.tables["funnel"]) and not p.tables["head"]
    for bad in ("<b>dog</b>", "cat & mouse"):
        assert bad not in text
    out2 = tmp_path / "out2"
    run(CurateConfig(metadata=str(md), inputs=(str(tmp_path / "p.parquet"),), out=str(out2),
                     t=1, device="cpu", threads=1), "curate")
    text = (out2 / "report" / "index.html").read_text(encoding="utf-8")
    rows = _parse(out2 / "report" / "index.html").tables["head"]
    assert {cells[2] for _, cells in rows} == {"a", "<b>dog</b>", "cat & mouse", 'x"y'}
    assert html.escape("<b>dog</b>") in text and "<b>dog</b>" not in text


# ---------------------------------------------------------------- browser

_CHECK = """<script>
window.addEventListener("load", function () {
  var r = Array.prototype.map.call(document.images, function (i) {
    return [i.getAttribute("data-file"), i.complete, i.naturalWidth, i.naturalHeight]; });
  var p = document.createElement("pre"); p.id = "imgcheck"; p.textContent = JSON.stringify(r);
  document.body.appendChild(p);
});
</script>"""


def _browser():
    for name in (os.environ.get("GPUCURATE_BROWSER"), "chromium", "chromium-browser",
                 "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def test_report_images_load_in_a_browser(run_dir, tmp_path):
    browser = _browser()
    if browser is None:
        why = ("no headless browser found (chromium, chromium-browser, google-chrome, or "
               "$GPUCURATE_BROWSER); install one, e.g. apt-get install chromium")
        if os.environ.get("GPUCURATE_REQUIRE_BROWSER") == "1":
            pytest.fail(why + "; GPUCURATE_REQUIRE_BROWSER=1 requires it")
        pytest.skip(why)
    # The report itself holds no script: load a copy with a probe that writes
    # each image's load result into the DOM, then read the DOM back.
    page = tmp_path / "index.html"
    src = (run_dir / "report" / "index.html").read_text(encoding="utf-8")
    page.write_text(src.replace("</body>", _CHECK + "\n</body>"), encoding="utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HOME": str(tmp_path)})
    m = re.search(r'<pre id="imgcheck">(.*?)</pre>', r.stdout, re.S)
    assert m, f"no load results in the DOM (rc {r.returncode}): {r.stderr[-2000:]}"
    loaded = json.loads(html.unescape(m.group(1)))
    assert sorted(x[0] for x in loaded) == ["counts.png", "cumulative.png", "funnel.png"]
    for name, complete, w, h in loaded:
        assert complete and w > 0 and h > 0, (name, complete, w, h)
