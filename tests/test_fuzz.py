"""Malformed shards through ``gpucurate curate``: a clean error or a correct result.

Per input format, hypothesis draws ``GPUCURATE_FUZZ_CASES`` (default 1000)
cases of ``tests/fuzzcases.py`` (mutation class and seed) and runs each
in-process through ``gpucurate.cli.main``. A case must end as exit 2 with one
ERROR line naming the file and no traceback, or as exit 0 with the outputs the
strict reference reader gives; it must not block on a FIFO or run past the time
limit, and no file outside OUT may change (``test_fuzz_tar_to_webdataset``:
tar cases with ``--outputs webdataset`` too, whose tars are judged as well,
``GPUCURATE_FUZZ_WDS_CASES``, default 300). ``test_fuzz_class[FMT-CLASS]``
fails listing every case of that class that broke a rule. The classes that
fail today are marked xfail, each with the bug it shows (see KNOWN); the
others must pass. ``python -m bench.fuzz`` runs the same cases at scale.
"""

import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import fuzzcases as fc

N = int(os.environ.get("GPUCURATE_FUZZ_CASES", "1000"))

# (format, class) -> the bug it shows today. Classes that still fail, each with the bug it shows (none may be listed
# without a reason; a class fixed is removed, so that its test can fail again).
KNOWN: dict = {f: {} for f in fc.FORMATS}
for f in KNOWN:
    KNOWN[f] = {c: r for c, r in KNOWN[f].items() if r and c in fc.all_cases(f)}

_RESULTS: dict = {}


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    r = fc.Runner(timeout=60.0)
    r.warm_up()
    yield r
    import shutil

    shutil.rmtree(r.workdir, ignore_errors=True)


def results_for(fmt: str, runner) -> list:
    """The format's N hypothesis-drawn cases, run once per session."""
    if fmt not in _RESULTS:
        out = []

        @settings(max_examples=N, deadline=None, database=None, derandomize=True,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(cls=st.sampled_from(fc.all_cases(fmt)), seed=st.integers(0, 2**32 - 1))
        def drive(cls, seed):
            out.append(runner.run(fc.Case(fmt, cls, seed)))

        drive()
        _RESULTS[fmt] = out
    return _RESULTS[fmt]


@pytest.mark.parametrize("fmt", fc.FORMATS)
def test_fuzz_format(fmt, runner):
    """Enough cases ran, every class of the format among them; the counts print."""
    res = results_for(fmt, runner)
    counts = Counter(r.outcome for r in res)
    print(f"\n{fmt}: {len(res)} cases: {dict(counts)}")
    assert len({(r.case.cls, r.case.seed) for r in res}) >= N * 0.95
    assert {r.case.cls for r in res} == set(fc.all_cases(fmt))
    assert counts["correct"] and counts["clean_error"]


def _params():
    out = []
    for fmt in fc.FORMATS:
        for cls in fc.all_cases(fmt):
            marks = ()
            if cls in KNOWN[fmt]:
                marks = pytest.mark.xfail(strict=False, reason=KNOWN[fmt][cls])
            out.append(pytest.param(fmt, cls, marks=marks, id=f"{fmt}-{cls}"))
    return out


@pytest.mark.parametrize("fmt,cls", _params())
def test_fuzz_class(fmt, cls, runner):
    """No case of the class is a traceback, hang, silent wrong result, refused
    valid input, malformed error or touch outside OUT."""
    res = [r for r in results_for(fmt, runner) if r.case.cls == cls]
    bad = [r for r in res if r.outcome in fc.FAILURES]
    assert not bad, (f"{len(bad)} of {len(res)} cases of {fmt}/{cls} fail:\n"
                     + "\n".join(r.line()[:400] for r in bad[:25]))


N_WDS = int(os.environ.get("GPUCURATE_FUZZ_WDS_CASES", "300"))


def test_fuzz_tar_to_webdataset():
    """Tar cases curated with ``--outputs parquet,webdataset``: besides the
    rules above, the tars written hold the input's kept samples in order,
    each member as it was and its .json with ``entry_ids``."""
    r = fc.Runner(timeout=60.0, wds=True)
    r.warm_up()
    try:
        res = []

        @settings(max_examples=N_WDS, deadline=None, database=None, derandomize=True,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(cls=st.sampled_from(fc.all_cases("tar")), seed=st.integers(0, 2**32 - 1))
        def drive(cls, seed):
            res.append(r.run(fc.Case("tar", cls, seed)))

        drive()
    finally:
        import shutil

        shutil.rmtree(r.workdir, ignore_errors=True)
    counts = Counter(x.outcome for x in res)
    print(f"\ntar with --outputs webdataset: {len(res)} cases: {dict(counts)}")
    bad = [x for x in res if x.outcome in fc.FAILURES]
    assert not bad, "\n".join(x.line()[:400] for x in bad[:25])
    assert counts["correct"] >= N_WDS // 10 and counts["clean_error"]
