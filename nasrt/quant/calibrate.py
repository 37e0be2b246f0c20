"""Calibration: activation ranges of the fp32 net over training images, by ONNX Runtime's
calibrators on nasrt's own fp32 ONNX (its tensor names are the lowered names), or by the
numpy fp32 reference for min/max without onnxruntime."""
from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from nasrt.contract.onnx_graph import build_onnx
from nasrt.contract.plan import Plan
from nasrt.data.dataset import Dataset
from nasrt.errors import DataError, NasrtError
from nasrt.quant.graph import FEATURES, INPUT, graph_tensors
from nasrt.quant.params import QuantParams, build_params
from nasrt.quant.reference import fp32_forward

METHODS = ("minmax", "percentile", "entropy", "numpy-minmax")
# Chosen by measurement (docs/EXPERIMENTS.md, "int8 post-training quantisation").
DEFAULT_METHOD = "percentile"
MAX_CALIB_IMAGES = 512
PERCENTILE = 99.999  # ORT's default


def calibration_images(ds: Dataset, n: int = MAX_CALIB_IMAGES, seed: int = 0) -> np.ndarray:
    """``n`` training images drawn without replacement (never the test split)."""
    if not 1 <= n <= MAX_CALIB_IMAGES:
        raise DataError(f"{ds.name}: calibration images: must be 1..{MAX_CALIB_IMAGES}, got {n}")
    x = ds.x_train
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=min(n, len(x)), replace=False))
    return np.asarray(x[idx], np.float32)


def default_fp32(plan: Plan) -> frozenset[str]:
    """The convs kept in fp32 unless asked otherwise: those reading the net input when it has
    1-3 channels (int8 was 1.05-3x slower than fp32 there on every backend measured)."""
    if plan.input[0] > 3:
        return frozenset()
    return frozenset(k for k, src in graph_tensors(plan).inputs.items() if src == INPUT)


def _onnx_names(model) -> dict[str, str | list[str]]:
    """nasrt activation name -> the fp32 ONNX graph's tensor of the same value."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out: dict[str, str | list[str]] = {INPUT: "input"}
    pools: list[str] = []
    for n in model.graph.node:
        y = n.output[0]
        nxt = consumers.get(y, [])
        if n.op_type == "Relu":
            continue
        if n.op_type in ("Conv", "Gemm") and y != "logits":
            name = n.input[1][:-len(".weight")]
            relu = [c for c in nxt if c.op_type == "Relu"]
            out[name] = relu[0].output[0] if relu else y
        elif n.op_type == "Sum":
            out[y.rsplit(".sum_", 1)[0]] = y
        elif n.op_type == "Add":  # a residual block's add: its value is the ReLU after it
            out[y.rsplit("_", 1)[0]] = next(c for c in nxt if c.op_type == "Relu").output[0]
        elif n.op_type == "Concat" and ".concat_" in y:
            out[y.rsplit(".concat_", 1)[0] + ".concat"] = y
        elif n.op_type == "GlobalAveragePool":
            pools.append(y)
    out[FEATURES] = pools  # the features' range: the union of every path's pool
    unmatched = sorted(k for k, v in out.items() if isinstance(v, str) and v != "input" and not producer.get(v))
    if unmatched:  # the ONNX graph and the lowering disagree: a bug, not bad input
        raise NasrtError(f"the fp32 ONNX graph has no tensor for {unmatched[0]!r} of the lowering")
    return out


def _ort_ranges(plan: Plan, tensors, images: np.ndarray, method: str) -> dict[str, tuple[float, float]]:
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    class Reader(CalibrationDataReader):
        def __init__(self, xs):
            self.it = iter({"input": x[None]} for x in xs)

        def get_next(self):
            return next(self.it, None)

    model = build_onnx(plan, tensors)
    kind = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[method]
    extra = {"percentile": {"percentile": PERCENTILE},
             # ORT's default (128 bins, 128 levels) leaves the KL search one candidate: the
             # min/max. Its histogram is symmetric, so 512 levels are 256 on the positive
             # side: the u8 codes of a ReLU tensor.
             "entropy": {"num_bins": 2048, "num_quantized_bins": 512}}.get(method, {})
    with tempfile.TemporaryDirectory(prefix="nasrt-calib-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model.SerializeToString())
        cal = create_calibrator(path, None, augmented_model_path=Path(tmp) / "aug.onnx",
                                calibrate_method=kind, extra_options=extra)
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
            cal.collect_data(Reader(images))
            data = cal.compute_data()

    def rng(name):
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in data[name].range_value)
        return lo, hi

    out = {}
    for key, name in _onnx_names(model).items():
        if isinstance(name, list):
            rs = [rng(n) for n in name]
            out[key] = (min(r[0] for r in rs), max(r[1] for r in rs))
        else:
            out[key] = rng(name)
    return out


def numpy_ranges(plan: Plan, tensors, images: np.ndarray) -> dict[str, tuple[float, float]]:
    """Min/max of every activation of the numpy fp32 net over ``images``."""
    _, acts = fp32_forward(plan, tensors, images, collect=True)
    acts[INPUT] = images
    return {k: (float(v.min()), float(v.max())) for k, v in acts.items() if k != "logits"}


def calibrate(plan: Plan, tensors: dict[str, np.ndarray], images: np.ndarray, method: str = DEFAULT_METHOD,
              weight_bits: int = 8, fp32: Iterable[str] | None = None) -> QuantParams:
    """QuantParams of the model (``tensors``: BN-folded float32, as read_model gives them)
    calibrated on ``images`` (float32 (N, C, H, W), normalised like the model's input, at
    most 512 training images: ``calibration_images``). ``method``: minmax, percentile
    (99.999th) or entropy by ONNX Runtime's calibrators, or numpy-minmax (no onnxruntime).
    ``fp32``: the conv units / FCs kept in float (default: ``default_fp32``)."""
    if method not in METHODS:
        raise NasrtError(f"calibration method: {method!r} unknown (known: {', '.join(METHODS)})")
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != tuple(plan.input) or not 1 <= len(images) <= MAX_CALIB_IMAGES:
        raise DataError(f"calibration images: expected 1..{MAX_CALIB_IMAGES} of shape {list(plan.input)}, "
                        f"got {list(images.shape)}")
    ranges = (numpy_ranges(plan, tensors, images) if method == "numpy-minmax"
              else _ort_ranges(plan, tensors, images, method))
    return build_params(plan, tensors, ranges, method, weight_bits, default_fp32(plan) if fp32 is None else fp32)
