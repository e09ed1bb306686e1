"""Language ID speed: gpucurate's predictor of the bundled fastText model
against fastText itself (``fasttext-predict``), one thread, same process.

For every caption file in ../shared/data/captions, the distinct captions (as
a run identifies them) are labelled by fastText's batch prediction
(``multilinePredict``, given the Python strings it needs, made before the
clock starts) and by ``gpucurate.lidmodel`` over the Arrow column; the labels
are checked equal before any time is kept; best of ``--repeat``.

    python -m bench.lid [--repeat 3] [--out bench/results]

Writes ``<out>/<date>-lid-<commit>.json`` (machine, date, commit, command).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import sys
import time

import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.suite import commit as git_commit  # noqa: E402
from bench.workloads import cpu_model, shared_data  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.lid", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args(argv)
    from gpucurate import lang
    from gpucurate.lidmodel import LidModel

    data = shared_data()
    if data is None:
        print("no caption files: set GPUCURATE_SHARED_DATA", file=sys.stderr)
        return 2
    path = lang.lid_model_path()
    t0 = time.perf_counter()
    model = LidModel(path)
    load_s = time.perf_counter() - t0
    ft = lang.lid_model()
    rows = []
    for f in sorted(glob.glob(os.path.join(data, "captions", "*.parquet"))):
        col = pq.read_table(f, columns=["text"]).column("text").combine_chunks()
        uniq = pc.unique(col.filter(pc.is_valid(col)))
        texts = uniq.to_pylist()
        lines = [t.replace("\n", " ").replace("\r", " ") + "\n" for t in texts]
        batch = ft.f.multilinePredict
        best_ft = best_gc = float("inf")
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            res = batch(lines, 1, 0.0, "strict")
            best_ft = min(best_ft, time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = model.predict(uniq)
            best_gc = min(best_gc, time.perf_counter() - t0)
        want = [(x[0] if isinstance(x, tuple) else x) for x in (res[0] if isinstance(res, tuple)
                                                                 else res)]
        names = model.labels + ["", ""]
        same = [w[0][len("__label__"):] if w else "" for w in want] == \
            [names[i] for i in got.tolist()]
        if not same:
            print(f"{os.path.basename(f)}: labels differ from fastText's", file=sys.stderr)
            return 1
        n = len(texts)
        rows.append({"file": os.path.basename(f), "distinct_captions": n,
                     "fasttext_s": best_ft, "gpucurate_s": best_gc,
                     "fasttext_per_s": n / best_ft, "gpucurate_per_s": n / best_gc,
                     "speedup": best_ft / best_gc, "labels_equal": same})
        print(f"{rows[-1]['file']:36s} {n:>8,d}  fastText {n / best_ft / 1e3:6.0f}k/s  "
              f"gpucurate {n / best_gc / 1e3:6.0f}k/s  {best_ft / best_gc:4.1f}x  labels equal")
    commit = git_commit()
    res = {"date": datetime.date.today().isoformat(), "commit": commit,
           "command": "python -m bench.lid " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                       "python": platform.python_version()},
           "model": os.path.basename(path), "model_load_s": load_s, "threads": 1,
           "files": rows}
    os.makedirs(a.out, exist_ok=True)
    dest = os.path.join(a.out, f"{res['date']}-lid-{commit}.json")
    with open(dest, "w") as fh:
        json.dump(res, fh, indent=1)
    print("wrote", dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
