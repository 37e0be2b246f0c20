"""Post-training quantisation of a model file end to end (what `nasrt quantize` runs):
calibrate on training images, write the int8 model (or the parameters file), and measure
fp32 vs int8 on the test split with the numpy oracle."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nasrt.contract.latency import precision_note
from nasrt.contract.modelfile import KEY_DATA_CRC32, input_normalisation, latency_precision, read_model
from nasrt.data.dataset import Dataset
from nasrt.errors import DataError, ModelError
from nasrt.quant.calibrate import DEFAULT_METHOD, MAX_CALIB_IMAGES, calibrate, calibration_images
from nasrt.quant.modelfile import write_int8_model
from nasrt.quant.params import QuantParams, write_params
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


def quantize_model(model: str | os.PathLike, ds: Dataset, out: str | os.PathLike, calib_images: int = MAX_CALIB_IMAGES,
                   method: str = DEFAULT_METHOD, weight_bits: int = 8, seed: int = 0) -> QuantReport:
    """Quantises ``model`` calibrated on ``calib_images`` training images of ``ds`` (the data it
    was trained on) and writes ``out``: the int8 model (format 3), or the parameters file when
    ``out`` ends in .json. Returns the test accuracies and the per-layer error."""
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
    qp = calibrate(plan, tensors, images, method, weight_bits=weight_bits)
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
    xs = ds.x_test[:LAYER_IMAGES]
    report.layer_images = len(xs)
    _, facts = fp32_forward(plan, tensors, xs, collect=True)
    logits, codes = int8_reference(plan, qp, xs, tensors=tensors, collect=True)
    for k, c in codes.items():
        if k in facts:
            a = qp.activations[k]
            deq = (c.astype(np.float64) - a.zero_point) * a.scale
            report.layers[k] = LayerError(sqnr_db(facts[k], deq), float(np.abs(facts[k] - deq).max() / a.scale))
    report.layers["logits"] = LayerError(sqnr_db(facts["logits"], logits), float(np.abs(facts["logits"] - logits).max()))
    return report
