"""Post-training quantisation parameters of a lowered net (docs/FORMATS.md, "int8
arithmetic"): per-output-channel symmetric int8 weights with their scales and int32
biases for every conv unit and FC, and one (scale, zero point) per activation tensor
the int8 net reads or writes. Built from calibrated ranges here, validated here."""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from nasrt._io import atomic_write_json, read_json
from nasrt.contract.lowering import head_fcs
from nasrt.contract.plan import Plan
from nasrt.errors import ModelError
from nasrt.quant.graph import conv_layers, graph_tensors

# The requantisation multiplier M = sx * sw[c] / sy (and the GAP / sum ones) every
# backend accepts: XNNPACK qc8 refuses M >= 256, qs8 aborts below 2^-32.
M_MIN, M_MAX = 2.0 ** -32, 256.0
# 8 bits: the full symmetric range. 7 bits: |w| <= 64, what oneDNN's u8 x s8 kernels
# without VNNI (vpmaddubsw, a saturating s16 pair sum) compute exactly.
WEIGHT_MAX = {8: 127, 7: 64}
INT32_MAX = 2 ** 31 - 1
f32 = np.float32


@dataclass(frozen=True)
class ActQ:
    """An activation tensor: real = scale * (q - zero_point), q in [0, 255] (u8)."""
    scale: float  # a float32 value
    zero_point: int


@dataclass(frozen=True)
class LayerQ:
    """One conv unit (OIHW weights) or FC (out, in) in int8: real weight = scale[c] * weight,
    bias in units of sx * scale[c] (sx: the scale of the tensor it reads, ``input``)."""
    input: str
    weight: np.ndarray  # int8, the float tensor's shape
    scale: np.ndarray  # float32 (out,)
    bias: np.ndarray  # int32 (out,)


@dataclass(frozen=True)
class QuantParams:
    """Everything the int8 net needs besides the plan. ``fp32`` names the conv units and FCs
    kept in float32 (they read the dequantised input and their output is quantised by the
    input rule); ``weight_bits`` is 8 (|w| <= 127) or 7 (|w| <= 64). ``fp32_choice`` records
    how ``fp32`` was chosen (``{"rule": "default" | "none" | "given" | "auto", ...}``, see
    ``nasrt.quant.quantize``; None: not recorded)."""
    activations: dict[str, ActQ]
    layers: dict[str, LayerQ]
    fp32: frozenset[str]
    weight_bits: int
    method: str
    fp32_choice: dict | None = None


FP32_RULES = ("default", "none", "given", "auto")


def check_fp32_choice(v: object, bad: Callable[[str, str], object]) -> dict:
    """The optional record of how the fp32 list was chosen: an object whose ``rule`` is one of
    FP32_RULES (the rest is for people, unchecked, as the native loader does)."""
    if not isinstance(v, dict) or v.get("rule") not in FP32_RULES:
        bad("fp32_choice", f"must be an object whose rule is {', '.join(FP32_RULES[:-1])} or {FP32_RULES[-1]}")
    return v  # type: ignore[return-value]


def quant_range(lo: float, hi: float, relu_like: bool) -> ActQ:
    """(scale, zero point) of u8 covering [lo, hi] widened to include 0, as ONNX Runtime's
    compute_scale_zp: scale = (hi - lo) / 255, zp = rne(-lo / scale); zp = 0 when lo >= 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if relu_like:
        lo = 0.0
    if hi - lo <= 0 or not math.isfinite(hi - lo):  # a constant-zero tensor: any scale is exact
        return ActQ(1.0, 0)
    s = float(f32((hi - lo) / 255))
    return ActQ(s, int(np.clip(np.rint(-lo / s), 0, 255)))


def quantize_weight(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel: sw[c] = max|W[c]| / qmax, w = rne(W / sw[c]). An all-zero
    channel gets the layer's largest scale (1 if all are zero), so every M stays in range."""
    qmax = WEIGHT_MAX[bits]
    absmax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
    s = (absmax / qmax).astype(f32)
    s[s == 0] = s.max() if s.max() > 0 else 1.0
    q = np.clip(np.rint(w / s.reshape(-1, *[1] * (w.ndim - 1))), -qmax, qmax).astype(np.int8)
    return q, s


def build_params(plan: Plan, tensors: dict[str, np.ndarray], ranges: dict[str, tuple[float, float]],
                 method: str, weight_bits: int = 8, fp32: Iterable[str] = ()) -> QuantParams:
    """QuantParams from the model's float tensors and a (min, max) per activation tensor of
    ``graph_tensors(plan)``: producers into a sum or concat get one common range (the union),
    so the merge needs no rescaling of its inputs."""
    g = graph_tensors(plan)
    acts: dict[str, ActQ] = {}
    for group in g.groups:
        lo = min(ranges[k][0] for k in group if k in ranges)
        hi = max(ranges[k][1] for k in group if k in ranges)
        q = quant_range(lo, hi, relu_like=any(k in g.relu for k in group))
        acts.update({k: q for k in group})
    layers = {name: quantize_layer(tensors, name, inp, acts[inp], weight_bits) for name, inp in conv_layers(plan).items()}
    qp = QuantParams(acts, layers, frozenset(fp32), weight_bits, method)
    validate(qp, plan)
    return qp


def quantize_layer(tensors: dict[str, np.ndarray], name: str, inp: str, x: ActQ, weight_bits: int) -> LayerQ:
    """The int8 form of layer ``name`` (reading ``inp``, quantised as ``x``) from its float tensors."""
    w, s = quantize_weight(np.asarray(tensors[name + ".weight"], f32), weight_bits)
    bias_scale = (f32(x.scale) * s).astype(np.float64)
    b = np.clip(np.rint(np.asarray(tensors[name + ".bias"], np.float64) / bias_scale), -INT32_MAX, INT32_MAX)
    return LayerQ(inp, w, s, b.astype(np.int32))


def multipliers(qp: QuantParams, plan: Plan) -> dict[str, np.ndarray]:
    """Every requantisation multiplier by the field it is derived from, in float32 as the
    rule computes it (docs/FORMATS.md): M[c] = sx * sw[c] / sy for a conv or hidden FC,
    s / sy at a sum, sa / sy and sb / sy at a residual add, sx / (n * sy) at a global
    average pool."""
    g = graph_tensors(plan)
    out = {}
    last = head_fcs(plan)[-1].prefix
    for name, lq in qp.layers.items():
        if name != last and name not in qp.fp32:
            out[f"layers[{name!r}]"] = f32(qp.activations[lq.input].scale) * lq.scale / f32(qp.activations[name].scale)
    for key, srcs in g.sums.items():
        out[f"activations[{key!r}]"] = np.array([f32(qp.activations[srcs[0]].scale) / f32(qp.activations[key].scale)])
    for key, pair in g.adds.items():
        for src in pair:
            out[f"activations[{key!r}] (from {src!r})"] = np.array(
                [f32(qp.activations[src].scale) / f32(qp.activations[key].scale)])
    for src, n in g.pools:
        out[f"activations['features'] (pool of {src!r})"] = np.array(
            [f32(qp.activations[src].scale) / (f32(n) * f32(qp.activations["features"].scale))])
    return out


def validate(qp: QuantParams, plan: Plan, source: str = "quantisation parameters") -> None:
    """Raises ModelError naming ``source`` and the field for parameters the int8 net (or a
    backend) cannot run: scales finite and > 0, zero points in [0, 255] and 0 after a ReLU,
    one scale for all producers of a sum or concat, weights int8 in +-WEIGHT_MAX[bits] (-128
    never: symmetric), int32 biases, shapes of the plan, every M in [2^-32, 256)."""
    def bad(field: str, msg: str):
        raise ModelError(f"{source}: {field}: {msg}")

    if qp.weight_bits not in WEIGHT_MAX:
        bad("weight_bits", f"must be 8 or 7, got {qp.weight_bits!r}")
    g = graph_tensors(plan)
    missing = sorted(set(g.keys) - set(qp.activations))
    if missing:
        bad(f"activations[{missing[0]!r}]", "missing")
    extra = sorted(set(qp.activations) - set(g.keys))
    if extra:
        bad(f"activations[{extra[0]!r}]", "not a tensor of the plan")
    for key, a in qp.activations.items():
        field = f"activations[{key!r}]"
        with np.errstate(over="ignore"):  # beyond float32: inf, refused here
            s = f32(a.scale) if isinstance(a.scale, float) else f32("nan")
        if not (math.isfinite(s) and s > 0):
            bad(field + ".scale", f"must be finite and > 0 in float32, got {a.scale!r}")
        if not isinstance(a.zero_point, int) or isinstance(a.zero_point, bool) or not 0 <= a.zero_point <= 255:
            bad(field + ".zero_point", f"must be an integer in [0, 255], got {a.zero_point!r}")
        if key in g.relu and a.zero_point != 0:
            bad(field + ".zero_point", f"must be 0 after a ReLU, got {a.zero_point}")
    for group in g.groups:
        if len({qp.activations[k] for k in group}) > 1:
            bad(f"activations[{group[1]!r}]", f"must have the scale and zero point of {group[0]!r} (they meet at a merge)")
    expected = conv_layers(plan)
    shapes = g.weight_shapes
    for name in sorted(set(expected) | set(qp.layers)):
        field = f"layers[{name!r}]"
        if name not in qp.layers:
            bad(field, "missing")
        if name not in expected:
            bad(field, "not a conv or FC of the plan")
        lq, shape = qp.layers[name], shapes[name]
        if lq.input != expected[name]:
            bad(field + ".input", f"must be {expected[name]!r}, got {lq.input!r}")
        if not (isinstance(lq.weight, np.ndarray) and lq.weight.dtype == np.int8 and lq.weight.shape == shape):
            bad(field + ".weight", f"must be int8 of shape {list(shape)}")
        qmax = WEIGHT_MAX[qp.weight_bits]
        if lq.weight.size and int(np.abs(lq.weight.astype(np.int16)).max()) > qmax:
            bad(field + ".weight", f"|w| must be <= {qmax} for {qp.weight_bits}-bit weights, got "
                f"{int(np.abs(lq.weight.astype(np.int16)).max())}")
        for part, dtype in (("scale", np.float32), ("bias", np.int32)):
            t = getattr(lq, part)
            if not (isinstance(t, np.ndarray) and t.dtype == dtype and t.shape == (shape[0],)):
                bad(f"{field}.{part}", f"must be {np.dtype(dtype).name} of shape [{shape[0]}]")
        if not (np.isfinite(lq.scale).all() and (lq.scale > 0).all()):
            bad(field + ".scale", "every channel's scale must be finite and > 0")
        if (lq.bias == np.iinfo(np.int32).min).any():
            bad(field + ".bias", "-2^31 is outside the symmetric int32 range")
    unknown = sorted(qp.fp32 - set(expected))
    if unknown:
        bad("fp32", f"{unknown[0]!r} is not a conv or FC of the plan")
    for field, m in multipliers(qp, plan).items():
        if not (np.isfinite(m).all() and (m >= M_MIN).all() and (m < M_MAX).all()):
            worst = m[~((m >= M_MIN) & (m < M_MAX))][0] if np.isfinite(m).all() else np.nan
            bad(field, f"requantisation multiplier {float(worst):.3g} outside [2^-32, 256)")



FORMAT, VERSION = "nasrt.qparams", 1
MAX_PARAMS_BYTES = 256 << 20  # weights as JSON integers: ~4 bytes each, a 64 M-weight net


def params_to_dict(qp: QuantParams, model_crc: str) -> dict:
    """The JSON form (docs/FORMATS.md section 6); ``model_crc`` is the float model's
    nasrt.data_crc32, so the parameters are never applied to another model."""
    return {"format": FORMAT, "version": VERSION, "model_crc32": model_crc, "method": qp.method,
            "weight_bits": qp.weight_bits, "fp32": sorted(qp.fp32),
            **({"fp32_choice": qp.fp32_choice} if qp.fp32_choice is not None else {}),
            "activations": {k: {"scale": a.scale, "zero_point": a.zero_point} for k, a in qp.activations.items()},
            "layers": {k: {"input": lq.input, "scale": lq.scale.tolist(), "bias": lq.bias.tolist(),
                           "weight": lq.weight.reshape(-1).tolist()} for k, lq in qp.layers.items()}}


def write_params(path: str | os.PathLike, qp: QuantParams, model_crc: str) -> None:
    atomic_write_json(path, params_to_dict(qp, model_crc))


def read_params(path: str | os.PathLike, plan: Plan, model_crc: str | None = None) -> QuantParams:
    """Reads and validates a parameters file for ``plan``; ModelError names the file and field."""
    src = str(path)
    d = read_json(path, ModelError, "a quantisation parameters file", MAX_PARAMS_BYTES)

    def bad(field: str, msg: str):
        raise ModelError(f"{src}: {field}: {msg}")

    def get(obj, key, kind, where):
        if not isinstance(obj, dict):
            bad(where.rstrip(".") or "file", "must be a JSON object")
        if key not in obj:
            bad(where + key, "missing")
        v = obj[key]
        if not isinstance(v, kind) or isinstance(v, bool):
            bad(where + key, f"must be {getattr(kind, '__name__', 'a number')}, got {type(v).__name__}")
        return v

    if not isinstance(d, dict) or d.get("format") != FORMAT:
        bad("format", f"expected {FORMAT!r} (not a nasrt quantisation parameters file)")
    if d.get("version") != VERSION:
        bad("version", f"unsupported version {d.get('version')!r} (this reader knows {VERSION})")
    crc = get(d, "model_crc32", str, "")
    if model_crc is not None and crc != model_crc:
        bad("model_crc32", f"{crc} is not this model's ({model_crc}): calibrated for another model")
    shapes = graph_tensors(plan).weight_shapes

    def array(v, where, dtype, size):
        if not isinstance(v, list) or len(v) != size:
            bad(where, f"must be a list of {size} numbers")
        try:
            a = np.asarray(v, np.float64)
        except (TypeError, ValueError):
            bad(where, "must hold numbers only")
        if a.ndim != 1 or (np.dtype(dtype).kind == "i" and not (
                np.isfinite(a).all() and (a == np.rint(a)).all()
                and (a >= np.iinfo(dtype).min).all() and (a <= np.iinfo(dtype).max).all())):
            bad(where, f"must hold {np.dtype(dtype).name} values")
        return a.astype(dtype)

    acts = {}
    for k, a in get(d, "activations", dict, "").items():
        acts[k] = ActQ(float(get(a, "scale", (int, float), f"activations[{k!r}].")),
                       get(a, "zero_point", int, f"activations[{k!r}]."))
    layers = {}
    for k, lq in get(d, "layers", dict, "").items():
        where = f"layers[{k!r}]."
        if k not in shapes:
            bad(where[:-1], "not a conv or FC of the plan")
        shape = shapes[k]
        w = array(get(lq, "weight", list, where), where + "weight", np.int8, int(np.prod(shape)))
        layers[k] = LayerQ(get(lq, "input", str, where), w.reshape(shape),
                           array(get(lq, "scale", list, where), where + "scale", np.float32, shape[0]),
                           array(get(lq, "bias", list, where), where + "bias", np.int32, shape[0]))
    fp32 = get(d, "fp32", list, "")
    if not all(isinstance(v, str) for v in fp32):
        bad("fp32", "must be a list of layer names")
    choice = check_fp32_choice(d["fp32_choice"], bad) if "fp32_choice" in d else None
    qp = QuantParams(acts, layers, frozenset(fp32), get(d, "weight_bits", int, ""), get(d, "method", str, ""), choice)
    validate(qp, plan, src)
    return qp
