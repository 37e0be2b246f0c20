"""nasrt pipeline: search -> derive -> retrain -> export -> bench, with a report folder."""
from __future__ import annotations

import json
import time
from pathlib import Path

from nasrt._io import atomic_write_json, atomic_write_text


def run_pipeline(args) -> dict:
    from nasrt.bench import compare, format_table
    from nasrt.cli import _load_data, _search_config, _space_from_args, _train_config
    from nasrt.plots import plot_latency, plot_plan, plot_search
    from nasrt.search import run_search
    from nasrt.train import retrain

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    show = not args.quiet
    t_all = time.time()
    print(f"[1/4] loading {args.dataset}")
    ds = _load_data(args)
    print(f"[2/4] search ({args.search_epochs} epochs) -> {out}/plan.json")
    t = time.time()
    plan = run_search(_space_from_args(args), ds, _search_config(args), out, resume=args.resume,
                      show_progress=show)
    t_search = time.time() - t
    print(plan.summary())
    print(f"[3/4] retrain ({args.train_epochs} epochs) and export -> model.nasrt, model.onnx")
    t = time.time()
    metrics = retrain(plan, ds, _train_config(args), out, resume=args.resume, show_progress=show)
    t_train = time.time() - t
    print(f"[4/4] bench: nasrt vs ONNX Runtime ({args.runs} runs per configuration)")
    report = compare(out / "model.nasrt", out / "model.onnx", runs=args.runs, warmup=200)
    atomic_write_json(out / "bench.json", report)

    history = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines() if line]
    plot_search(history, out / "search.png")
    plot_plan(plan, out / "net.png")
    plot_latency(report, out / "latency.png")

    table = format_table(report)
    c = report["configs"]
    summary = "\n".join([
        f"# nasrt pipeline: {ds.name}", "",
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
