"""The FLOP objective vs the latency objective (measured table) at several betas:
measured nasrt multi-thread latency and accuracy of each derived net, as a
Pareto plot. Claim tested: at matched accuracy the latency objective gives
lower measured multi-thread latency.

    python benchmarks/experiments/latency_vs_flops.py --out results/fmnist [--lut lut.json]
"""
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).parent))

from _common import base_args, load, structure, train_and_measure  # noqa: E402
from nasrt._io import atomic_write_json, atomic_write_text  # noqa: E402
from nasrt.latency import load_lut, profile, save_lut  # noqa: E402
from nasrt.search import SearchConfig, run_search  # noqa: E402
from nasrt.space import SearchSpace  # noqa: E402


def main(argv=None):
    ap = base_args(__doc__)
    ap.add_argument("--betas", default="0.01,0.1,1", help="comma-separated beta values")
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
        load_lut(lut_path)
    else:
        lut_path = out / "lut.json"
        save_lut(profile(space, runs=20 if args.quick else 300, show_progress=False), lut_path)
    rows = []
    for cost in ("flops", "latency"):
        for beta in (float(b) for b in args.betas.split(",")):
            d = out / f"{cost}_beta_{beta:g}"
            cfg = SearchConfig(epochs=args.search_epochs, beta=beta, cost=cost, lut=str(lut_path),
                               train_limit=args.search_limit)
            plan = run_search(SearchSpace(), ds, cfg, d, show_progress=False, log=lambda *a: None)
            r = train_and_measure(plan, ds, args, d)
            rows.append({"label": f"{cost} beta {beta:g}", "cost": cost, "beta": beta, **r})
            print(f"{cost:8} beta {beta:<6g} {structure(plan):<28} acc {100 * r['acc_mean']:.2f}  "
                  f"multi {r['lat_nasrt_multi_us']:.1f} us", flush=True)
    atomic_write_json(args.out / "latency_vs_flops.json", rows)
    lines = [f"# FLOP vs latency objective ({ds.name})", "",
             "| objective | beta | structure | test acc | MACs | nasrt multi (us) | nasrt single (us) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        from nasrt.plan import Plan
        lines.append(f"| {r['cost']} | {r['beta']:g} | `{structure(Plan.from_dict(r['plan']))}` | "
                     f"{100 * r['acc_mean']:.2f} | {r['macs']:,} | {r['lat_nasrt_multi_us']:.1f} | "
                     f"{r['lat_nasrt_single_us']:.1f} |")
    atomic_write_text(args.out / "latency_vs_flops.md", "\n".join(lines) + "\n")
    _plot(args.out / "latency_vs_flops.png", rows)
    print("\n".join(lines))


def _plot(path, rows):
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nasrt._io import atomic_write_bytes
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for cost, marker, color in (("flops", "o", "#adb5bd"), ("latency", "s", "#2a9d8f")):
        pts = sorted((r["lat_nasrt_multi_us"], 100 * r["acc_mean"], r["beta"]) for r in rows if r["cost"] == cost)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=f"{cost} objective")
        for x, y, b in pts:
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
