"""int8 post-training quantisation of a trained model, measured with the numpy int8
reference (nasrt.quant): test accuracy fp32 vs int8 per calibration method and seed of the
calibration subset (512 training images), and the per-layer error (SQNR of every
activation tensor vs fp32, on the first --layer-images test images).

    python benchmarks/int8_ptq.py runs/train/model.nasrt --dataset fashion-mnist --json out.json

Results: docs/EXPERIMENTS.md, "int8 post-training quantisation"."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from nasrt.contract.modelfile import read_model
from nasrt.data.builtin import load_dataset
from nasrt.quant import calibrate, calibration_images, fp32_forward, int8_reference


def sqnr_db(ref: np.ndarray, approx: np.ndarray) -> float:
    noise = float(((ref.astype(np.float64) - approx) ** 2).sum())
    return float("inf") if noise == 0 else 10 * np.log10(float((ref.astype(np.float64) ** 2).sum()) / noise)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir")
    ap.add_argument("--methods", default="minmax,percentile,entropy")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--calib-images", type=int, default=512)
    ap.add_argument("--test-images", type=int, help="the first N test images (default: all)")
    ap.add_argument("--layer-images", type=int, default=1000)
    ap.add_argument("--json")
    a = ap.parse_args(argv)

    plan, tensors, _ = read_model(a.model)
    ds = load_dataset(a.dataset, a.data_dir)
    x, y = ds.x_test[:a.test_images], ds.y_test[:a.test_images]
    fp = fp32_forward(plan, tensors, x)
    out = {"model": a.model, "test_images": len(x), "fp32_acc": float((fp.argmax(1) == y).mean()), "runs": []}
    print(f"fp32 test accuracy {out['fp32_acc']:.4f} ({len(x)} images)", flush=True)

    def run(method, seed, bits=8, fp32=None, label=""):
        qp = calibrate(plan, tensors, calibration_images(ds, a.calib_images, seed), method, weight_bits=bits, fp32=fp32)
        q = int8_reference(plan, qp, x, tensors=tensors)
        r = {"method": method, "seed": seed, "weight_bits": bits, "fp32_layers": sorted(qp.fp32), "label": label,
             "acc": float((q.argmax(1) == y).mean()), "top1_agree": float((q.argmax(1) == fp.argmax(1)).mean()),
             "logit_max_abs_err": float(np.abs(q - fp).max()), "logit_sqnr_db": sqnr_db(fp, q)}
        out["runs"].append(r)
        print(f"{method:10s} seed {seed} {bits}-bit fp32={sorted(qp.fp32)} {label}: int8 acc {r['acc']:.4f} "
              f"(delta {r['acc'] - out['fp32_acc']:+.4f}) agree {r['top1_agree']:.4f} "
              f"logits SQNR {r['logit_sqnr_db']:.1f} dB", flush=True)
        return qp

    methods = a.methods.split(",")
    first = {}
    for m in methods:
        for s in range(a.seeds):
            qp = run(m, s)
            first.setdefault(m, qp)
    run(methods[0], 0, fp32=(), label="all int8")
    run(methods[0], 0, bits=7, label="7-bit weights")

    xs = x[:a.layer_images]
    _, facts = fp32_forward(plan, tensors, xs, collect=True)
    out["layers"] = {}
    for m, qp in first.items():
        logits, codes = int8_reference(plan, qp, xs, tensors=tensors, collect=True)
        rows = {}
        for k, q in codes.items():
            if k not in facts:
                continue
            act = qp.activations[k]
            deq = (q.astype(np.float64) - act.zero_point) * act.scale
            rows[k] = {"sqnr_db": sqnr_db(facts[k], deq), "max_abs_err_lsb": float(np.abs(facts[k] - deq).max() / act.scale)}
        rows["logits"] = {"sqnr_db": sqnr_db(facts["logits"], logits), "max_abs_err_lsb": float("nan")}
        out["layers"][m] = rows
        print(f"per-layer SQNR (dB) / max |err| (LSB), {m}, seed 0, first {len(xs)} test images:")
        for k, v in rows.items():
            print(f"  {k:24s} {v['sqnr_db']:6.1f}  {v['max_abs_err_lsb']:6.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
