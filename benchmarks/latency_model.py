"""Validates the latency model: profile the default space on this machine, then
compare predict_latency with the measured Runtime latency of random plans.

    python benchmarks/latency_model.py [--plans 20] [--runs 2000] [--rounds 10] [--out results/latency_model]

Measured latency uses the table's statistic: every plan and configuration is
timed in interleaved rounds and keeps its smallest round median.

Run it on a quiet machine (nothing else busy): multi-thread timings suffer most.
"""
import argparse
import json
import random
import tempfile
from pathlib import Path

import numpy as np

from nasrt.contract.latency import predict_latency
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.contract.space import SearchSpace
from nasrt.runtime.bench import time_runs, write_random_model
from nasrt.runtime.profile import profile
from nasrt.runtime.runtime import Runtime
from nasrt.runtime.schedule import predict_schedule_latency


def random_plan(space, rng):
    paths = tuple(tuple(Block(*rng.choice(space.candidates), s, c) for c, s in zip(space.channels, space.strides))
                  for _ in range(space.paths))
    syncs = tuple(Sync(l, space.merge) for l in range(space.layers) if rng.random() < 0.4)
    return Plan(space.input, space.classes, space.stem_block, paths, syncs,
                space.hidden)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plans", type=int, default=20)
    ap.add_argument("--runs", type=int, default=2000, help="timed calls per plan and configuration")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds (each keeps its median)")
    ap.add_argument("--out", type=Path, default=Path("results/latency_model"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    space = SearchSpace().bind((1, 28, 28), 10)
    lut = profile(space, show_progress=False)
    again = profile(space, show_progress=False)
    lut.save(args.out / "lut.json")
    again.save(args.out / "lut_repeat.json")
    agreement = _agreement(lut, again)
    print(f"two profiles: per-entry relative difference median {100 * agreement['median']:.1f}%, "
          f"max {100 * agreement['max']:.1f}% ({agreement['worst']}); entries within 5%: "
          f"{agreement['within_5pct']}/{agreement['entries']} (directly timed op/head entries: "
          f"{agreement['direct_within_5pct']}/{agreement['direct_entries']}); largest absolute difference "
          f"{agreement['max_abs_diff_us']:.2f} us ({agreement['worst_abs']})", flush=True)
    T = lut.threads
    rng = random.Random(0)
    x = np.zeros((1, *space.input), np.float32)
    plans, runtimes = [], []
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.plans):
            plans.append(random_plan(space, rng))
            write_random_model(plans[-1], Path(d) / f"m{i}.nasrt", seed=i)
            runtimes.append({"1": Runtime(Path(d) / f"m{i}.nasrt", threads=1),
                             f"{T}": Runtime(Path(d) / f"m{i}.nasrt", threads=T, balance=False),
                             f"{T} balanced": Runtime(Path(d) / f"m{i}.nasrt", threads=T, balance=True)})
    # The table's statistic: rounds interleaved over every plan and configuration, smallest round median.
    best = [{k: float("inf") for k in rts} for rts in runtimes]
    for _ in range(args.rounds):
        for i, rts in enumerate(runtimes):
            for k, rt in rts.items():
                med = float(np.median(time_runs(lambda rt=rt: rt.run(x), args.runs // args.rounds, 20)))
                best[i][k] = min(best[i][k], med)
    rows = []
    for i, plan in enumerate(plans):
        row = {"plan": plan.to_dict(), "pred_1": predict_latency(plan, lut, 1), f"pred_{T}": predict_latency(plan, lut, T),
               f"pred_{T} balanced": predict_schedule_latency(plan, lut, T)}
        row.update({f"meas_{k}": v for k, v in best[i].items()})
        rows.append(row)
        print(f"plan {i:2d}: 1 thread pred {row['pred_1']:6.1f} meas {row['meas_1']:6.1f} | "
              f"{T} threads pred {row[f'pred_{T}']:6.1f} meas {row[f'meas_{T}']:6.1f} "
              f"| balanced pred {row[f'pred_{T} balanced']:6.1f} meas {row[f'meas_{T} balanced']:6.1f}", flush=True)
    summary = {}
    for pred, meas in (("pred_1", "meas_1"), (f"pred_{T}", f"meas_{T}"), (f"pred_{T}", f"meas_{T} balanced"),
                       (f"pred_{T} balanced", f"meas_{T} balanced")):
        err = [abs(r[pred] - r[meas]) / r[meas] for r in rows]
        summary[f"{pred} vs {meas}"] = {"mean_rel_err": float(np.mean(err)), "max_rel_err": float(np.max(err))}
    for k, v in summary.items():
        print(f"{k:<34} mean {100 * v['mean_rel_err']:5.1f}%  max {100 * v['max_rel_err']:5.1f}%")
    (args.out / "latency_model.json").write_text(json.dumps({"summary": summary, "profile_agreement": agreement,
                                                             "rows": rows, "machine": lut.machine}, indent=1))


def _entries(lut):
    """Every measured number of a table, by a readable name."""
    out = {}
    for l, row in enumerate(lut.ops_us):
        for op, v in row.items():
            out[f"layer {l} {op}"] = v
    for t, v in lut.stem_us.items():
        out[f"stem threads {t}"] = v
    out["head"] = lut.head_us
    for merge, per in lut.sync_us.items():
        for t, vals in per.items():
            for l, v in enumerate(vals):
                out[f"sync {merge} layer {l} threads {t}"] = v
    for t, v in lut.overhead_us.items():
        out[f"call overhead threads {t}"] = v
    return out


def _agreement(a, b):
    ea, eb = _entries(a), _entries(b)
    rel = {k: abs(ea[k] - eb[k]) / max(ea[k], eb[k], 1e-9) for k in ea}
    worst = max(rel, key=rel.get)
    absd = {k: abs(ea[k] - eb[k]) for k in ea}
    direct = [k for k in rel if k.startswith("layer") or k == "head"]  # timed directly, not A/B differences
    return {"entries": len(rel), "within_5pct": sum(v <= 0.05 for v in rel.values()),
            "direct_entries": len(direct), "direct_within_5pct": sum(rel[k] <= 0.05 for k in direct),
            "max_abs_diff_us": max(absd.values()), "worst_abs": max(absd, key=absd.get),
            "median": float(np.median(list(rel.values()))), "max": rel[worst], "worst": worst,
            "per_entry": rel}


if __name__ == "__main__":
    main()
