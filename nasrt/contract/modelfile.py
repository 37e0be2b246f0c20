"""model.nasrt: a safetensors file of BN-folded float32 tensors with the plan
and its lowered graph in the metadata (docs/FORMATS.md). Written here; read
here for Python-side tools, and natively by the runtime (csrc/runtime/model.cpp).
Format 3 (int8) is packed and unpacked here too; nasrt.quant.modelfile gives it meaning.
Owns the metadata keys (KEY_*, METADATA_KEYS, from metadata_keys.txt, the list the
C++ build reads too)."""
from __future__ import annotations

import json
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasrt._io import atomic_write_bytes, open_regular, parse_json, read_regular
from nasrt.contract.lowering import expected_tensors, graph
from nasrt.contract.lut import PRECISIONS
from nasrt.contract.plan import Plan
from nasrt.errors import ModelError, PlanError

FORMAT = "nasrt.model"
VERSION = "2"  # 2: the lowered graph and a data checksum; 1 (plan only) is still read here
VERSION_INT8 = "3"  # 2 with int8 layers and nasrt.quant: read by nasrt.quant.read_int8_model
MAX_MODEL_BYTES = (1 << 30) + (64 << 20)  # the native loader's limits: 1 GiB of weights, a 64 MiB header


@dataclass(frozen=True)
class MetadataKey:
    """A key of the model file's metadata: KEY_<name> here, NASRT_KEY_<name> in C and C++."""
    name: str
    key: str
    meaning: str


# The keys live in one list that the C++ build reads too (CMake makes <nasrt/metadata_keys.h> of it).
KEYS_FILE = Path(__file__).with_name("metadata_keys.txt")
_KEY_LINE = re.compile(r"([A-Z][A-Z0-9_]*)[ \t]+(nasrt\.[a-z0-9_.]*)[ \t]+([^;\[\]]+)")


def _read_keys(path: Path) -> tuple[MetadataKey, ...]:
    keys = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            m = _KEY_LINE.fullmatch(line.rstrip())
            if not m:
                raise RuntimeError(f"{path}:{n}: expected NAME nasrt.KEY MEANING (no ';', '[', ']'), got {line!r}")
            keys.append(MetadataKey(*m.groups()))
    return tuple(keys)


METADATA_KEYS = _read_keys(KEYS_FILE)


def _key(name: str) -> str:
    return next(k.key for k in METADATA_KEYS if k.name == name)


KEY_FORMAT = _key("FORMAT")
KEY_VERSION = _key("VERSION")
KEY_PLAN = _key("PLAN")
KEY_GRAPH = _key("GRAPH")
KEY_DATA_CRC32 = _key("DATA_CRC32")
KEY_INPUT_MEAN = _key("INPUT_MEAN")
KEY_INPUT_STD = _key("INPUT_STD")
KEY_CLASS_NAMES = _key("CLASS_NAMES")
KEY_DATASET = _key("DATASET")
KEY_TEST_ACCURACY = _key("TEST_ACCURACY")
KEY_WORLD_SIZE = _key("WORLD_SIZE")
KEY_QUANT = _key("QUANT")
KEY_LATENCY_PRECISION = _key("LATENCY_PRECISION")
# Written from the model itself, never copied from another file's metadata.
DERIVED_KEYS = frozenset({KEY_FORMAT, KEY_VERSION, KEY_PLAN, KEY_GRAPH, KEY_DATA_CRC32, KEY_QUANT})
_DTYPES = {np.dtype("<f4"): "F32", np.dtype("i1"): "I8", np.dtype("<i4"): "I32"}


def canonical_json(obj) -> str:
    """Sorted keys, no spaces: the same model always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def model_bytes(plan: Plan, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """The bytes of a model file: safetensors with sorted keys, so identical
    models give identical files (safetensors' own writer orders metadata at random)."""
    tensors = {k: np.ascontiguousarray(v, dtype="<f4") for k, v in tensors.items()}
    _check_tensors("model", plan, tensors)
    return pack_model(plan, tensors, metadata, VERSION)


def pack_model(plan: Plan, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None, version: str) -> bytes:
    """The file of already checked float32 / int8 / int32 tensors (sorted, 8-byte aligned data)
    with the plan, its lowering and the data checksum in the metadata."""
    header: dict = {}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        data = np.ascontiguousarray(t).tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    body = b"".join(chunks)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update({KEY_FORMAT: FORMAT, KEY_VERSION: version, KEY_PLAN: canonical_json(plan.to_dict()),
                 KEY_GRAPH: canonical_json(graph(plan)), KEY_DATA_CRC32: f"{zlib.crc32(body):08x}"})
    header["__metadata__"] = meta
    text = canonical_json(header).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + body


def write_model(path: str | os.PathLike, plan: Plan, tensors: dict[str, np.ndarray],
                metadata: dict[str, str] | None = None) -> None:
    """Writes a model file atomically after checking tensors against the plan."""
    atomic_write_bytes(path, model_bytes(plan, tensors, metadata))


def read_model(path: str | os.PathLike) -> tuple[Plan, dict[str, np.ndarray], dict[str, str]]:
    """Returns (plan, tensors, metadata) of a float model (format 1 or 2); raises ModelError
    naming the file and field. An int8 model (format 3) is refused: its int8 tensors are not
    the float net's (nasrt.quant.read_int8_model reads it)."""
    def check(plan: Plan, raw: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
        if metadata[KEY_VERSION] == VERSION_INT8:
            raise ModelError(f"{path}: metadata {KEY_VERSION}: '3' is an int8 model: read it with "
                             "nasrt.quant.read_int8_model (this reader gives float models only)")
        _check_tensors(str(path), plan, raw)

    return read_model_file(path, check)


def read_model_file(path: str | os.PathLike, check: Callable[[Plan, dict[str, np.ndarray], dict[str, str]], None]
                    ) -> tuple[Plan, dict[str, np.ndarray], dict[str, str]]:
    """(plan, tensors as stored, metadata) of a model file of any known version: its format,
    version and plan checked, then ``check(plan, tensors, metadata)`` (the tensors are the
    caller's to check), then the graph and the data checksum."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model file")
    open_regular(path, ModelError, "a model.nasrt file")[0].close()  # a directory or FIFO: one clear error
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
    if ver not in ("1", VERSION, VERSION_INT8):
        raise ModelError(f"{path}: metadata {KEY_VERSION}: unsupported version {ver!r} "
                         f"(this reader knows 1, {VERSION} and {VERSION_INT8})")
    if KEY_PLAN not in metadata:
        raise ModelError(f"{path}: metadata {KEY_PLAN}: missing")
    plan_dict = parse_json(metadata[KEY_PLAN], str(path), ModelError, f"metadata {KEY_PLAN}")
    try:
        plan = Plan.from_dict(plan_dict, source=f"{path}: {KEY_PLAN}")
    except PlanError as e:
        raise ModelError(str(e)) from None
    check(plan, raw, metadata)
    if ver != "1":
        if metadata.get(KEY_GRAPH) != canonical_json(graph(plan)):
            raise ModelError(f"{path}: metadata {KEY_GRAPH}: does not match the plan (file edited or damaged)")
        body = read_regular(path, MAX_MODEL_BYTES, ModelError, "a model.nasrt file")
        body = body[8 + struct.unpack("<Q", body[:8])[0]:]
        if metadata.get(KEY_DATA_CRC32) != f"{zlib.crc32(body):08x}":
            raise ModelError(f"{path}: metadata {KEY_DATA_CRC32}: tensor data checksum mismatch (file altered or damaged)")
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


def input_normalisation(metadata: dict, channels: int, source) -> tuple | None:
    """The training input's (mean, std) per channel, float32, stored at export, or None;
    ModelError names a bad field."""
    if KEY_INPUT_MEAN not in metadata and KEY_INPUT_STD not in metadata:
        return None
    out = []
    for key in (KEY_INPUT_MEAN, KEY_INPUT_STD):
        if key not in metadata:
            raise ModelError(f"{source}: metadata {key}: missing (the model has only one of input_mean/input_std)")
        doc = parse_json(metadata[key], str(source), ModelError, f"metadata {key}")
        try:
            v = np.asarray(doc, np.float64)
        except (ValueError, TypeError):
            raise ModelError(f"{source}: metadata {key}: must be a JSON list of {channels} numbers") from None
        if v.shape != (channels,) or not np.isfinite(v).all() or (key == KEY_INPUT_STD and (v <= 0).any()):
            raise ModelError(f"{source}: metadata {key}: must be a list of {channels} finite numbers"
                             + (" > 0" if key == KEY_INPUT_STD else "") + f", got {metadata[key][:60]!r}")
        out.append(v.astype(np.float32))
    return tuple(out)


def class_names(metadata: dict, classes: int, source) -> list[str] | None:
    """The class names stored at export, or None (a warning when they are malformed)."""
    try:
        names = parse_json(metadata.get(KEY_CLASS_NAMES, "null") or "null", str(source), ModelError)
    except ModelError:
        names = "?"
    if names is None:
        return None
    if not isinstance(names, list) or len(names) != classes or not all(isinstance(n, str) for n in names):
        warnings.warn(f"{source}: metadata {KEY_CLASS_NAMES}: not a list of {classes} strings; "
                      "showing class numbers", stacklevel=2)
        return None
    return names


def latency_precision(metadata: dict, source) -> str | None:
    """The precision of the latency table the model's net was searched with (fp32 or int8), or
    None when it was searched without one; ModelError names a bad value."""
    v = metadata.get(KEY_LATENCY_PRECISION)
    if v is not None and v not in PRECISIONS:
        raise ModelError(f"{source}: metadata {KEY_LATENCY_PRECISION}: must be one of {', '.join(PRECISIONS)}, "
                         f"got {v[:40]!r}")
    return v
