"""nasrt pipeline: search -> derive -> retrain -> export -> bench, with a report folder."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nasrt._io import atomic_write_text
from nasrt.contract.latency import precision_note, searched_precision

if TYPE_CHECKING:
    from nasrt.contract.space import SearchSpace
    from nasrt.data.dataset import Dataset
    from nasrt.search.config import SearchConfig, TrainConfig
    from nasrt.search.strategies import Settings


def run_pipeline(space: SearchSpace, ds: Dataset, search: SearchConfig, train: TrainConfig, settings: Settings,
                 strategy: str = "gradient", runs: int = 2000) -> dict:
    """Search with `strategy`, derive, retrain, export and bench into the report folder
    settings.out.

    Returns {"metrics", "bench" (a BenchReport), "plan", "latency"}; writes plan.json,
    model.nasrt, model.onnx, metrics.json, bench.json, summary.md, net.png, latency.png and,
    for a search with epochs (gradient), search.png.
    """
    from nasrt.plots import plot_latency, plot_plan, plot_search
    from nasrt.runtime.bench import compare, format_table
    from nasrt.search.strategies import search as run_strategy
    from nasrt.search.train import retrain

    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    what = f"{search.epochs} epochs" if strategy == "gradient" else f"{strategy}, {settings.flash.samples} samples"
    print(f"[1/4] data: {ds.name}")
    print(f"[2/4] search ({what}) -> {out}/plan.json")
    t = time.time()
    result = run_strategy(strategy, space, ds, search, settings)
    plan, history = result.plan, result.history
    t_search = time.time() - t
    note = precision_note(searched_precision(plan), "fp32", "the plan")  # the pipeline exports fp32
    if note:
        print(note)
    print(plan.summary())
    print(f"[3/4] retrain ({train.epochs} epochs) and export -> model.nasrt, model.onnx")
    t = time.time()
    metrics = retrain(plan, ds, train, out, resume=settings.resume, show_progress=settings.show_progress)
    t_train = time.time() - t
    print(f"[4/4] bench: nasrt vs its peers ({runs} runs per configuration)")
    report = compare(out / "model.nasrt", out / "model.onnx", runs=runs, warmup=200)
    report.save(out / "bench.json")

    plots = ["net.png", "latency.png"]
    if history:
        plot_search(history, out / "search.png")
        plots.insert(0, "search.png")
    plot_plan(plan, out / "net.png")
    plot_latency(report, out / "latency.png")

    table = format_table(report)
    warned = plan.meta.get("search", {}).get("warnings", [])
    summary = "\n".join([
        f"# nasrt pipeline: {ds.name}", "",
        *([f"**Warning:** {w}" for w in warned] + [""] if warned else []),
        "## Derived plan", "", "```", plan.summary(), "```", "",
        "## Accuracy and size", "",
        f"- test accuracy (torch): {metrics['test_accuracy']:.4f}; exported model under the nasrt runtime: "
        f"{metrics['runtime_test_accuracy']:.4f}",
        f"- MACs {metrics['macs']:,}, params {metrics['params']:,}",
        f"- search {t_search:.0f} s ({f'{len(history)} epochs' if history else what}), "
        f"retrain {t_train:.0f} s ({metrics['epochs']} epochs), total {time.time() - t_all:.0f} s", "",
        "## Latency (batch 1)", "", "```", table, "```", "",
        *[line for f in plots for line in (f"![{f[:-4]}]({f})", "")]])
    atomic_write_text(out / "summary.md", summary)
    print("\n" + summary.split("## Derived plan")[1].replace("```", "").strip())
    print(f"\nreport: {out}/summary.md (plots: {', '.join(plots)})")
    return {"metrics": metrics, "bench": report, "plan": plan.to_dict(),
            "latency": {k: v.median for k, v in report.configs.items()}}
