"""The FLOP objective vs the latency objective (measured table) at several betas:
measured nasrt multi-thread latency and accuracy of each derived net, as a
Pareto plot. Claim tested: at matched accuracy the latency objective gives
lower measured multi-thread latency.

All nets are trained first, then timed together (nasrt's default runtime, 1
and P threads) in interleaved rounds, each keeping its smallest round median:
the latency table's statistic, so predicted and measured numbers compare.

    python benchmarks/experiments/latency_vs_flops.py --out results/fmnist [--lut lut.json]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from _common import base_args, load, structure, train_seeds  # noqa: E402

from nasrt._io import atomic_write_json, atomic_write_text  # noqa: E402
from nasrt.contract.latency import predict_latency  # noqa: E402
from nasrt.contract.lut import load_lut  # noqa: E402
from nasrt.contract.plan import Plan  # noqa: E402
from nasrt.contract.space import SearchSpace  # noqa: E402
from nasrt.runtime.bench import time_runs  # noqa: E402
from nasrt.runtime.profile import profile  # noqa: E402
from nasrt.runtime.runtime import Runtime  # noqa: E402
from nasrt.search.config import SearchConfig  # noqa: E402
from nasrt.search.gradient import run_search  # noqa: E402


def main(argv=None):
    ap = base_args(__doc__)
    ap.add_argument("--betas", default="0.003,0.01,0.03,0.1", help="comma-separated beta values")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (default 10)")
    ap.add_argument("--search-epochs", type=int, default=2)
    ap.add_argument("--search-limit", type=int, default=10000)
    ap.add_argument("--lut", type=Path, help="latency table (default: profile now)")
    args = ap.parse_args(argv)
    ds = load(args)
    if args.quick:
        args.search_epochs, args.betas = 1, "0.1"
    space = SearchSpace().bind(ds.input_shape, ds.classes)
    out = args.out / "latency_vs_flops"
    if args.lut:
        lut_path = args.lut
    else:
        lut_path = out / "lut.json"
        profile(space, runs=20 if args.quick else 1000, span_s=0 if args.quick else 20,
                show_progress=False).save(lut_path)
    lut = load_lut(lut_path)
    rows = []
    for cost in ("flops", "latency"):
        for beta in (float(b) for b in args.betas.split(",")):
            d = out / f"{cost}_beta_{beta:g}"
            cfg = SearchConfig(epochs=args.search_epochs, beta=beta, cost=cost, lut=str(lut_path),
                               train_limit=args.search_limit)
            plan = run_search(SearchSpace(), ds, cfg, d, show_progress=False, log=lambda *a: None).plan
            r = train_seeds(plan, ds, args, d)
            rows.append({"label": f"{cost} beta {beta:g}", "cost": cost, "beta": beta, "dir": str(d), **r})
            print(f"{cost:8} beta {beta:<6g} {structure(plan):<28} acc {100 * r['acc_mean']:.2f}", flush=True)
    _measure(rows, lut, args.runs, min(args.rounds, args.runs))
    atomic_write_json(args.out / "latency_vs_flops.json", rows)
    T = lut.threads
    lines = [f"# FLOP vs latency objective ({ds.name})", "",
             f"| objective | beta | structure | test acc (mean ± std, {args.seeds} seeds) | MACs | "
             f"nasrt {T} threads (us) | predicted (us) | nasrt single (us) | predicted (us) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cost']} | {r['beta']:g} | `{structure(Plan.from_dict(r['plan']))}` | "
                     f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} | {r['macs']:,} | "
                     f"{r['lat_nasrt_multi_us']:.1f} | {r['pred_multi_us']:.1f} | "
                     f"{r['lat_nasrt_single_us']:.1f} | {r['pred_single_us']:.1f} |")
    atomic_write_text(args.out / "latency_vs_flops.md", "\n".join(lines) + "\n")
    _plot(args.out / "latency_vs_flops.png", rows)
    print("\n".join(lines))


def _measure(rows, lut, runs, rounds):
    """Adds measured (default runtime: balanced) and predicted latency on 1 and the table's threads."""
    T = lut.threads
    rts = []
    for r in rows:
        model = Path(r["dir"]) / "seed0" / "model.nasrt"
        rts.append({"single": Runtime(model, threads=1), "multi": Runtime(model, threads=T)})
        plan = Plan.from_dict(r["plan"])
        r["pred_single_us"], r["pred_multi_us"] = predict_latency(plan, lut, 1), predict_latency(plan, lut, T)
    best = [{k: float("inf") for k in rt} for rt in rts]
    for _ in range(rounds):
        for i, rt in enumerate(rts):
            x = np.zeros((1, *rt["single"].plan.input), np.float32)
            for k, runtime in rt.items():
                med = float(np.median(time_runs(lambda runtime=runtime, x=x: runtime.run(x), runs // rounds, 20)))
                best[i][k] = min(best[i][k], med)
    for r, b in zip(rows, best):
        r["lat_nasrt_single_us"], r["lat_nasrt_multi_us"] = b["single"], b["multi"]


def _plot(path, rows):
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nasrt._io import atomic_write_bytes
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for cost, marker, color in (("flops", "o", "#adb5bd"), ("latency", "s", "#2a9d8f")):
        pts = sorted((r["lat_nasrt_multi_us"], 100 * r["acc_mean"], r["beta"], 100 * r["acc_std"])
                     for r in rows if r["cost"] == cost)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[3] for p in pts], marker=marker,
                    color=color, capsize=3, label=f"{cost} objective")
        for x, y, b, _ in pts:
            ax.annotate(f"β={b:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set(xlabel="measured nasrt multi-thread latency (us)", ylabel="test accuracy (%)",
           title="accuracy vs measured latency")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


if __name__ == "__main__":
    main()
