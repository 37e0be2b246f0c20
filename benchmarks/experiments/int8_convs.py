"""Per-conv table of fp32 vs int8 (docs/EXPERIMENTS.md, "int8 per conv"): every conv of a model
timed in fp32 and in int8 on every kernel backend here (oneDNN, XNNPACK, the reference), which
precision won, and the whole-net effect of the choices, measured with the runtime's own tuning
machinery (nasrt.runtime.precision: `nasrt tune`'s per-conv timing and whole-net check).

    python benchmarks/experiments/int8_convs.py runs/pipeline/model.nasrt --out runs/int8_convs
    python benchmarks/experiments/int8_convs.py --out runs/int8_convs   # default + paper-sized plans, random weights

A float MODEL is quantised with every conv in int8 (numpy min/max on random images of its input
shape unless --int8 gives its int8 model: the timings do not depend on the parameters' values).
Whole net (min of round medians, batch 1, 1 and P threads, built-in kernel rule): the int8 model
of the default rule (the stem reading 1-3 channels in fp32) against fp32, every conv in int8 and
the per-conv winners (what `nasrt quantize --fp32-layers auto` tries) against the default rule.
Writes OUT/int8_convs.json and OUT/int8_convs.md. About 10-40 s per model on 2 cores.
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from nasrt._io import atomic_write_json, atomic_write_text
from nasrt.contract.modelfile import read_model
from nasrt.contract.plan import Plan
from nasrt.quant import calibrate, default_fp32, int8_model_bytes, read_int8_model
from nasrt.runtime import precision
from nasrt.runtime.bench import paper_sized_plan, write_random_model

ROOT = Path(__file__).resolve().parents[2]


def measure(model: Path, int8: Path | None) -> dict:
    plan, tensors, _ = read_model(model)
    if int8 is not None:
        qp = read_int8_model(int8)[1]
    else:
        xs = np.random.default_rng(0).standard_normal((64, *plan.input)).astype(np.float32)
        qp = calibrate(plan, tensors, xs, "numpy-minmax")
    all_int8 = replace(qp, fp32=frozenset())
    us = precision.conv_us(model.read_bytes(), int8_model_bytes(plan, tensors, all_int8), reference=True)
    convs, winners = [], set()
    for name, t in us.items():
        # Which precision won: each on its fastest library (the reference kernels are the oracle,
        # timed for the table only, as `nasrt tune` never picks them over a compiled library).
        best = {p: min((b for b in t[p] if b != "reference" or len(t[p]) == 1), key=t[p].get) for p in ("fp32", "int8")}
        won = "fp32" if t["fp32"][best["fp32"]] < t["int8"][best["int8"]] else "int8"
        if won == "fp32":
            winners.add(name)
        convs.append({"name": name, **t, "best": best, "won": won,
                      "int8_over_fp32": t["int8"][best["int8"]] / t["fp32"][best["fp32"]]})
    default = default_fp32(plan)
    nets = {k: int8_model_bytes(plan, tensors, replace(qp, fp32=frozenset(s)))
            for k, s in (("default", default), ("all int8", ()), ("per-conv winners", winners))}
    paths = len(plan.paths)
    whole = {"int8 default vs fp32": precision.whole_net_us(nets["default"], model.read_bytes(), paths),
             "all int8 vs int8 default": precision.whole_net_us(nets["all int8"], nets["default"], paths),
             "per-conv winners vs int8 default": precision.whole_net_us(nets["per-conv winners"], nets["default"],
                                                                        paths)}
    return {"model": str(model), "default_fp32": sorted(default), "winners_fp32": sorted(winners),
            "convs": convs, "whole_net": whole}


def table(r: dict) -> str:
    backends = sorted({b for c in r["convs"] for p in ("fp32", "int8") for b in c[p]})
    cols = [f"{p} {b}" for p in ("fp32", "int8") for b in backends]
    lines = [f"### {r['model']}", "", "| conv | " + " | ".join(cols) + " | won | int8/fp32 (best of each) |",
             "|---" * (len(cols) + 3) + "|"]
    for c in r["convs"]:
        cells = [f"{c[p][b]:.1f}" if b in c[p] else "-" for p in ("fp32", "int8") for b in backends]
        lines.append(f"| {c['name']} | " + " | ".join(cells) + f" | {c['won']} | {c['int8_over_fp32']:.2f} |")
    lines += ["", f"fp32 by the default rule: {', '.join(r['default_fp32']) or 'none'}; per-conv winners in fp32: "
              f"{', '.join(r['winners_fp32']) or 'none'}", "", "| whole net (us, a vs b) | threads | a | b | a/b |",
              "|---|---|---|---|---|"]
    for k, runs in r["whole_net"].items():
        lines += [f"| {k} | {x['threads']} | {x['a_us']:.1f} | {x['b_us']:.1f} | {x['a_us'] / x['b_us']:.2f} |"
                  for x in runs]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=Path, nargs="*", help="float model.nasrt files (default: the default "
                    "Fashion-MNIST plan and the paper-sized plan with random weights)")
    ap.add_argument("--int8", type=Path, action="append", default=[],
                    help="the int8 model of each MODEL, in order (default: quantised on random images)")
    ap.add_argument("--out", type=Path, required=True, help="results folder")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nasrt-int8-convs-") as tmp:
        models = list(args.models)
        if not models:
            for name, plan in (("default", Plan.load(ROOT / "docs" / "default_plan.json")),
                               ("paper-sized", paper_sized_plan())):
                write_random_model(plan, Path(tmp) / f"{name}.nasrt", seed=0)
                models.append(Path(tmp) / f"{name}.nasrt")
        int8s = args.int8 + [None] * (len(models) - len(args.int8))
        results = [measure(m, q) for m, q in zip(models, int8s)]
    host = precision.host()
    text = f"host: {host}\n\n" + "\n".join(table(r) for r in results)
    print(text)
    atomic_write_json(args.out / "int8_convs.json", {"host": host, "models": results,
                                                     "timing": "per conv: min over 5 rounds of the median of 60 "
                                                               "calls; whole net: of 200 calls, batch 1"})
    atomic_write_text(args.out / "int8_convs.md", text)
    print(f"wrote {args.out}/int8_convs.json, int8_convs.md")


if __name__ == "__main__":
    main()
