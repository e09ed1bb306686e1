"""Malformed shards through ``gpucurate curate``: a clean error or a correct result.

Per input format, hypothesis draws ``GPUCURATE_FUZZ_CASES`` (default 1000)
cases of ``tests/fuzzcases.py`` (mutation class and seed) and runs each
in-process through ``gpucurate.cli.main``. A case must end as exit 2 with one
ERROR line naming the file and no traceback, or as exit 0 with the outputs the
strict reference reader gives; it must not block on a FIFO or run past the time
limit, and no file outside OUT may change. ``test_fuzz_class[FMT-CLASS]``
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

# (format, class) -> the bug it shows today. The classes listed under "*" fail
# in every format.
_ALL = {
    "fifo": "a FIFO named like a shard in an input directory is opened and read: the run "
            "blocks until a writer comes",
    "symlink_other_ext": "a shard symlinked to a target without a shard extension: the format "
                         "is taken from the resolved path (None), KeyError escapes main",
    "symlink_devzero": "a shard symlinked to /dev/zero, /dev/null or /dev/urandom in an input "
                       "directory: KeyError escapes main (the device is not refused as a "
                       "non-regular file)",
    "out_symlink_tmp": "_prepare_out removes OUT/**/*.tmp-* through a symlinked directory "
                       "inside OUT, deleting files outside OUT",
}
_JSONL = {
    "huge_int": "an integer beyond int64 in the last batch: OverflowError from "
                "pa.Table.from_pylist escapes main (only ArrowException/TypeError/ValueError "
                "are caught there)",
    "sparse_fields": "pa.Table.from_pylist takes the schema from the first row of a batch: "
                     "a field absent from that row is silently dropped from every row",
    "invalid_utf8": "non-UTF-8 bytes: the error names line 0 or the line where the decoded "
                    "chunk began, not the line holding the bytes",
    "latin1": "non-UTF-8 (latin-1) line: the error names line 0 or a wrong line",
    "utf16": "UTF-16/32 file: the error names line 0",
    "lone_surrogate": "a lone surrogate (\\ud800) is reported as 'fields of mixed types' over "
                      "a row range, not as the line holding it",
    "control_chars": "a byte inserted inside a multi-byte UTF-8 character: the error names "
                     "line 0 or a wrong line; inserted in a key, the new field is dropped (see "
                     "sparse_fields)",
    "bool_number_mix": "a JSON bool in a field of numbers is silently turned into 1.0/0.0 "
                       "(pa.Table.from_pylist coerces it) instead of refused as mixed types",
}
KNOWN = {f: dict(_ALL) for f in fc.FORMATS}
for f in ("jsonl", "jsonl.gz", "jsonl.zst"):
    KNOWN[f].update(_JSONL)
for f in ("jsonl.gz", "jsonl.zst"):
    KNOWN[f]["zero_byte"] = "a zero-byte compressed file is read as an empty shard"
    KNOWN[f]["truncate_boundary"] = ("cut at byte 0: a zero-byte compressed file is read as an "
                                     "empty shard")
_FLIP = ("a flipped bit making a line non-UTF-8: the error names a wrong line; in a key, "
         "the renamed field is dropped (see sparse_fields)")
KNOWN["jsonl"].update({
    "bitflip": _FLIP, "bitflip_struct": _FLIP,
    "wrong_format": "a binary file named .jsonl: the error names line 0",
    "dir_mixed": "the bad shard of a directory is not UTF-8: the error names line 0"})
KNOWN["jsonl.zst"]["bitflip"] = _FLIP
KNOWN["jsonl"]["mixed_across_batch"] = ("an int field before row 65,536 then a string: "
                                        "the batches disagree")
KNOWN["parquet"].update({
    "duplicate_text_column": "two columns named text: KeyError escapes main",
    "text_string_view": "a string_view text column is refused (binary_length has no "
                        "string_view kernel)",
    "text_null_type": "an all-null (null type) text column is refused (binary_length has no "
                      "null kernel)",
    "text_dictionary": "a dictionary<string> text column is refused as not a string column",
    "invalid_utf8_other": "invalid UTF-8 in a string column other than text is copied to the "
                          "curated output",
    "page_checksum_flip": "a corrupted page of a file with page CRCs is curated (checksums "
                          "are not verified)",
    "bitflip": "pyarrow's multi-line thrift error text makes the error message several lines; "
               "a flip inside a page of a file with page CRCs is curated",
    "bitflip_struct": "pyarrow's multi-line thrift error text makes the error message "
                      "several lines; a flip inside a page with a CRC is curated",
    "dir_mixed": "pyarrow's multi-line error text makes the error message several lines; a "
                 "flip inside a page with a CRC is curated",
})
KNOWN["tar"].update({
    "huge_int": "an integer beyond int64 in a .json: OverflowError escapes main",
    "sparse_fields": "a .json field absent from the first sample of a batch is dropped",
    "json_not_object": "a .json member holding a list, number, string or bool: "
                       "AttributeError ('.items') escapes main; one holding null is ignored",
    "json_mixed_types": "a JSON bool in a field of numbers is silently turned into 1.0/0.0",
    "json_surrogate": "a lone surrogate in a .json is reported as 'fields of mixed types'",
    "truncate_member_boundary": "a tar cut at a member boundary (no end-of-archive block) is "
                                "read as the samples before the cut, or reported as 'no .txt "
                                "member'",
    "truncate_boundary": "a tar cut at a member boundary or mid-member is half-read silently "
                         "or reported as 'no .txt member'",
    "truncate_random": "a tar cut mid-member is half-read silently or reported as 'no .txt "
                       "member'",
    "bad_checksum_mid": "a corrupt member header after the first ends the archive silently "
                        "(tarfile stops at an invalid header): the samples after it are lost",
    "bitflip": "a corrupt member header ends the archive silently",
    "bitflip_struct": "a corrupt member header ends the archive silently",
    "dir_mixed": "the cut shard of a directory is half-read silently",
})
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
