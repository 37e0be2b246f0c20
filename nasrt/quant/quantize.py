"""Post-training quantisation of a model file end to end (what `nasrt quantize` runs):
calibrate on training images, write the int8 model (or the parameters file), and measure
fp32 vs int8 on the test split with the numpy oracle."""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from nasrt.contract.latency import precision_note
from nasrt.contract.modelfile import KEY_DATA_CRC32, input_normalisation, latency_precision, read_model
from nasrt.contract.plan import Plan
from nasrt.data.dataset import Dataset
from nasrt.errors import DataError, ModelError, NasrtError
from nasrt.quant.calibrate import DEFAULT_METHOD, MAX_CALIB_IMAGES, calibrate, calibration_images, default_fp32
from nasrt.quant.modelfile import int8_model_bytes, write_int8_model
from nasrt.quant.params import QuantParams, validate, write_params
from nasrt.quant.reference import fp32_forward, int8_reference

LAYER_IMAGES = 256  # test images the per-layer error is measured on


@dataclass
class LayerError:
    """One activation of the int8 net against the fp32 net's: SQNR and the largest error in
    units of its scale (LSB); the logits' in real units."""
    sqnr_db: float
    max_abs_err: float


@dataclass
class QuantReport:
    qp: QuantParams
    calib_images: int
    test_images: int
    fp32_accuracy: float
    int8_accuracy: float
    agreement: float  # top-1 of int8 equal to fp32's
    layer_images: int = 0
    layers: dict[str, LayerError] = field(default_factory=dict)  # net order, then "logits"
    note: str | None = None  # the net was searched for fp32 latency (precision_note)


def sqnr_db(ref: np.ndarray, approx: np.ndarray) -> float:
    noise = float(((ref.astype(np.float64) - approx) ** 2).sum())
    return float("inf") if noise == 0 else float(10 * np.log10(float((ref.astype(np.float64) ** 2).sum()) / noise))


FP32_LAYERS = ("default", "auto", "none")  # --fp32-layers, besides a list of layer names
# A conv stays fp32 under "auto" when its int8 output's SQNR against the fp32 net is below this.
# Measured (docs/EXPERIMENTS.md, "int8 post-training quantisation"): calibrations that kept
# top-1 within 0.06 points gave 32-40 dB on every tensor; the one that lost 1.1 points gave
# 10-17 dB. 20 dB sits between the two.
AUTO_MIN_SQNR_DB = 20.0


class PrecisionTimer(Protocol):
    """The timing source of the auto choice (nasrt.runtime.precision: the runtime's tuning)."""

    def host(self) -> str: ...

    def conv_us(self, fp32_model: bytes, int8_model: bytes) -> dict[str, dict[str, dict[str, float]]]: ...

    def whole_net_us(self, a: bytes, b: bytes, paths: int) -> list[dict[str, float]]: ...


def layer_errors(plan: Plan, tensors: dict[str, np.ndarray], qp: QuantParams, xs: np.ndarray) -> dict[str, LayerError]:
    """Every activation of the int8 net against the fp32 net's on ``xs`` (net order, then "logits")."""
    _, facts = fp32_forward(plan, tensors, xs, collect=True)
    logits, codes = int8_reference(plan, qp, xs, tensors=tensors, collect=True)
    out = {}
    for k, c in codes.items():
        if k in facts:
            a = qp.activations[k]
            deq = (c.astype(np.float64) - a.zero_point) * a.scale
            out[k] = LayerError(sqnr_db(facts[k], deq), float(np.abs(facts[k] - deq).max() / a.scale))
    out["logits"] = LayerError(sqnr_db(facts["logits"], logits), float(np.abs(facts["logits"] - logits).max()))
    return out


def _r(v: float) -> float | None:
    return round(v, 3) if np.isfinite(v) else None  # JSON has no inf (an exact layer)


def choose_fp32(plan: Plan, tensors: dict[str, np.ndarray], qp: QuantParams, xs: np.ndarray, model_bytes: bytes,
                timer: PrecisionTimer, min_sqnr_db: float = AUTO_MIN_SQNR_DB) -> tuple[frozenset[str], dict]:
    """--fp32-layers auto: per conv, fp32 where it is faster in fp32 (each precision on its
    fastest backend here, as `nasrt tune` would pick) or where its int8 output's SQNR, with
    every layer in int8, is below ``min_sqnr_db`` on ``xs`` (training images: the choice is part
    of the model). Per-conv times miss the conversions between precisions (an fp32 conv among
    int8 ones dequantises its input and quantises its output), so two sets are timed as whole
    nets against the default rule on 1 and P threads: that one, and the convs kept for accuracy
    alone (every other conv int8). The faster of those not slower than the default on either
    thread count is kept, else the default. Returns the fp32 set and its record (nasrt.quant's
    fp32_choice, docs/FORMATS.md section 2)."""
    all_int8 = replace(qp, fp32=frozenset())
    errors = layer_errors(plan, tensors, all_int8, xs)
    us = timer.conv_us(model_bytes, int8_model_bytes(plan, tensors, all_int8))
    convs, faster, lossy = {}, set(), set()
    for name, t in us.items():
        f, q = min(t["fp32"].values()), min(t["int8"].values())
        e = errors.get(name)
        if f < q:
            faster.add(name)
        if e is not None and e.sqnr_db < min_sqnr_db:
            lossy.add(name)
        convs[name] = {"fp32_us": _r(f), "int8_us": _r(q), "sqnr_db": None if e is None else _r(e.sqnr_db),
                       "precision": "fp32" if name in faster | lossy else "int8"}
    default = default_fp32(plan)
    record: dict = {"rule": "auto", "host": timer.host(), "min_sqnr_db": min_sqnr_db, "convs": convs, "tried": []}
    per_conv, lossy_only = frozenset(faster | lossy), frozenset(lossy)
    best, best_us = default, float("inf")
    for cand in dict.fromkeys((per_conv, lossy_only)):  # in order, once each
        if cand == default:  # the default itself: nothing to compare
            continue
        runs = timer.whole_net_us(int8_model_bytes(plan, tensors, replace(qp, fp32=cand)),
                                  int8_model_bytes(plan, tensors, replace(qp, fp32=default)), len(plan.paths))
        record["tried"].append({"fp32": sorted(cand), "net": [
            {"threads": r["threads"], "auto_us": _r(r["a_us"]), "default_us": _r(r["b_us"])} for r in runs]})
        total = sum(r["a_us"] for r in runs)
        if all(r["a_us"] <= r["b_us"] for r in runs) and total < best_us:
            best, best_us = cand, total
    # "default": the per-conv choice lost on the whole net (and so did the accuracy-only set)
    record["kept"] = "auto" if best != default or per_conv == default else "default"
    return best, record


def quantize_model(model: str | os.PathLike, ds: Dataset, out: str | os.PathLike, calib_images: int = MAX_CALIB_IMAGES,
                   method: str = DEFAULT_METHOD, weight_bits: int = 8, seed: int = 0,
                   fp32_layers: str | Iterable[str] = "default", timer: PrecisionTimer | None = None) -> QuantReport:
    """Quantises ``model`` calibrated on ``calib_images`` training images of ``ds`` (the data it
    was trained on) and writes ``out``: the int8 model (format 3), or the parameters file when
    ``out`` ends in .json. ``fp32_layers``: the layers kept in fp32: "default" (the stem reading
    1-3 channels, ``default_fp32``), "none", "auto" (measured here by ``timer``: ``choose_fp32``)
    or the layer names. Returns the test accuracies and the per-layer error."""
    plan, tensors, meta = read_model(model)
    if ds.input_shape != plan.input:
        raise DataError(f"{model}: the model's input {list(plan.input)} is not the dataset's "
                        f"{list(ds.input_shape)} ({ds.name})")
    stored = input_normalisation(meta, plan.input[0], model)
    if stored is not None and not (np.allclose(stored[0], ds.mean, atol=1e-6) and np.allclose(stored[1], ds.std, atol=1e-6)):
        # The loader standardised with this data's statistics, the model with its training set's:
        # calibrating on other inputs than `nasrt run` feeds would give the wrong ranges.
        raise DataError(f"{model}: its training input statistics (mean {np.round(stored[0], 4).tolist()}) "
                        f"differ from {ds.name}'s here ({np.round(ds.mean, 4).tolist()}): quantise with the "
                        "data it was trained on")
    note = precision_note(latency_precision(meta, model), "int8", str(model))
    images = calibration_images(ds, calib_images, seed)
    qp = calibrate(plan, tensors, images, method, weight_bits=weight_bits)  # every layer quantised; fp32: default
    xs = ds.x_test[:LAYER_IMAGES]
    if fp32_layers == "auto":
        if timer is None:
            raise NasrtError("fp32 layers auto: needs a timer (nasrt.runtime.precision)")
        # The error that decides is measured on the calibration images: the test split only reports.
        fp32, choice = choose_fp32(plan, tensors, qp, images, Path(model).read_bytes(), timer)
    elif fp32_layers in FP32_LAYERS:  # default or none
        fp32, choice = (qp.fp32 if fp32_layers == "default" else frozenset()), {"rule": fp32_layers}
    elif isinstance(fp32_layers, str):
        raise NasrtError(f"fp32 layers: {fp32_layers!r}: must be default, auto, none or a list of layer names")
    else:
        fp32, choice = frozenset(fp32_layers), {"rule": "given"}
    qp = replace(qp, fp32=fp32, fp32_choice=choice)
    validate(qp, plan, f"{model}: fp32 layers")  # a given name that is not a conv or FC of the plan
    if Path(out).suffix == ".json":
        if not meta.get(KEY_DATA_CRC32):  # the parameters are tied to this model by its checksum
            raise ModelError(f"{model}: format 1 has no checksum: `nasrt upgrade {model}` first")
        write_params(out, qp, meta[KEY_DATA_CRC32])
    else:
        write_int8_model(out, plan, tensors, qp, meta)
    fp, q = fp32_forward(plan, tensors, ds.x_test), int8_reference(plan, qp, ds.x_test, tensors=tensors)
    y = ds.y_test
    report = QuantReport(qp, len(images), len(y), float(np.mean(fp.argmax(1) == y)), float(np.mean(q.argmax(1) == y)),
                         float(np.mean(fp.argmax(1) == q.argmax(1))), note=note)
    report.layer_images = len(xs)
    report.layers = layer_errors(plan, tensors, qp, xs)
    return report
