"""Shared by the paper's experiments: retrain a plan over seeds, measure latency, write results."""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict
from pathlib import Path

import numpy as np

from nasrt._io import atomic_write_json, atomic_write_text
from nasrt.contract.plan import Plan
from nasrt.data.builtin import DATASETS, load_dataset
from nasrt.runtime.bench import compare
from nasrt.search.train import TrainConfig, retrain


def base_args(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=DATASETS, default="fashion-mnist")
    ap.add_argument("--data-dir", type=Path, help="dataset directory (cifar10: a cifar-10-batches-py dir)")
    ap.add_argument("--out", type=Path, required=True, help="results folder (markdown, JSON, PNG)")
    ap.add_argument("--seeds", type=int, default=3, help="trainings per configuration (default 3)")
    ap.add_argument("--train-epochs", type=int, default=5, help="retraining epochs per seed (default 5)")
    ap.add_argument("--train-limit", type=int, help="use the first N training images only")
    ap.add_argument("--runs", type=int, default=1000, help="timed calls per latency configuration")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run on synthetic data (for tests)")
    return ap


def load(args):
    if args.quick:
        args.dataset, args.seeds, args.train_epochs, args.runs = "synthetic", 1, 1, 20
    return load_dataset(args.dataset, args.data_dir, limit=args.train_limit)


def train_seeds(plan: Plan, ds, args, out: Path) -> dict:
    """Retrains plan for every seed (out/seed<k>); accuracy and size."""
    accs = []
    for seed in range(args.seeds):
        cfg, d = TrainConfig(epochs=args.train_epochs, seed=seed), out / f"seed{seed}"
        done = d / "metrics.json"  # a finished training of this plan and recipe is reused (resumable runs)
        if done.exists() and json.loads(done.read_text()).get("config") == asdict(cfg) \
                and (d / "plan.json").exists() and Plan.load(d / "plan.json") == plan:
            accs.append(json.loads(done.read_text())["test_accuracy"])
            continue
        m = retrain(plan, ds, cfg, d, show_progress=False, log=lambda *a: None)
        plan.save(d / "plan.json")
        accs.append(m["test_accuracy"])
    return {"plan": plan.to_dict(), "accuracies": accs, "acc_mean": float(np.mean(accs)),
            "acc_std": float(statistics.stdev(accs)) if len(accs) > 1 else 0.0,
            "macs": plan.macs(), "params": plan.params()}


def train_and_measure(plan: Plan, ds, args, out: Path) -> dict:
    """Retrains plan for every seed; latency of seed 0's model (nasrt 1 / P threads, ORT best)."""
    row = train_seeds(plan, ds, args, out)
    rep = compare(out / "seed0" / "model.nasrt", out / "seed0" / "model.onnx", runs=args.runs,
                  warmup=max(10, args.runs // 10))
    c = rep.configs
    nasrt_single = c["nasrt 1 thread"].median
    multi = [v.median for v in c.values() if v.engine == "nasrt" and v.threads > 1]
    ort = [v.median for v in c.values() if v.engine == "onnxruntime"]
    return {**row, "lat_nasrt_multi_us": multi[0] if multi else nasrt_single, "lat_nasrt_single_us": nasrt_single,
            "lat_ort_best_us": min(ort) if ort else None, "consistent": rep.consistent}


def structure(plan: Plan) -> str:
    """Per layer: the ops of the paths, '|' for a kept sync point: 3/5 3/5| 5/5 5/5|; s: sepconv,
    d: dconv, +: residual."""
    cells = []
    for l in range(plan.num_layers):
        ops = "/".join({"sepconv": "s", "dconv": "d"}.get(p[l].op, "") + str(p[l].kernel)
                       + ("+" if p[l].residual else "") for p in plan.paths)
        cells.append(ops + ("|" if plan.sync_after(l) else ""))
    return " ".join(cells)


def write_results(out: Path, name: str, title: str, rows: list[dict], label_key: str, ds_name: str) -> None:
    atomic_write_json(out / f"{name}.json", rows)
    lines = [f"# {title} ({ds_name})", "",
             f"| {label_key} | structure (path ops per layer, `|` = sync) | test acc (mean ± std) | MACs | "
             "nasrt multi (us) | nasrt single (us) | ORT best (us) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ort = f"{r['lat_ort_best_us']:.0f}" if r["lat_ort_best_us"] else "-"
        lines.append(f"| {r['label']} | `{structure(Plan.from_dict(r['plan']))}` | "
                     f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} | {r['macs']:,} | "
                     f"{r['lat_nasrt_multi_us']:.0f} | {r['lat_nasrt_single_us']:.0f} | {ort} |")
    atomic_write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    _plot(out / f"{name}.png", title, rows)


def _plot(path: Path, title: str, rows: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    ax[0].bar(x, [100 * r["acc_mean"] for r in rows], yerr=[100 * r["acc_std"] for r in rows], capsize=4,
              color="#2a9d8f")
    lo = min(100 * (r["acc_mean"] - r["acc_std"]) for r in rows)
    ax[0].set(xticks=x, ylabel="test accuracy (%)", title="accuracy (mean ± std over seeds)",
              ylim=(max(0, lo - 2), 100))
    ax[0].set_xticklabels(labels, rotation=15)
    w = 0.27
    ax[1].bar(x - w, [r["lat_nasrt_multi_us"] for r in rows], w, label="nasrt multi-thread", color="#2a9d8f")
    ax[1].bar(x, [r["lat_nasrt_single_us"] for r in rows], w, label="nasrt single-core", color="#8ecae6")
    ax[1].bar(x + w, [r["lat_ort_best_us"] or 0 for r in rows], w, label="ONNX Runtime best", color="#adb5bd")
    ax[1].set(xticks=x, ylabel="median latency, batch 1 (us)", title="latency")
    ax[1].set_xticklabels(labels, rotation=15)
    ax[1].legend(fontsize=8)
    fig.suptitle(title)
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    from nasrt._io import atomic_write_bytes
    atomic_write_bytes(path, buf.getvalue())


def print_table(out: Path, name: str) -> None:
    print((out / f"{name}.md").read_text())
