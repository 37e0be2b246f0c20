"""model.nasrt: a safetensors file of BN-folded float32 tensors with the plan
JSON in its metadata. Read and validated here, without pickle or torch."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from nasrt._io import atomic_write_bytes
from nasrt.errors import ModelError, PlanError
from nasrt.lowering import expected_tensors
from nasrt.plan import Plan

FORMAT = "nasrt.model"
VERSION = "1"
KEY_FORMAT, KEY_VERSION, KEY_PLAN = "nasrt.format", "nasrt.version", "nasrt.plan"


def write_model(path: str | os.PathLike, plan: Plan, tensors: dict[str, np.ndarray],
                metadata: dict[str, str] | None = None) -> None:
    """Writes a model file atomically after checking tensors against the plan."""
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    _check_tensors(str(path), plan, tensors)
    meta = dict(metadata or {})
    meta.update({KEY_FORMAT: FORMAT, KEY_VERSION: VERSION, KEY_PLAN: json.dumps(plan.to_dict())})
    atomic_write_bytes(path, save(tensors, metadata=meta))


def read_model(path: str | os.PathLike) -> tuple[Plan, dict[str, np.ndarray], dict[str, str]]:
    """Returns (plan, tensors, metadata); raises ModelError naming the file and field."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
            names = list(f.keys())
            raw = {}
            for k in names:
                raw[k] = f.get_tensor(k)
    except ModelError:
        raise
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        raise ModelError(f"{path}: not a readable safetensors model file ({type(e).__name__}: {e})") from None

    fmt = metadata.get(KEY_FORMAT)
    if fmt != FORMAT:
        raise ModelError(f"{path}: metadata {KEY_FORMAT}: expected {FORMAT!r}, got {fmt!r} (not a nasrt model)")
    ver = metadata.get(KEY_VERSION)
    if ver != VERSION:
        raise ModelError(f"{path}: metadata {KEY_VERSION}: unsupported version {ver!r} (this reader knows {VERSION})")
    if KEY_PLAN not in metadata:
        raise ModelError(f"{path}: metadata {KEY_PLAN}: missing")
    try:
        plan_dict = json.loads(metadata[KEY_PLAN])
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: metadata {KEY_PLAN}: not valid JSON ({e.msg})") from None
    try:
        plan = Plan.from_dict(plan_dict, source=f"{path}: {KEY_PLAN}")
    except PlanError as e:
        raise ModelError(str(e)) from None
    _check_tensors(str(path), plan, raw)
    return plan, raw, metadata


def _check_tensors(source: str, plan: Plan, tensors: dict[str, np.ndarray]) -> None:
    expected = expected_tensors(plan)
    for name, shape in expected.items():
        if name not in tensors:
            raise ModelError(f"{source}: tensor {name}: missing (expected shape {list(shape)})")
        t = tensors[name]
        if t.dtype != np.float32:
            raise ModelError(f"{source}: tensor {name}: dtype {t.dtype}, expected float32")
        if tuple(t.shape) != shape:
            raise ModelError(f"{source}: tensor {name}: shape {list(t.shape)}, expected {list(shape)}")
        if not np.isfinite(t).all():
            raise ModelError(f"{source}: tensor {name}: holds NaN or infinite values")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ModelError(f"{source}: tensor {extra[0]}: not part of the plan")
