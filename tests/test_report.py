"""DIR/report: rendered from a real CPU curation, numbers read back from the
HTML and checked against the run's own files, the SVG figures parsed and their
geometry checked against the numbers, figures checked in a headless browser
(required in CI through GPUCURATE_REQUIRE_BROWSER=1)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import caption_file

SHARDS, ROWS, T = 3, 2000, 50
SVG = "{http://www.w3.org/2000/svg}"
FIGURES = ["counts.svg", "cumulative.svg", "funnel.svg"]


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
        self.tables, self.imgs, self.figures = {}, [], []
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
        elif tag == "figure":
            self.figures.append(a)

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


def _svg(path):
    """The figure's root element; its polylines (and dots) by data-series,
    marks by data-mark, every text joined."""
    root = ET.fromstring(path.read_text(encoding="utf-8"))
    assert root.tag == SVG + "svg" and root.get("viewBox")
    series = {e.get("data-series"): e for e in root.iter() if e.get("data-series")}
    marks = {e.get("data-mark"): e for e in root.iter() if e.get("data-mark")}
    texts = ["".join(e.itertext()) for e in root.iter(SVG + "text")]
    return root, series, marks, texts


def _points(e):
    pts = np.array([p.split(",") for p in e.get("points").split()], float)
    return pts[:, 0], pts[:, 1]


def test_report_is_self_contained(run_dir):
    rdir = run_dir / "report"
    text = (rdir / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<script" not in text and "<img" not in text and "data:" not in text
    p = _parse(rdir / "index.html")
    assert sorted(a["data-file"] for a in p.figures) == FIGURES
    for name in FIGURES:
        svg = (rdir / name).read_text(encoding="utf-8")
        assert svg.startswith("<svg ") and 'xmlns="http://www.w3.org/2000/svg"' in svg
        assert f'<figure data-file="{name}">{svg.rstrip()}</figure>' in text  # inline, the same
        root, _, _, texts = _svg(rdir / name)
        title = root.find(SVG + "title").text
        assert title in texts and title in {
            "counts.svg": "Captions per entry, sorted descending",
            "cumulative.svg": "Share of all matches held by the top-k entries",
            "funnel.svg": "Funnel"}[name]
    assert sorted(os.listdir(rdir)) == sorted(["index.html"] + FIGURES)  # no temporaries left


def test_report_figures_show_the_numbers(run_dir):
    from gpucurate.pipeline.report import MAX_POINTS

    rdir = run_dir / "report"
    summary = json.loads((run_dir / "summary.json").read_text())
    before = pq.read_table(run_dir / "entry_counts.parquet").column("count").to_numpy()
    before = before.astype(np.int64)
    after, _ = _after_counts(run_dir, before.size)
    n_head = int(np.count_nonzero(before > T))
    b_sorted, a_sorted = np.sort(before[before > 0])[::-1], np.sort(after[after > 0])[::-1]

    # counts: "before" wide under a thinner "after", both descending; t and the head
    _, series, marks, texts = _svg(rdir / "counts.svg")
    assert list(series) == ["before", "after"]
    assert float(series["before"].get("stroke-width")) > float(series["after"].get("stroke-width"))
    for name, c in (("before", b_sorted), ("after", a_sorted)):
        x, y = _points(series[name])
        assert 2 <= x.size <= MAX_POINTS + 1
        assert np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)  # ranks up, counts down
        assert f"{name} ({c.size:,} entries)" in texts
    # the log scales, from the "before" curve's ends (rank 1 and rank n, largest and
    # smallest count), place t and the head band's end
    x, y = _points(series["before"])
    assert b_sorted[0] > b_sorted[-1]
    ky = (y[-1] - y[0]) / (np.log10(b_sorted[-1]) - np.log10(b_sorted[0]))
    assert float(marks["t"].get("y1")) == pytest.approx(
        y[0] + ky * (np.log10(T) - np.log10(b_sorted[0])), abs=0.3)
    kx = (x[-1] - x[0]) / np.log10(b_sorted.size)
    band = marks["head"]
    assert float(band.get("x")) + float(band.get("width")) == pytest.approx(
        x[0] + kx * np.log10(n_head + 0.5), abs=0.3)
    assert f"t = {T:,}" in texts and f"head: {n_head:,} entries" in texts
    assert {"1", "10", "100", "1k"} <= set(texts)  # decade labels
    assert {"entry rank", "captions per entry"} <= set(texts)

    # cumulative: shares rise to 1 (the top of the scale at 0..1.02); end of head marked
    _, series, marks, texts = _svg(rdir / "cumulative.svg")
    assert list(series) == ["before", "after"]
    ys = {}
    for name in series:
        x, ys[name] = _points(series[name])
        assert np.all(np.diff(x) > 0) and np.all(np.diff(ys[name]) <= 0)
    x0, x1 = float(marks["head"].get("x1")), float(marks["head"].get("x2"))
    assert x0 == x1 and f"end of head (k = {n_head:,})" in texts
    assert ys["before"][-1] == pytest.approx(ys["after"][-1], abs=0.1)  # both end at 1
    assert {"0.0", "0.5", "1.0"} & set(texts) and "share of all matches" in texts

    # funnel: one bar per stage, lengths in proportion, each value written at its end
    _, _, _, texts = _svg(rdir / "funnel.svg")
    root = ET.fromstring((rdir / "funnel.svg").read_text(encoding="utf-8"))
    bars = {e.get("data-stage"): float(e.get("width")) for e in root.iter(SVG + "rect")
            if e.get("data-stage")}
    assert list(bars) == ["pool", "null_captions", "matched", "curated"]
    for k, w in bars.items():
        assert w == pytest.approx(bars["pool"] * summary[k] / summary["pool"], abs=0.2), k
        assert f"{summary[k]:,}" in texts
    assert {"captions in", "null", "matched", "curated"} <= set(texts)


def test_figures_of_edge_cases():
    """Empty counts, nothing kept, no t, one entry, huge values: every figure
    parses, holds no nan or inf, and draws what there is."""
    from gpucurate.pipeline.report import _head_order, _html, _plots

    def figures(before, after, t, **s):
        before = np.asarray(before, np.int64)
        after = None if after is None else np.asarray(after, np.int64)
        summary = {"pool": s.get("pool", 10), "null_captions": 1, "matched": 5, "t": t,
                   "rejected": s.get("rejected", 0), "unrouted": s.get("unrouted", 0)}
        if after is not None:
            summary["curated"] = s.get("curated", 3)
        d = {"summary": summary, "before": before, "after": after, "shards": [],
             "names": {i: f"<e{i}>" for i in range(before.size)},
             "order": _head_order(before, t), "languages": {}, "main": None}
        svgs = _plots(d)
        page = _html(d, svgs)
        out = {}
        for name, text in svgs.items():
            assert not re.search(r"nan|inf", text), (name, text)
            assert f'<figure data-file="{name}">{text.rstrip()}</figure>' in page
            root = ET.fromstring(text)
            out[name] = (
                {e.get("data-series"): e.tag[len(SVG):] for e in root.iter()
                 if e.get("data-series")},
                {e.get("data-mark") for e in root.iter() if e.get("data-mark")},
                ["".join(e.itertext()) for e in root.iter(SVG + "text")])
        return out

    f = figures([], None, None, pool=0)
    assert f["counts.svg"][:2] == ({}, set()) and "no entry matched" in f["counts.svg"][2]
    assert not f["cumulative.svg"][0]
    f = figures([5, 3, 0, 100], [0, 0, 0, 0], 4, curated=0)  # nothing kept
    assert f["counts.svg"][:2] == ({"before": "polyline"}, {"t", "head"})
    assert "after (0 entries)" in f["counts.svg"][2] and "head: 2 entries" in f["counts.svg"][2]
    f = figures([5, 3, 0, 100], None, None)  # count only: no t, no head, no "after"
    assert f["counts.svg"][:2] == ({"before": "polyline"}, set())
    assert f["cumulative.svg"][:2] == ({"before": "polyline"}, set())
    assert [x for x in f["funnel.svg"][2] if x in ("curated", "bad rows skipped")] == []
    f = figures([7], [3], 2)  # one entry: a dot per series
    assert f["counts.svg"][0] == {"before": "circle", "after": "circle"}
    assert "head: 1 entry" in f["counts.svg"][2]
    big = 10 ** 18
    f = figures([big // 10, 10 ** 15, 3], [10 ** 16, 10 ** 14, 3], 10 ** 13, pool=big,
                curated=big // 10, rejected=10 ** 12)
    assert f["counts.svg"][0] == {"before": "polyline", "after": "polyline"}
    assert {"1", "100", "1M", "100T", "1016"} <= set(f["counts.svg"][2])  # 10 with superscript 16
    assert f"{big:,}" in f["funnel.svg"][2] and "bad rows skipped" in f["funnel.svg"][2]
    # worldwide: captions in a language without a list are a stage of their own
    f = figures([5, 3], [2, 1], 2, unrouted=4)
    labels = f["funnel.svg"][2]
    assert labels.index("no metadata list") < labels.index("matched") and "4" in labels


def test_report_imports_no_plotting_library(run_dir, tmp_path):
    import gpucurate

    d = tmp_path / "copy"
    shutil.copytree(run_dir, d)
    (d / "report" / "counts.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # an older report's figure
    root = os.path.dirname(os.path.dirname(os.path.abspath(gpucurate.__file__)))
    code = ("import sys\n"
            "from gpucurate.pipeline.report import write_report\n"
            f"write_report({str(d)!r})\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib')\n"
            "assert not bad, bad\n"
            "print('ok')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
    assert sorted(os.listdir(d / "report")) == sorted(["index.html"] + FIGURES)


def test_report_of_a_worldwide_layout_counts_its_language_only(run_dir, tmp_path):
    from gpucurate.pipeline.report import write_report

    d = tmp_path / "ww"
    shutil.copytree(run_dir, d)
    shutil.rmtree(d / "report")
    os.makedirs(d / "entry_counts")
    os.rename(d / "entry_counts.parquet", d / "entry_counts" / "en.parquet")
    n = pq.read_metadata(d / "entry_counts" / "en.parquet").num_rows
    want = np.zeros(n, np.int64)
    for i, part in enumerate(sorted((d / "curated").glob("part-*.parquet"))):
        t = pq.read_table(part)
        lang = ["en" if (i + r) % 3 else "de" for r in range(t.num_rows)]
        t = t.append_column("lang", pa.array(lang))
        pq.write_table(t, part, row_group_size=max(1, t.num_rows // 2))
        for ids, code in zip(t.column("entry_ids").to_pylist(), lang):
            if code == "en":
                np.add.at(want, ids, 1)
    s = json.loads((d / "summary.json").read_text())
    s["languages"] = {"en": {"pool": 10, "t": T}, "de": {"pool": 5, "t": 7}}
    (d / "summary.json").write_text(json.dumps(s))
    text = open(write_report(d), encoding="utf-8").read()
    assert "language <b>en</b>" in text
    p = _parse(d / "report" / "index.html")
    facts = {k: int(v[1]) for k, v in _keyed(p.tables["facts"]).items()}
    assert facts["t"] == T and 0 < facts["matches_after"] == want.sum()
    assert facts["entries_kept"] == np.count_nonzero(want)
    for a, cells in p.tables["head"]:
        assert int(cells[4]) == want[int(a["data-entry-id"])]
    assert set(_keyed(p.tables["languages"], "data-lang")) == {"en", "de"}
    # en in the pool but matched nothing (not balanced): the plots show de
    shutil.copy(d / "entry_counts" / "en.parquet", d / "entry_counts" / "de.parquet")
    s["languages"] = {"en": {"pool": 10, "matched": 0, "t": None},
                      "de": {"pool": 5, "matched": 5, "t": 7}}
    (d / "summary.json").write_text(json.dumps(s))
    text = open(write_report(d), encoding="utf-8").read()
    assert "language <b>de</b>" in text and "the funnel and the shards show every" in text
    assert "No t" not in text


def test_report_rejects_entry_ids_outside_the_counts(run_dir, tmp_path):
    from gpucurate.errors import InputError
    from gpucurate.pipeline.report import write_report

    n = pq.read_metadata(run_dir / "entry_counts.parquet").num_rows
    for bad in (n, -1):
        d = tmp_path / f"copy{bad}"
        shutil.copytree(run_dir, d)
        shutil.rmtree(d / "work" / "pass2")  # the parts are read only without pass 2's counts
        part = sorted((d / "curated").glob("part-*.parquet"))[-1]
        t = pq.read_table(part)
        ids = t.column("entry_ids").to_pylist()
        ids[-1] = ids[-1] + [bad]
        i = t.schema.get_field_index("entry_ids")
        t = t.set_column(i, "entry_ids", pa.array(ids, t.schema.field(i).type))
        pq.write_table(t, part, row_group_size=max(1, t.num_rows // 3))
        with pytest.raises(InputError, match=re.escape(str(part)) + ".*outside"):
            write_report(d)


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
    assert {f.name for f in (d / "report").iterdir()} == {"index.html", *FIGURES}


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
    _, series, marks, _ = _svg(out / "report" / "counts.svg")
    assert list(series) == ["before"] and not marks  # no "after", no t, no head
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
  var figs = Array.prototype.map.call(document.querySelectorAll("figure[data-file]"), function (f) {
    var svg = f.querySelector("svg"), box = svg.getBoundingClientRect();
    var drawn = Array.prototype.filter.call(svg.querySelectorAll("[data-series]"), function (e) {
      var b = e.getBBox(); return b.width > 0 || b.height > 0; }).length;
    return [f.getAttribute("data-file"), box.width, box.height, drawn]; });
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return [i.getAttribute("data-file"), i.complete, i.naturalWidth, i.naturalHeight]; });
  var p = document.createElement("pre"); p.id = "imgcheck";
  p.textContent = JSON.stringify({figures: figs, images: imgs});
  document.body.appendChild(p);
});
</script>"""


def _browser():
    for name in (os.environ.get("GPUCURATE_BROWSER"), "chromium", "chromium-browser",
                 "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def test_report_figures_render_in_a_browser(run_dir, tmp_path):
    browser = _browser()
    if browser is None:
        why = ("no headless browser found (chromium, chromium-browser, google-chrome, or "
               "$GPUCURATE_BROWSER); install one, e.g. apt-get install chromium")
        if os.environ.get("GPUCURATE_REQUIRE_BROWSER") == "1":
            pytest.fail(why + "; GPUCURATE_REQUIRE_BROWSER=1 requires it")
        pytest.skip(why)
    # The report itself holds no script: load a copy with a probe that writes
    # each inline figure's size and drawn curves, and each SVG file's load
    # result as an image, into the DOM; then read the DOM back.
    page = tmp_path / "index.html"
    src = (run_dir / "report" / "index.html").read_text(encoding="utf-8")
    for name in FIGURES:
        shutil.copy(run_dir / "report" / name, tmp_path / name)
    files = "".join(f'<img data-file="{n}" src="{n}">' for n in FIGURES)
    page.write_text(src.replace("</body>", files + _CHECK + "\n</body>"), encoding="utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HOME": str(tmp_path)})
    m = re.search(r'<pre id="imgcheck">(.*?)</pre>', r.stdout, re.S)
    assert m, f"no load results in the DOM (rc {r.returncode}): {r.stderr[-2000:]}"
    loaded = json.loads(html.unescape(m.group(1)))
    assert [x[0] for x in loaded["figures"]] == FIGURES
    for name, w, h, drawn in loaded["figures"]:
        assert w > 0 and h > 0, (name, w, h)
        assert drawn == {"counts.svg": 2, "cumulative.svg": 2, "funnel.svg": 0}[name], name
    assert sorted(x[0] for x in loaded["images"]) == FIGURES
    for name, complete, w, h in loaded["images"]:
        assert complete and w > 0 and h > 0, (name, complete, w, h)


def test_report_uses_pass2_kept_counts_and_they_equal_the_parts(run_dir, tmp_path):
    """The report sums pass 2's kept captions per entry; they are what the
    curated parts hold, and a DIR without them (or with counts that disagree
    with summary.json) is reported from the parts, with the same numbers."""
    from gpucurate.pipeline.report import _load

    n = pq.read_metadata(run_dir / "entry_counts.parquet").num_rows
    want, rows = _after_counts(run_dir, n)
    assert rows > 0 and sorted((run_dir / "work" / "pass2").glob("*.kept.npz"))
    assert np.array_equal(_load(str(run_dir))["after"], want)
    d = tmp_path / "gone"
    shutil.copytree(run_dir, d)
    shutil.rmtree(d / "work" / "pass2")
    assert np.array_equal(_load(str(d))["after"], want)
    d = tmp_path / "stale"
    shutil.copytree(run_dir, d)
    k = sorted((d / "work" / "pass2").glob("*.kept.npz"))[0]
    with np.load(k) as z:
        a = {f: z[f] for f in z.files}
    a["all.counts"] = a["all.counts"] + 7
    a["kept_rows"] = a["kept_rows"] + 1  # counts of another run: rows disagree with summary.json
    np.savez(k, **a)
    assert np.array_equal(_load(str(d))["after"], want)
    a["kept_rows"] = a["kept_rows"] - 1  # rows agree again: these counts are the ones read
    np.savez(k, **a)
    assert np.array_equal(_load(str(d))["after"] - want,
                          np.bincount(a["all.ids"], minlength=n) * 7)
    d = tmp_path / "neither"  # no kept counts and no parts: "after" is unknown, not zeros
    shutil.copytree(run_dir, d)
    shutil.rmtree(d / "work" / "pass2")
    shutil.rmtree(d / "curated")
    assert _load(str(d))["after"] is None


def test_head_order_is_a_stable_sort_of_the_head():
    """The head table's rows: the largest counts above t, ties by id, exactly
    what a stable sort of every count would give (ties at the cut included)."""
    from gpucurate.pipeline.report import TOP_HEAD, _head_order

    rng = np.random.default_rng(3)
    for n, t in [(0, 5), (10, 0), (10, 3), (1000, 2), (50_000, 10), (50_000, 10 ** 6)]:
        before = np.zeros(n, np.int64)
        some = rng.choice(n, n // 3, replace=False) if n else np.zeros(0, np.int64)
        before[some] = rng.integers(1, 30, some.size)  # many ties, mostly zeros
        want = [i for i in np.argsort(-before, kind="stable")[:TOP_HEAD] if before[i] > t] \
            if t else []
        assert _head_order(before, t).tolist() == want, (n, t)


def test_head_names_from_the_run_equal_those_of_the_counts_file(run_dir, metadata_path):
    """In the run, the head table's names come from the metadata it holds; they
    are the counts file's own, and another list (by its SHA-256) is not used."""
    from gpucurate.metadata import Metadata, load_metadata
    from gpucurate.pipeline.report import _load

    want = _load(str(run_dir))["names"]
    assert want
    md = load_metadata(metadata_path)
    assert _load(str(run_dir), {"all": md})["names"] == want
    other = Metadata(tuple(f"x{e}" for e in md.entries), "other.json", "0" * 64)
    assert _load(str(run_dir), {"all": other})["names"] == want
