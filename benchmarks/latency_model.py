"""Validates the latency model against what a user measures: profile the default space
on this machine (or read a table), then compare the predictions with the plain median
of many consecutive Runtime.run calls of held-out random plans, on 1 and 2 threads.

    python benchmarks/latency_model.py [--precision fp32|int8] [--lut LUT] [--plans 12] [--calls 1000]
                                       [--out results/latency_model]

The plans are drawn with their own seed and nothing of the model is fitted to them:
the predictors read only the table. An int8 run quantises every plan with fixed
parameters (every activation's range fixed: latency does not depend on the values) and
needs an int8 table (`nasrt profile --precision int8 --out lut.int8.json`, then
--lut). Per plan and configuration it records the plain median of --calls calls
(what the model predicts), the table's statistic (smallest round median of 10
interleaved rounds) for comparison, and the prediction by part. About 2 minutes with
--lut, 3 when it profiles; run it on a quiet machine.
"""
import argparse
import json
import random
import tempfile
from pathlib import Path

import numpy as np

from nasrt.contract.latency import latency_parts, predict_latency
from nasrt.contract.lut import LatencyTable
from nasrt.contract.modelfile import write_model
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.contract.space import SearchSpace
from nasrt.quant import build_params, default_fp32, write_int8_model
from nasrt.quant.graph import INPUT, graph_tensors
from nasrt.runtime.bench import random_tensors, time_runs
from nasrt.runtime.host import host_info
from nasrt.runtime.profile import profile
from nasrt.runtime.runtime import Runtime
from nasrt.runtime.schedule import predict_schedule_latency

HELD_OUT_SEED = 20  # not the seed of any earlier validation run


def random_plan(space, rng):
    paths = tuple(tuple(Block(*rng.choice(space.candidates), s, c) for c, s in zip(space.channels, space.strides))
                  for _ in range(space.paths))
    syncs = tuple(Sync(l, space.merge) for l in range(space.layers) if rng.random() < 0.4)
    return Plan(space.input, space.classes, space.stem_block, paths, syncs, space.hidden)


def write_plan_model(plan: Plan, path: Path, precision: str, seed: int) -> None:
    """A model of random weights; int8: quantised with fixed ranges (input [-2, 2], every other
    activation [0, 4]), the default fp32 layers kept, as `nasrt quantize` writes it."""
    tensors = random_tensors(plan, seed)
    if precision == "fp32":
        write_model(path, plan, tensors)
        return
    ranges = {k: (-2.0, 2.0) if k == INPUT else (0.0, 4.0) for k in graph_tensors(plan).keys}
    write_int8_model(path, plan, tensors, build_params(plan, tensors, ranges, "minmax", fp32=default_fp32(plan)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                    help="the plans' precision (int8: quantised with fixed parameters; needs an int8 --lut)")
    ap.add_argument("--lut", type=Path, help="the latency table of the default space at Fashion-MNIST's shape "
                                             "(default: profile it now, fp32 only)")
    ap.add_argument("--plans", type=int, default=12)
    ap.add_argument("--calls", type=int, default=1000, help="consecutive timed calls per plan and thread count")
    ap.add_argument("--out", type=Path, default=Path("results/latency_model"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    space = SearchSpace().bind((1, 28, 28), 10)
    if args.lut:
        lut = LatencyTable.load(args.lut)
    elif args.precision == "fp32":
        lut = profile(space, show_progress=False)
        lut.save(args.out / "lut.json")
    else:
        raise SystemExit("--precision int8: give the int8 table with --lut (nasrt profile --precision int8)")
    if lut.precision != args.precision:
        raise SystemExit(f"--lut {args.lut}: a table of {lut.precision} latency, not {args.precision}")
    T = lut.threads
    rng = random.Random(HELD_OUT_SEED)
    x = np.zeros((1, *space.input), np.float32)
    plans = [random_plan(space, rng) for _ in range(args.plans)]
    configs = {"1": (1, True), f"{T}": (T, True), f"{T} unbalanced": (T, False)}
    with tempfile.TemporaryDirectory() as d:
        for i, plan in enumerate(plans):
            write_plan_model(plan, Path(d) / f"m{i}.nasrt", args.precision, seed=i)
        # adapt=False: the configuration the model predicts, fixed (a busy core must not switch it).
        runtimes = [{k: Runtime(Path(d) / f"m{i}.nasrt", threads=t, balance=b, adapt=False)
                     for k, (t, b) in configs.items()} for i in range(len(plans))]
    # What a user measures: the median of many consecutive calls.
    median = [{k: float(np.median(time_runs(lambda rt=rt: rt.run(x), args.calls, 50))) for k, rt in rts.items()}
              for rts in runtimes]
    # The table's statistic, for comparison: rounds interleaved over all plans, smallest round median.
    best = [{k: float("inf") for k in rts} for rts in runtimes]
    for _ in range(10):
        for i, rts in enumerate(runtimes):
            for k, rt in rts.items():
                best[i][k] = min(best[i][k], float(np.median(time_runs(lambda rt=rt: rt.run(x), args.calls // 10, 10))))
    rows = []
    for i, plan in enumerate(plans):
        pred = {"1": predict_latency(plan, lut, 1), f"{T}": predict_schedule_latency(plan, lut, T),
                f"{T} unbalanced": predict_latency(plan, lut, T)}
        row = {"plan": plan.to_dict(), "summary": plan.summary().splitlines()[0], "pred": pred,
               "parts_1": latency_parts(plan, lut, 1), f"parts_{T}": latency_parts(plan, lut, T),
               "median": median[i], "min_round_median": best[i]}
        rows.append(row)
        print(f"plan {i:2d}: " + " | ".join(f"{k} thr pred {pred[k]:6.1f} median {median[i][k]:6.1f} "
                                           f"(best round {best[i][k]:6.1f})" for k in configs), flush=True)
    summary = {}
    for k in configs:
        for stat in ("median", "min_round_median"):
            err = [(r["pred"][k] - r[stat][k]) / r[stat][k] for r in rows]
            summary[f"{k} threads vs {stat}"] = {"mean_abs_err": float(np.mean(np.abs(err))),
                                                  "max_abs_err": float(np.max(np.abs(err))),
                                                  "mean_signed_err": float(np.mean(err))}
    for k, v in summary.items():
        print(f"{k:<40} mean |error| {100 * v['mean_abs_err']:5.1f}%  max {100 * v['max_abs_err']:5.1f}%  "
              f"(signed mean {100 * v['mean_signed_err']:+5.1f}%)")
    out = args.out / f"latency_model_{args.precision}.json"
    out.write_text(json.dumps({"precision": args.precision, "plans": args.plans, "calls": args.calls,
                               "held_out_seed": HELD_OUT_SEED, "lut": str(args.lut or args.out / "lut.json"),
                               "lut_settings": lut.settings, "summary": summary, "rows": rows,
                               "machine": host_info()}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
