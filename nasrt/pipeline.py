"""nasrt pipeline: search -> derive -> retrain -> export -> bench, with a report folder."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nasrt._io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from nasrt.contract.space import SearchSpace
    from nasrt.data.dataset import Dataset
    from nasrt.search.config import SearchConfig, TrainConfig


def run_pipeline(space: SearchSpace, ds: Dataset, search: SearchConfig, train: TrainConfig, out: Path,
                 runs: int = 2000, resume: bool = False, show_progress: bool = True) -> dict:
    """Search, derive, retrain, export and bench into the report folder `out`.

    Returns {"metrics", "bench", "plan", "latency"}; writes plan.json, model.nasrt,
    model.onnx, metrics.json, bench.json, summary.md and three PNGs.
    """
    from nasrt.plots import plot_latency, plot_plan, plot_search
    from nasrt.runtime.bench import compare, format_table
    from nasrt.search.gradient import run_search
    from nasrt.search.train import retrain

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    print(f"[1/4] data: {ds.name}")
    print(f"[2/4] search ({search.epochs} epochs) -> {out}/plan.json")
    t = time.time()
    plan = run_search(space, ds, search, out, resume=resume, show_progress=show_progress)
    t_search = time.time() - t
    print(plan.summary())
    print(f"[3/4] retrain ({train.epochs} epochs) and export -> model.nasrt, model.onnx")
    t = time.time()
    metrics = retrain(plan, ds, train, out, resume=resume, show_progress=show_progress)
    t_train = time.time() - t
    print(f"[4/4] bench: nasrt vs its peers ({runs} runs per configuration)")
    report = compare(out / "model.nasrt", out / "model.onnx", runs=runs, warmup=200)
    atomic_write_json(out / "bench.json", report)

    history = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines() if line]
    plot_search(history, out / "search.png")
    plot_plan(plan, out / "net.png")
    plot_latency(report, out / "latency.png")

    table = format_table(report)
    c = report["configs"]
    warned = plan.meta.get("search", {}).get("warnings", [])
    summary = "\n".join([
        f"# nasrt pipeline: {ds.name}", "",
        *([f"**Warning:** {w}" for w in warned] + [""] if warned else []),
        "## Derived plan", "", "```", plan.summary(), "```", "",
        "## Accuracy and size", "",
        f"- test accuracy (torch): {metrics['test_accuracy']:.4f}; exported model under the nasrt runtime: "
        f"{metrics['runtime_test_accuracy']:.4f}",
        f"- MACs {metrics['macs']:,}, params {metrics['params']:,}",
        f"- search {t_search:.0f} s ({len(history)} epochs), retrain {t_train:.0f} s ({metrics['epochs']} epochs), "
        f"total {time.time() - t_all:.0f} s", "",
        "## Latency (batch 1)", "", "```", table, "```", "",
        "![search](search.png)", "", "![net](net.png)", "", "![latency](latency.png)", ""])
    atomic_write_text(out / "summary.md", summary)
    print("\n" + summary.split("## Derived plan")[1].replace("```", "").strip())
    print(f"\nreport: {out}/summary.md (plots: search.png, net.png, latency.png)")
    return {"metrics": metrics, "bench": report, "plan": plan.to_dict(),
            "latency": {k: v["median"] for k, v in c.items()}}
