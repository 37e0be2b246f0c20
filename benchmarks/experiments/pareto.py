"""Derived nets against the hand-designed anchors: accuracy vs measured 2-thread latency.

The anchors (benchmarks/experiments/anchors/*.json, plan-v1) are retrained with the same
recipe, data and epochs as the derived nets. Steps, in OUT/pareto_<dataset>/:
1. the anchors of the dataset, timed on nasrt's runtime with P threads (random weights: the
   latency of a net does not depend on its weights);
2. `nasrt profile` of the search space here (lut.json, or --lut);
3. one latency-budget search per fraction of the fastest anchor's latency (--budgets), the
   budget in the table's plain-median units;
4. every plan retrained over --seeds seeds;
5. every seed-0 model timed in interleaved rounds on nasrt (1 and P threads) and the anchors on
   ONNX Runtime too (its best thread count), each keeping its smallest round median.
A finished step's files are reused when the command runs again (resumable).

    python benchmarks/experiments/pareto.py --dataset fashion-mnist --train-epochs 15 --out docs/results
    python benchmarks/experiments/pareto.py --dataset cifar10 --data-dir ../shared/data/cifar10-jpg \\
        --train-epochs 30 --out docs/results

Writes OUT/pareto_<dataset>.json, .md (the table) and .png (the plot).
"""
import json
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
from nasrt.runtime.bench import compare, time_runs, write_random_model  # noqa: E402
from nasrt.runtime.profile import profile  # noqa: E402
from nasrt.runtime.runtime import Runtime  # noqa: E402
from nasrt.search.config import SearchConfig  # noqa: E402
from nasrt.search.gradient import run_search  # noqa: E402

ANCHORS = Path(__file__).parent / "anchors"
# The anchors of each dataset (file stem -> label).
DATASET_ANCHORS = {"fashion-mnist": {"hardmaru_fmnist": "hardmaru 2-conv"},
                   "cifar10": {"resnet8_cifar10": "ResNet-8 (MLPerf Tiny)"}}


def anchor_plans(ds) -> dict[str, Plan]:
    """The dataset's anchors; another dataset (--quick: synthetic) gets all of them at its input shape."""
    names = DATASET_ANCHORS.get(ds.name) or {k: v for d in DATASET_ANCHORS.values() for k, v in d.items()}
    plans = {}
    for stem, label in names.items():
        d = json.loads((ANCHORS / f"{stem}.json").read_text())
        d.update(input=list(ds.input_shape), classes=ds.classes)
        plans[label] = Plan.from_dict(d, str(ANCHORS / f"{stem}.json"))
    return plans


def runtime(model: Path, threads: int) -> Runtime:
    """nasrt with `threads` threads, or as many as the net has paths (a thread runs whole paths:
    a one-path anchor runs on one)."""
    return Runtime(model, threads=min(threads, Runtime(model, threads=1).plan.num_paths))


def best_median(runtimes: list[Runtime], runs: int, rounds: int) -> list[float]:
    """Interleaved rounds over all runtimes; each keeps its smallest round median (us)."""
    best = [float("inf")] * len(runtimes)
    for _ in range(rounds):
        for i, rt in enumerate(runtimes):
            x = np.zeros((1, *rt.plan.input), np.float32)
            med = float(np.median(time_runs(lambda rt=rt, x=x: rt.run(x), max(1, runs // rounds), 20)))
            best[i] = min(best[i], med)
    return best


def main(argv=None):
    ap = base_args(__doc__)
    ap.add_argument("--budgets", default="0.4,0.6,0.9",
                    help="latency budgets as fractions of the fastest anchor's P-thread latency (default 0.4,0.6,0.9)")
    ap.add_argument("--search-epochs", type=int, default=4)
    ap.add_argument("--residual", choices=("none", "search", "all"), default="search")
    ap.add_argument("--widths", default="0.5,1,1.5", help="the space's width multipliers (default 0.5,1,1.5)")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (default 10)")
    ap.add_argument("--lut", type=Path, help="latency table of the space on this host (default: profile now)")
    args = ap.parse_args(argv)
    ds = load(args)
    if args.quick:
        args.search_epochs, args.budgets, args.rounds = 1, "0.9", 2
    out = args.out / f"pareto_{ds.name}"
    out.mkdir(parents=True, exist_ok=True)
    space = SearchSpace(residual=args.residual, widths=tuple(float(w) for w in args.widths.split(","))
                        ).bind(ds.input_shape, ds.classes)
    threads = min(space.paths, 2)

    # 1. The anchors' latency sets the budgets.
    anchors = anchor_plans(ds)
    for label, plan in anchors.items():
        d = out / label.split()[0].lower()
        if not (d / "random.nasrt").exists():
            d.mkdir(parents=True, exist_ok=True)
            write_random_model(plan, d / "random.nasrt")
    anchor_us = best_median([runtime(out / label.split()[0].lower() / "random.nasrt", threads)
                             for label in anchors], args.runs, args.rounds)
    fastest = min(anchor_us)
    print(f"anchors on nasrt, {threads} threads: " + ", ".join(f"{k} {v:.1f} us" for k, v in zip(anchors, anchor_us)))

    # 2. The space's latency table.
    lut_path = args.lut or out / "lut.json"
    if not Path(lut_path).exists():
        profile(space, threads=threads, runs=20 if args.quick else 1000, span_s=0 if args.quick else 20,
                show_progress=False).save(lut_path)
    lut = load_lut(lut_path)

    # 3-4. A search per budget; every plan retrained over the seeds.
    rows = []
    for frac in (float(b) for b in args.budgets.split(",")):
        budget = frac * fastest
        d = out / f"budget_{frac:g}"
        plan_file = d / "plan.json"
        if plan_file.exists():
            plan = Plan.load(plan_file)
        else:
            cfg = SearchConfig(epochs=args.search_epochs, cost="latency", lut=str(lut_path), budget_us=budget,
                               seed=0)
            plan = run_search(space, ds, cfg, d, show_progress=False, log=lambda *a: None).plan
        rows.append({"label": f"nasrt, budget {frac:g}x ({budget:.0f} us)", "kind": "derived", "dir": str(d),
                     "budget_us": budget, "pred_multi_us": predict_latency(plan, lut, threads),
                     **train_seeds(plan, ds, args, d)})
        print(f"budget {budget:7.1f} us  {structure(plan):<32} acc {100 * rows[-1]['acc_mean']:.2f}", flush=True)
    for label, plan in anchors.items():
        d = out / label.split()[0].lower()
        rows.append({"label": label, "kind": "anchor", "dir": str(d), **train_seeds(plan, ds, args, d)})
        print(f"anchor {label:<24} acc {100 * rows[-1]['acc_mean']:.2f}", flush=True)

    # 5. Everything timed together; the anchors on ONNX Runtime too.
    models = [Path(r["dir"]) / "seed0" / "model.nasrt" for r in rows]
    multi = best_median([runtime(m, threads) for m in models], args.runs, args.rounds)
    single = best_median([Runtime(m, threads=1) for m in models], args.runs, args.rounds)
    for r, m, s in zip(rows, multi, single):
        r["lat_nasrt_multi_us"], r["lat_nasrt_single_us"], r["lat_ort_best_us"] = m, s, None
        if r["kind"] == "anchor":
            rep = compare(Path(r["dir"]) / "seed0" / "model.nasrt", Path(r["dir"]) / "seed0" / "model.onnx",
                          runs=args.runs, warmup=max(10, args.runs // 10))
            ort = [v.median for v in rep.configs.values() if v.engine == "onnxruntime"]
            r["lat_ort_best_us"] = min(ort) if ort else None
    for r in rows:  # dominated: an anchor with a derived net at least as accurate and faster
        if r["kind"] == "anchor":
            r["dominated_by"] = [d["label"] for d in rows if d["kind"] == "derived"
                                 and d["acc_mean"] >= r["acc_mean"] and d["lat_nasrt_multi_us"] < r["lat_nasrt_multi_us"]]
    atomic_write_json(args.out / f"pareto_{ds.name}.json", rows)
    _table(args.out / f"pareto_{ds.name}.md", rows, ds.name, args, threads)
    _plot(args.out / f"pareto_{ds.name}.png", rows, ds.name, threads)
    print((args.out / f"pareto_{ds.name}.md").read_text())


def _table(path: Path, rows, ds_name, args, threads):
    lines = [f"# Derived nets vs hand-designed anchors ({ds_name})", "",
             f"Retrained {args.train_epochs} epochs, {args.seeds} seeds each; latency: batch 1, smallest of "
             f"{args.rounds} interleaved round medians.", "",
             f"| net | structure (path ops per layer, `|` = sync) | test acc (mean ± std) | MACs | params | "
             f"nasrt {threads} threads¹ (us) | predicted (us) | nasrt 1 thread (us) | ORT best (us) | dominated by |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pred = f"{r['pred_multi_us']:.1f}" if "pred_multi_us" in r else "-"
        ort = f"{r['lat_ort_best_us']:.1f}" if r.get("lat_ort_best_us") else "-"
        dom = ", ".join(r.get("dominated_by", [])) or ("-" if r["kind"] == "derived" else "none")
        lines.append(f"| {r['label']} | `{structure(Plan.from_dict(r['plan']))}` | "
                     f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} | {r['macs']:,} | {r['params']:,} | "
                     f"{r['lat_nasrt_multi_us']:.1f} | {pred} | {r['lat_nasrt_single_us']:.1f} | {ort} | {dom} |")
    lines += ["", "¹ nasrt runs one path per thread: a one-path net (the anchors) runs on one. ORT best: the "
                  "fastest of its sequential and parallel executors at 1 and 2 threads."]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _plot(path: Path, rows, ds_name, threads):
    from nasrt.plots import _plt, save_png
    fig, ax = _plt().subplots(figsize=(6, 4.5))
    der = sorted((r for r in rows if r["kind"] == "derived"), key=lambda r: r["lat_nasrt_multi_us"])
    ax.errorbar([r["lat_nasrt_multi_us"] for r in der], [100 * r["acc_mean"] for r in der],
                yerr=[100 * r["acc_std"] for r in der], marker="s", color="#2a9d8f", capsize=3,
                label="nasrt derived (latency budgets)")
    for r in rows:
        if r["kind"] == "anchor":
            ax.errorbar([r["lat_nasrt_multi_us"]], [100 * r["acc_mean"]], yerr=[100 * r["acc_std"]], marker="o",
                        color="#e76f51", capsize=3, linestyle="none")
            ax.annotate(r["label"], (r["lat_nasrt_multi_us"], 100 * r["acc_mean"]), textcoords="offset points",
                        xytext=(5, -10), fontsize=8)
            if r.get("lat_ort_best_us"):
                ax.plot([r["lat_ort_best_us"]], [100 * r["acc_mean"]], marker="x", color="#e76f51",
                        linestyle="none")
    ax.plot([], [], marker="o", color="#e76f51", linestyle="none", label="anchor on nasrt")
    ax.plot([], [], marker="x", color="#e76f51", linestyle="none", label="anchor on ONNX Runtime (best)")
    ax.set(xlabel=f"measured latency, batch 1, {threads} threads (us)", ylabel="test accuracy (%)",
           title=f"{ds_name}: derived nets vs hand-designed anchors")
    ax.legend(fontsize=8)
    save_png(fig, path)


if __name__ == "__main__":
    main()
