"""nasrt pipeline: search -> derive -> retrain -> export -> bench, with a report folder."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from nasrt._io import atomic_write_json, atomic_write_text
from nasrt.contract.latency import precision_note, searched_precision

if TYPE_CHECKING:
    from nasrt.contract.space import SearchSpace
    from nasrt.data.dataset import Dataset
    from nasrt.search.config import SearchConfig, TrainConfig
    from nasrt.search.strategies import Settings


INT8_AGREE_IMAGES = 64  # test images the bench checks nasrt int8's top-1 on (random inputs leave its ranges)


def quantize_and_compare(out: Path, ds: Dataset) -> dict:
    """`nasrt train --int8` and `nasrt pipeline --int8`: OUT/model.nasrt quantised as `nasrt
    quantize` does (default calibration and fp32 layers), both models' test accuracy and
    latency here (nasrt, batch 1, one thread per path, interleaved rounds), written to
    OUT/int8.json (returned) beside OUT/model.int8.nasrt."""
    import numpy as np

    from nasrt.quant import quantize_model
    from nasrt.runtime.bench import time_runs
    from nasrt.runtime.runtime import Runtime
    r = quantize_model(out / "model.nasrt", ds, out / "model.int8.nasrt")
    rts = {k: Runtime(out / f"model{k}.nasrt", adapt=False) for k in ("", ".int8")}
    x = ds.x_test[:1]
    rounds: dict[str, list[float]] = {k: [] for k in rts}
    for _ in range(5):
        for k, rt in rts.items():
            rounds[k].append(float(np.median(time_runs(lambda rt=rt: rt.run(x), 200, 20))))
    us = {k: min(v) for k, v in rounds.items()}
    threads = rts[""].threads
    report = {"fp32": {"model": "model.nasrt", "test_accuracy": r.fp32_accuracy, "latency_us": us[""]},
              "int8": {"model": "model.int8.nasrt", "test_accuracy": r.int8_accuracy, "latency_us": us[".int8"],
                       "calibration": r.qp.method, "calib_images": r.calib_images, "fp32_layers": sorted(r.qp.fp32)},
              "threads": threads, "latency": "min over 5 rounds of the median of 200 calls, batch 1"}
    atomic_write_json(out / "int8.json", report)
    print(f"int8: test accuracy {r.int8_accuracy:.4f} (fp32 {r.fp32_accuracy:.4f}), latency on {threads} "
          f"thread{'s' if threads > 1 else ''} {us['.int8']:.1f} us (fp32 {us['']:.1f} us, "
          f"{us['.int8'] / us['']:.2f}x)")
    print(f"wrote {out}/model.int8.nasrt, int8.json")
    return report


def run_pipeline(space: SearchSpace, ds: Dataset, search: SearchConfig, train: TrainConfig, settings: Settings,
                 strategy: str = "gradient", runs: int = 2000, int8: bool = False) -> dict:
    """Search with `strategy`, derive, retrain, export (and with ``int8`` quantise:
    ``quantize_and_compare``) and bench into the report folder settings.out.

    Returns {"metrics", "bench" (a BenchReport), "plan", "latency", "int8" (int8.json, or
    None)}; writes plan.json, model.nasrt, model.onnx, metrics.json, bench.json, summary.md,
    net.png, latency.png, for a search with epochs (gradient) search.png, and with ``int8``
    model.int8.nasrt and int8.json (the bench then times nasrt int8 too).
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
    note = precision_note(searched_precision(plan), "int8" if int8 else "fp32", "the plan")
    if note:
        print(note)
    print(plan.summary())
    print(f"[3/4] retrain ({train.epochs} epochs) and export -> model.nasrt, model.onnx")
    t = time.time()
    metrics = retrain(plan, ds, train, out, resume=settings.resume, show_progress=settings.show_progress)
    t_train = time.time() - t
    q = None
    if int8:
        print("[3/4] int8: quantise -> model.int8.nasrt, int8.json")
        q = quantize_and_compare(out, ds)
    print(f"[4/4] bench: nasrt vs its peers ({runs} runs per configuration)")
    report = compare(out / "model.nasrt", out / "model.onnx", runs=runs, warmup=200,
                     **({"int8_model": out / "model.int8.nasrt", "agree_images": ds.x_test[:INT8_AGREE_IMAGES]}
                        if int8 else {}))
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
        *(["## int8 (model.int8.nasrt, int8.json)", "",
           f"- test accuracy (numpy int8 reference): {q['int8']['test_accuracy']:.4f} (fp32 "
           f"{q['fp32']['test_accuracy']:.4f}); calibration {q['int8']['calibration']} on "
           f"{q['int8']['calib_images']} training images, fp32 layers: {', '.join(q['int8']['fp32_layers']) or 'none'}",
           f"- latency on {q['threads']} thread{'s' if q['threads'] > 1 else ''}: int8 {q['int8']['latency_us']:.1f} us, "
           f"fp32 {q['fp32']['latency_us']:.1f} us ({q['int8']['latency_us'] / q['fp32']['latency_us']:.2f}x; "
           f"{q['latency']})", ""] if q else []),
        "## Latency (batch 1)", "", "```", table, "```", "",
        *[line for f in plots for line in (f"![{f[:-4]}]({f})", "")]])
    atomic_write_text(out / "summary.md", summary)
    print("\n" + summary.split("## Derived plan")[1].replace("```", "").strip())
    print(f"\nreport: {out}/summary.md (plots: {', '.join(plots)})")
    return {"metrics": metrics, "bench": report, "plan": plan.to_dict(),
            "latency": {k: v.median for k, v in report.configs.items()}, "int8": q}
