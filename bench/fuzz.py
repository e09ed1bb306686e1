"""``python -m bench.fuzz``: the malformed-shard fuzz at scale.

Runs ``--cases`` cases of ``tests/fuzzcases.py`` (every format and mutation
class, the costly ones included) in-process through ``gpucurate.cli.main``, and
prints and writes the count of each outcome (correct, clean_error, traceback,
hang, silent_wrong, rejected_valid, bad_error, outside_touched) in total, per
format and per class, with every failing case, the date, the commit, the
machine and the command. Default output:
``bench/results/<date>-fuzz-<commit>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import fuzzcases as fc  # noqa: E402
from bench.suite import commit as run_commit  # noqa: E402 - one definition of it
from bench.workloads import cpu_model  # noqa: E402


def _machine() -> dict:
    import pyarrow

    import gpucurate

    return {"platform": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "python": platform.python_version(), "pyarrow": pyarrow.__version__,
            "gpucurate": gpucurate.__version__}


def plan(n: int, seed: int, formats) -> list:
    """``n`` cases, formats in turn, each case's class and seed drawn from ``seed``."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        fmt = formats[i % len(formats)]
        cases.append(fc.Case(fmt, rng.choice(fc.all_cases(fmt, include_slow=True)),
                             rng.getrandbits(32)))
    return cases


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000, help="number of cases (default 10000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the case plan (default 0)")
    ap.add_argument("--formats", default=",".join(fc.FORMATS),
                    help=f"comma list of {', '.join(fc.FORMATS)}")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds after which a case is a hang (default 30)")
    ap.add_argument("--out", default=None, help="result JSON (default bench/results/"
                                                "<date>-fuzz-<commit>.json)")
    ap.add_argument("--keep", action="store_true", help="keep the directories of failing cases")
    ap.add_argument("--wds", action="store_true",
                    help="tar cases with --outputs parquet,webdataset: the tars written are "
                         "judged against the input's kept samples too (implies --formats tar)")
    a = ap.parse_args(argv)
    if a.wds:
        a.formats = "tar"
    formats = [f for f in a.formats.split(",") if f]
    for f in formats:
        if f not in fc.FORMATS:
            ap.error(f"unknown format {f!r}")
    commit = run_commit()
    date = datetime.date.today().isoformat()
    out = a.out or str(ROOT / "bench" / "results" / f"{date}-fuzz-{commit}.json")
    if a.keep:
        os.environ["FUZZ_KEEP"] = "1"
    runner = fc.Runner(timeout=a.timeout, wds=a.wds)
    runner.warm_up()
    results = []
    t0 = time.perf_counter()
    cases = plan(a.cases, a.seed, formats)
    for i, case in enumerate(cases, 1):
        r = runner.run(case)
        results.append(r)
        if r.outcome in fc.FAILURES:
            print(r.line()[:300], flush=True)
        if i % 500 == 0:
            bad = sum(x.outcome in fc.FAILURES for x in results)
            print(f"fuzz: {i:,}/{len(cases):,} cases, {bad:,} failing, "
                  f"{time.perf_counter() - t0:,.0f} s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t0
    s = fc.summarize(results)
    doc = {"date": date, "commit": commit, "machine": _machine(),
           "command": " ".join(["python -m bench.fuzz"] + (argv if argv is not None
                                                            else sys.argv[1:])),
           "cases": len(results), "seed": a.seed, "seconds": round(seconds, 1),
           "ms_per_case": round(1000 * seconds / max(1, len(results)), 1),
           "abandoned_threads": runner.abandoned,
           "outcomes": {k: s["total"].get(k, 0) for k in fc.OUTCOMES},
           "by_format": s["by_format"], "by_class": s["by_class"],
           "failing_classes": sorted({f"{r.case.fmt}/{r.case.cls}: {r.outcome}"
                                      for r in results if r.outcome in fc.FAILURES}),
           "failures": [r.line()[:400] for r in results if r.outcome in fc.FAILURES][:3000]}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    if not a.keep:
        shutil.rmtree(runner.workdir, ignore_errors=True)
    print(json.dumps(doc["outcomes"]))
    print(f"{len(results):,} cases in {seconds:,.0f} s ({doc['ms_per_case']} ms each); "
          f"wrote {out}")
    return 1 if any(doc["outcomes"][k] for k in fc.FAILURES) else 0


if __name__ == "__main__":
    sys.exit(main())
