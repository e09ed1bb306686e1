"""The commands after a run: ``plan`` (the t for a target size) and
``rebalance`` (curate the survivors of download and filtering again), and the
``--outputs`` flags of ``curate`` and ``balance``."""

from __future__ import annotations

from ..config import DEFAULT_BATCH_BYTES


def add_output_args(p) -> None:
    p.add_argument("--outputs", default="parquet", metavar="LIST",
                   help="what to write, a comma list of parquet (curated/, the default), "
                        "webdataset (curated-wds/NNNNN.tar and sizes.json: the kept samples "
                        "copied from the input tars, their .json gaining entry_ids; needs tar "
                        "shards or download folders) and uids (uids.npy: DataComp's subset "
                        "file, from --key-column's 32-hex-digit uids)")
    p.add_argument("--samples-per-shard", type=int, default=10000, metavar="N",
                   help="webdataset: kept samples per output tar (default 10000)")


def add_after_commands(sub) -> None:
    p = sub.add_parser("plan", help="the t whose expected curated size is nearest a target",
                       description="From the saved matches of a count or curate run "
                                   "(--save-matches): the integer t whose expected curated "
                                   "size, sum over captions of 1 - prod(1 - min(1, t/count[e])), "
                                   "is nearest --target-size, and a table of t against "
                                   "expected size.")
    p.add_argument("dir", metavar="DIR", help="the --out of a count or curate run made with "
                                              "--save-matches")
    p.add_argument("--target-size", type=int, required=True, metavar="N",
                   help="the curated size wanted (captions)")
    p.add_argument("--json", action="store_true",
                   help='end stdout with one line {"t": T, "expected_curated": E}')
    p.add_argument("--quiet", action="store_true", help="log warnings and errors only")

    p = sub.add_parser("rebalance", help="curate again the survivors of download and filtering",
                       description="Recount a run's saved matches over the keys in --survivors "
                                   "alone (no matching again), then balance and write the kept "
                                   "survivors, as a curate of the survivors alone would.")
    p.add_argument("dir", metavar="DIR", help="a count or curate run made with --save-matches")
    p.add_argument("--survivors", required=True, metavar="FILE",
                   help="the keys that survived: a parquet file (or directory of parts) or "
                        "jsonl file with the column --key-column, or a text file of one key "
                        "per line")
    p.add_argument("--key-column", required=True, metavar="K",
                   help="the pool's key column (its values are the survivor keys); it keys "
                        "the pinned draw")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--t", type=int, default=None, help="the balancing threshold")
    g.add_argument("--tail-fraction", type=float, default=None, metavar="P",
                   help="t as MetaCLIP 2's p_to_t of the survivors' counts")
    g.add_argument("--target-size", type=int, default=None, metavar="N",
                   help="t whose expected curated size over the survivors (with a group column, "
                        "each group's chosen caption) is nearest N")
    p.add_argument("--out", required=True, metavar="OUT2", help="output directory")
    add_output_args(p)
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None,
                   help="where pass 2 decides (default: $GPUCURATE_DEVICE, else auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU engine threads")
    p.add_argument("--batch-bytes", type=int, default=DEFAULT_BATCH_BYTES,
                   help=f"bytes per batch of the columns read (default {DEFAULT_BATCH_BYTES})")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--address", default=None, help="with --executor ray: the cluster to join")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run with another configuration found in OUT2")
    p.add_argument("--no-report", action="store_true", help="do not write OUT2/report")
    p.add_argument("--quiet", action="store_true", help="log warnings and errors only")


def run_after(a) -> int:
    if a.cmd == "plan":
        from ..pipeline.plan import format_plan, plan, plan_json

        d = plan(a.dir, a.target_size)
        print(format_plan(d, a.target_size))
        if a.json:
            print(plan_json(d))
        return 0
    from ..pipeline.rebalance import rebalance

    s = rebalance(a.dir, a.survivors, a.key_column, a.out, t=a.t,
                  tail_fraction=a.tail_fraction, target_size=a.target_size, outputs=a.outputs,
                  samples_per_shard=a.samples_per_shard, device=a.device, threads=a.threads,
                  executor=a.executor, address=a.address, overwrite=a.overwrite,
                  report=not a.no_report, batch_bytes=a.batch_bytes)
    pct = 100.0 * s["curated"] / s["pool"] if s["pool"] else 0.0
    print(f"pool        {s['pool']:>12,}  (the survivors' rows)\n"
          f"null        {s['null_captions']:>12,}\n"
          f"matched     {s['matched']:>12,}\n"
          f"curated     {s['curated']:>12,}  ({pct:.1f}% of the survivors, t = {s['t']:,})")
    sv = s["survivors"]
    print(f"survivors   {sv['keys']:>12,} keys, {sv['rows']:,} rows in the pool, "
          f"{sv['not_in_pool']:,} keys in no shard")
    print(f"outputs in {a.out}")
    return 0
