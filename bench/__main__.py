"""``python -m bench``: gpucurate vs the MetaCLIP reference, CPU and GPU.

Writes bench/results/<date>-<device>-<commit>.{json,md,png}. ``--smoke`` runs a
seconds-long configuration (used by the tests so the harness cannot rot).
"""

import argparse
import sys

from .suite import run, save

FULL = dict(metadata_sizes="10000,100000,500000", pools="10000,100000,1000000,10000000",
            reference_max=1_000_000, cpu_max=10_000_000, real_rows=0, reps=3, ref_reps=3, rounds=1,
            curate_pool=1_000_000)
SMOKE = dict(metadata_sizes="2000,10000", pools="500,2000", reference_max=2000, cpu_max=2000,
             real_rows=1500, reps=1, ref_reps=1, rounds=1, curate_pool=3000)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: seconds, for CI")
    ap.add_argument("--impls", default="reference,hyperscan,cpu,gpu",
                    help="comma list of reference, hyperscan, cpu, gpu (those not installed "
                         "or usable are skipped)")
    ap.add_argument("--metadata-sizes", default=None,
                    help="metadata prefixes to test (default 10000,100000,500000)")
    ap.add_argument("--pools", default=None, help="generated pool sizes (captions)")
    ap.add_argument("--reference-max", type=int, default=None,
                    help="largest pool timed with reference and hyperscan (default 1M)")
    ap.add_argument("--cpu-max", type=int, default=None,
                    help="largest pool timed with the CPU engine (default 10M)")
    ap.add_argument("--real", action=argparse.BooleanOptionalAction, default=True,
                    help="time the real caption files too (default on, when present)")
    ap.add_argument("--real-rows", type=int, default=None, help="rows per real file (0: all)")
    ap.add_argument("--curate-pool", type=int, default=None,
                    help="captions of the generated pool for the whole-curation timing")
    ap.add_argument("--threads", type=int, default=None, help="'all threads' (default: every core)")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (best is kept)")
    ap.add_argument("--ref-reps", type=int, default=None,
                    help="timed repetitions of reference and hyperscan on the real files "
                         "(best is kept; default 3; generated pools: 1)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="alternating rounds of the implementations' blocks of repetitions on "
                         "the real files (best of all is kept; default 1)")
    ap.add_argument("--out", default="bench/results", help="results directory")
    a = ap.parse_args(argv)
    base = SMOKE if a.smoke else FULL
    for k, v in base.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.argv = argv if argv is not None else sys.argv[1:]
    from gpucurate.log import configure

    configure(quiet=True)
    res = run(a)
    stem = save(res, a.out)
    sys.stdout.write(open(stem + ".md").read())
    sys.stdout.write(f"\nwrote {stem}.json/.md" + ("/.png" if res["scaling"] else "") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
