"""The int8 model file (model format 3, docs/FORMATS.md section 2): the float model's
layout with every int8 layer's weights as I8, its per-channel scales F32 and its bias I32,
the layers kept in fp32 as F32, and the activations' parameters in metadata nasrt.quant.
Written and read here; natively by csrc/runtime/model.cpp."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nasrt._io import atomic_write_bytes, parse_json
from nasrt.contract import modelfile as mf
from nasrt.contract.modelfile import KEY_QUANT, KEY_VERSION, VERSION_INT8
from nasrt.contract.plan import Plan
from nasrt.errors import ModelError
from nasrt.quant.graph import conv_layers, graph_tensors
from nasrt.quant.params import WEIGHT_MAX, ActQ, LayerQ, QuantParams, check_fp32_choice, quantize_layer, validate

f32 = np.float32
INT32_MIN = np.iinfo(np.int32).min


def quant_metadata(qp: QuantParams) -> str:
    """The nasrt.quant JSON: a float32 scale as a double (its repr reads back exactly)."""
    return mf.canonical_json({"weight_bits": qp.weight_bits, "method": qp.method, "fp32": sorted(qp.fp32),
                              "activations": {k: {"scale": float(f32(a.scale)), "zero_point": a.zero_point}
                                              for k, a in qp.activations.items()},
                              **({"fp32_choice": qp.fp32_choice} if qp.fp32_choice is not None else {})})


def int8_model_bytes(plan: Plan, tensors: dict[str, np.ndarray], qp: QuantParams,
                     metadata: dict[str, str] | None = None, source: str = "int8 model") -> bytes:
    """The bytes of the int8 model of ``plan`` quantised by ``qp``; ``tensors``: the float
    model's (only the layers in ``qp.fp32`` are read). ``metadata``'s derived keys (format,
    plan, graph, checksum, nasrt.quant) and its fp32 test accuracy are not copied."""
    validate(qp, plan, source)
    shapes = graph_tensors(plan).weight_shapes
    out: dict[str, np.ndarray] = {}
    for name, lq in qp.layers.items():
        if name in qp.fp32:
            for part, shape in ((".weight", shapes[name]), (".bias", (shapes[name][0],))):
                t = tensors.get(name + part)
                if t is None or t.shape != shape or not np.isfinite(t).all():
                    raise ModelError(f"{source}: tensor {name + part}: the fp32 layer needs its float tensor "
                                     f"of shape {list(shape)}, finite")
                out[name + part] = np.asarray(t, "<f4")
        else:
            out.update({name + ".weight": lq.weight, name + ".weight_scale": lq.scale.astype("<f4"),
                        name + ".bias": lq.bias.astype("<i4")})
    meta = {k: v for k, v in (metadata or {}).items() if k not in mf.DERIVED_KEYS | {mf.KEY_TEST_ACCURACY}}
    meta[KEY_QUANT] = quant_metadata(qp)
    return mf.pack_model(plan, out, meta, VERSION_INT8)


def write_int8_model(path: str | os.PathLike, plan: Plan, tensors: dict[str, np.ndarray], qp: QuantParams,
                     metadata: dict[str, str] | None = None) -> None:
    """Validates ``qp`` and writes the int8 model atomically (``int8_model_bytes``)."""
    atomic_write_bytes(path, int8_model_bytes(plan, tensors, qp, metadata, str(path)))


def _parse_quant(text: str, source: str) -> tuple[dict[str, ActQ], frozenset[str], int, str, dict | None]:
    def bad(field: str, msg: str):
        raise ModelError(f"{source}: {field}: {msg}")

    d = parse_json(text, source, ModelError)
    if not isinstance(d, dict):
        bad("file", "must be a JSON object")
    for key in ("weight_bits", "method", "fp32", "activations"):
        if key not in d:
            bad(key, "missing")
    extra = sorted(set(d) - {"weight_bits", "method", "fp32", "activations", "fp32_choice"})
    if extra:
        bad(extra[0], "unknown field")
    bits, method, fp32, acts = d["weight_bits"], d["method"], d["fp32"], d["activations"]
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in WEIGHT_MAX:
        bad("weight_bits", f"must be 8 or 7, got {bits!r}")
    if not isinstance(method, str) or not method:
        bad("method", "must be the calibration method's name")
    if not isinstance(fp32, list) or not all(isinstance(v, str) for v in fp32):
        bad("fp32", "must be a list of layer names")
    if not isinstance(acts, dict):
        bad("activations", "must be an object")
    out = {}
    for k, a in acts.items():
        where = f"activations[{k!r}]"
        if not isinstance(a, dict) or set(a) != {"scale", "zero_point"}:
            bad(where, "must be {\"scale\": number, \"zero_point\": integer}")
        s, z = a["scale"], a["zero_point"]
        if not isinstance(s, (int, float)) or isinstance(s, bool):
            bad(where + ".scale", f"must be a number, got {s!r}")
        if not isinstance(z, int) or isinstance(z, bool):
            bad(where + ".zero_point", f"must be an integer in [0, 255], got {z!r}")
        out[k] = ActQ(float(s), z)
    choice = check_fp32_choice(d["fp32_choice"], bad) if "fp32_choice" in d else None
    return out, frozenset(fp32), bits, method, choice


def _check_layer_tensors(src: str, plan: Plan, raw: dict[str, np.ndarray], fp32: frozenset[str], bits: int) -> None:
    shapes = graph_tensors(plan).weight_shapes
    expected: set[str] = set()
    for name in conv_layers(plan):
        shape, out_c = shapes[name], (shapes[name][0],)
        parts = ((".weight", shape, np.float32), (".bias", out_c, np.float32)) if name in fp32 else (
            (".weight", shape, np.int8), (".weight_scale", out_c, np.float32), (".bias", out_c, np.int32))
        for part, want_shape, dtype in parts:
            key = name + part
            expected.add(key)
            if key not in raw:
                raise ModelError(f"{src}: tensor {key}: missing (expected {np.dtype(dtype).name} of shape "
                                 f"{list(want_shape)})")
            t = raw[key]
            if t.dtype != dtype:
                why = ("the layer is in metadata {k}'s fp32 list" if name in fp32
                       else "an int8 layer: not in metadata {k}'s fp32 list").format(k=KEY_QUANT)
                raise ModelError(f"{src}: tensor {key}: dtype {t.dtype}, expected {np.dtype(dtype).name} ({why})")
            if tuple(t.shape) != want_shape:
                raise ModelError(f"{src}: tensor {key}: shape {list(t.shape)}, expected {list(want_shape)}")
            if dtype == np.float32 and not np.isfinite(t).all():
                raise ModelError(f"{src}: tensor {key}: holds NaN or infinite values")
        if name in fp32:
            continue
        w = np.abs(raw[name + ".weight"].astype(np.int16))
        if w.size and int(w.max()) > WEIGHT_MAX[bits]:
            raise ModelError(f"{src}: tensor {name}.weight: |w| must be <= {WEIGHT_MAX[bits]} for {bits}-bit "
                             f"weights (-128 never), got {int(w.max())}")
        if not (raw[name + ".weight_scale"] > 0).all():
            raise ModelError(f"{src}: tensor {name}.weight_scale: every channel's scale must be finite and > 0")
        if (raw[name + ".bias"] == INT32_MIN).any():
            raise ModelError(f"{src}: tensor {name}.bias: -2^31 is outside the symmetric int32 range")
    extra = sorted(set(raw) - expected)
    if extra:
        raise ModelError(f"{src}: tensor {extra[0]}: not part of the plan")


def read_int8_model(path: str | os.PathLike) -> tuple[Plan, QuantParams, dict[str, np.ndarray], dict[str, str]]:
    """(plan, QuantParams, the float tensors of the layers kept in fp32, metadata) of an int8
    model, every field checked as the native loader does; ModelError names the file and field.
    The QuantParams' entries of the fp32 layers are quantised from their float tensors, as
    ``build_params`` makes them, so ``int8_reference(plan, qp, x, tensors)`` runs as from memory."""
    path = Path(path)
    src = str(path)
    parsed: list = []

    def check(plan: Plan, raw: dict[str, np.ndarray], meta: dict[str, str]) -> None:
        if meta[KEY_VERSION] != VERSION_INT8:
            raise ModelError(f"{src}: metadata {KEY_VERSION}: {meta[KEY_VERSION]!r} is a float model: read it with "
                             "nasrt.contract.modelfile.read_model (this reader gives int8 models, format 3)")
        if KEY_QUANT not in meta:
            raise ModelError(f"{src}: metadata {KEY_QUANT}: missing")
        acts, fp32, bits, method, choice = _parse_quant(meta[KEY_QUANT], f"{src}: metadata {KEY_QUANT}")
        _check_layer_tensors(src, plan, raw, fp32, bits)
        parsed.extend((acts, fp32, bits, method, choice))

    plan, raw, meta = mf.read_model_file(path, check)
    acts, fp32, bits, method, choice = parsed
    floats = {k: v for k, v in raw.items() if k.rsplit(".", 1)[0] in fp32}
    layers = {}
    for name, inp in conv_layers(plan).items():
        if name in fp32:
            if inp not in acts:  # validate names it below
                continue
            with np.errstate(all="ignore"):  # a bad input scale: validate reports it below
                layers[name] = quantize_layer(floats, name, inp, acts[inp], bits)
        else:
            layers[name] = LayerQ(inp, raw[name + ".weight"], raw[name + ".weight_scale"], raw[name + ".bias"])
    qp = QuantParams(acts, layers, fp32, bits, method, choice)
    validate(qp, plan, f"{src}: metadata {KEY_QUANT}")
    return plan, qp, floats, meta
