"""The int8 model file (model format 3, docs/FORMATS.md section 2): written and read by
nasrt.quant, read natively into the quantised NetSpec, every bad field refused by both
readers with one line naming it; float models (format 2) unchanged."""
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from test_quant import images, rand_tensors

from nasrt import _core
from nasrt.contract import modelfile as mf
from nasrt.contract.modelfile import KEY_QUANT, KEY_VERSION, model_bytes, read_model
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.errors import ModelError
from nasrt.quant import calibrate, default_fp32, int8_model_bytes, int8_reference, read_int8_model, write_int8_model
from nasrt.quant.graph import conv_layers, graph_tensors

ROOT = Path(__file__).resolve().parents[1]
# Both merges, a sepconv, a 1-channel input (the stem stays fp32) and a hidden FC.
PLAN = Plan((1, 12, 12), 5, Block("conv", 3, 1, 8), (
    (Block("conv", 3, 1, 8), Block("sepconv", 3, 2, 16)), (Block("conv", 5, 1, 8), Block("conv", 3, 2, 16))),
    (Sync(0, "conv1x1"), Sync(1, "sum")), (24,))


@pytest.fixture(scope="module")
def model():
    t = rand_tensors(PLAN, seed=3)
    qp = calibrate(PLAN, t, images(PLAN, 32, seed=4), "numpy-minmax", fp32=default_fp32(PLAN))
    return t, qp


def _stored(data: bytes) -> tuple[dict, dict]:
    """(tensors as stored, metadata) of a model file's bytes."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    dt = {"F32": "<f4", "I8": "i1", "I32": "<i4"}
    meta = header.pop("__metadata__")
    return {k: np.frombuffer(body[v["data_offsets"][0]:v["data_offsets"][1]], dt[v["dtype"]]).reshape(v["shape"])
            for k, v in header.items()}, meta


def test_round_trip_is_exact_and_deterministic(tmp_path, model):
    t, qp = model
    path = tmp_path / "m.int8.nasrt"
    write_int8_model(path, PLAN, t, qp, {"nasrt.dataset": "synthetic"})
    assert path.read_bytes() == int8_model_bytes(PLAN, t, qp, {"nasrt.dataset": "synthetic"})
    stored, meta = _stored(path.read_bytes())
    assert meta[KEY_VERSION] == "3" and meta["nasrt.dataset"] == "synthetic"
    for name in conv_layers(PLAN):
        kinds = ({".weight": np.float32, ".bias": np.float32} if name in qp.fp32 else
                 {".weight": np.int8, ".weight_scale": np.float32, ".bias": np.int32})
        assert {k[len(name):]: v.dtype for k, v in stored.items() if k.rsplit(".", 1)[0] == name} == kinds
    assert qp.fp32 == {"stem"}

    plan, back, floats, _ = read_int8_model(path)
    assert plan == PLAN and back.activations == qp.activations and back.fp32 == qp.fp32
    assert (back.weight_bits, back.method) == (qp.weight_bits, qp.method)
    assert set(back.layers) == set(qp.layers)
    for k, lq in qp.layers.items():  # the fp32 layers' entries too: requantised as build_params does
        for part in ("weight", "scale", "bias"):
            a, b = getattr(lq, part), getattr(back.layers[k], part)
            assert a.dtype == b.dtype and np.array_equal(a, b), (k, part)
        assert back.layers[k].input == lq.input
    assert sorted(floats) == ["stem.bias", "stem.weight"]
    x = images(PLAN, 20, seed=9)
    assert np.array_equal(int8_reference(PLAN, qp, x, t), int8_reference(plan, back, x, floats))


def test_default_net_file_is_under_0_3x_the_float_file():
    plan = Plan.from_dict(json.loads((ROOT / "docs" / "default_plan.json").read_text()))
    t = rand_tensors(plan)
    qp = calibrate(plan, t, images(plan, 8), "numpy-minmax", fp32=default_fp32(plan))
    assert len(int8_model_bytes(plan, t, qp)) <= 0.3 * len(model_bytes(plan, t))


def test_each_reader_refuses_the_other_format(tmp_path, model):
    t, qp = model
    write_int8_model(tmp_path / "q.nasrt", PLAN, t, qp)
    with pytest.raises(ModelError, match=r"q\.nasrt: metadata nasrt\.version: '3' is an int8 model: read it with "
                                         r"nasrt\.quant\.read_int8_model"):
        read_model(tmp_path / "q.nasrt")
    (tmp_path / "f.nasrt").write_bytes(model_bytes(PLAN, t))
    with pytest.raises(ModelError, match=r"f\.nasrt: metadata nasrt\.version: '2' is a float model"):
        read_int8_model(tmp_path / "f.nasrt")


def test_float_models_are_unchanged():
    """Format 2 as before: the same bytes from the writer, natively loaded as a float net."""
    tiny = ROOT / "tests" / "data" / "tiny.nasrt"
    plan, t, meta = read_model(tiny)
    assert model_bytes(plan, t, meta) == tiny.read_bytes()
    assert _core.load_model(str(tiny)).quant is None


def test_native_loader_reads_the_int8_net(model):
    t, qp = model
    q = _core.load_model_bytes(int8_model_bytes(PLAN, t, qp), "m.int8.nasrt").quant
    act = lambda k: (qp.activations[k].scale, qp.activations[k].zero_point)  # noqa: E731
    assert q["input"] == act("input") and q["features"] == act("features")
    assert q["sums"] == {1: act("syncs.1")}
    last = list(conv_layers(PLAN))[-1]
    assert sorted(q["layers"]) == sorted(conv_layers(PLAN))
    for name, lq in qp.layers.items():
        got = q["layers"][name]
        assert got["precision"] == ("fp32" if name in qp.fp32 else "int8")
        assert got["out"] == (None if name == last else act(name))
        if name not in qp.fp32:
            assert got["weight"] == lq.weight.tobytes()
            assert np.array_equal(np.array(got["weight_scale"], np.float32), lq.scale)
            assert got["bias"] == lq.bias.tolist()


def _edit(data: bytes, quant=None, tensors=None) -> bytes:
    """The file with its nasrt.quant JSON and / or tensors edited, the checksum made right."""
    stored, meta = _stored(data)
    if quant:
        doc = json.loads(meta[KEY_QUANT])
        quant(doc)
        meta[KEY_QUANT] = mf.canonical_json(doc)
    stored = {k: v.copy() for k, v in stored.items()}
    if tensors:
        tensors(stored)
    return mf.pack_model(PLAN, stored, meta, "3")


def _act(key, field, value):
    return lambda d: d["activations"][key].__setitem__(field, value)


def _conv_not_merged():
    """The output of an int8 conv that meets no merge and feeds another layer."""
    g = graph_tensors(PLAN)
    merged = {k for grp in g.groups if len(grp) > 1 for k in grp}
    return next(src for src in g.inputs.values() if src in g.relu and src not in merged | default_fp32(PLAN))


CASES = [  # (id, quant edit, tensor edit, the line both readers give)
    ("scale 0", _act("input", "scale", 0.0), None, r"metadata nasrt\.quant: activations\['input'\]\.scale: "
                                                   r"must be finite and > 0 in float32"),
    ("scale inf in float32", _act("input", "scale", 1e39), None,
     r"metadata nasrt\.quant: activations\['input'\]\.scale: must be finite and > 0 in float32"),
    ("zero point 300", _act("input", "zero_point", 300), None,
     r"metadata nasrt\.quant: activations\['input'\]\.zero_point: must be an integer in \[0, 255\], got 300"),
    ("zero point after relu", _act("paths.0.blocks.0", "zero_point", 3), None,
     r"metadata nasrt\.quant: activations\['paths\.0\.blocks\.0'\]\.zero_point: must be 0 after a ReLU, got 3"),
    ("merge mismatch", _act("syncs.0.concat", "scale", 0.5), None,
     r"metadata nasrt\.quant: activations\['paths\.\d\.blocks\.0'\]: must have the scale and zero point of "
     r"'syncs\.0\.concat'"),
    ("missing activation", lambda d: d["activations"].pop("features"), None,
     r"metadata nasrt\.quant: activations\['features'\]: missing"),
    ("extra activation", lambda d: d["activations"].__setitem__("x", {"scale": 1.0, "zero_point": 0}), None,
     r"metadata nasrt\.quant: activations\['x'\]: not a tensor of the plan"),
    ("unknown fp32 layer", lambda d: d["fp32"].append("head.7"), None,
     r"metadata nasrt\.quant: fp32: 'head\.7' is not a conv or FC of the plan"),
    ("weight bits", lambda d: d.__setitem__("weight_bits", 4), None, r"metadata nasrt\.quant: weight_bits: must be 8 or 7"),
    ("fp32_choice rule", lambda d: d.__setitem__("fp32_choice", {"rule": "fastest"}), None,
     r"metadata nasrt\.quant: fp32_choice: must be an object whose rule is default, none, given or auto"),
    ("M out of range", lambda d: _act(_conv_not_merged(), "scale", 1e30)(d), None,
     r"metadata nasrt\.quant: layers\['[^']+'\]: requantisation multiplier [-+e.\d]+ outside \[2\^-32, 256\)"),
    ("int8 layer in the fp32 list", lambda d: d["fp32"].append("head.0"), None,
     r"tensor head\.0\.weight: dtype int8, expected float32 \(the layer is in metadata nasrt\.quant's fp32 list\)"),
    ("fp32 layer not in the list", lambda d: d.__setitem__("fp32", []), None,
     r"tensor stem\.weight: dtype float32, expected int8 \(an int8 layer: not in metadata nasrt\.quant's fp32 list\)"),
    ("weight -128", None, lambda t: t["head.0.weight"].flat.__setitem__(0, -128),
     r"tensor head\.0\.weight: \|w\| must be <= 127 for 8-bit weights \(-128 never\), got 128"),
    ("7-bit weights beyond 64", lambda d: d.__setitem__("weight_bits", 7), None,
     r"tensor \S+\.weight: \|w\| must be <= 64 for 7-bit weights"),
    ("weight scale 0", None, lambda t: t["head.1.weight_scale"].__setitem__(2, 0.0),
     r"tensor head\.1\.weight_scale: every channel's scale must be finite and > 0"),
    ("bias -2^31", None, lambda t: t["syncs.0.bias"].__setitem__(0, -2 ** 31),
     r"tensor syncs\.0\.bias: -2\^31 is outside the symmetric int32 range"),
    ("missing weight scale", None, lambda t: t.pop("head.1.weight_scale"),
     r"tensor head\.1\.weight_scale: missing \(expected float32 of shape \[5\]\)"),
    ("unused tensor", None, lambda t: t.__setitem__("stem.weight_scale", np.ones(8, np.float32)),
     r"tensor stem\.weight_scale: not part of the plan"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_fields_are_refused_by_both_readers(tmp_path, model, case):
    _, quant, tensors, match = case
    t, qp = model
    data = _edit(int8_model_bytes(PLAN, t, qp), quant, tensors)
    path = tmp_path / "bad.int8.nasrt"
    path.write_bytes(data)
    with pytest.raises(ModelError, match=match) as py:
        read_int8_model(path)
    with pytest.raises(ModelError, match=match) as native:
        _core.load_model_bytes(data, str(path))
    for e in (py, native):
        assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def test_checksum_nan_and_version(tmp_path, model):
    t, qp = model
    good = int8_model_bytes(PLAN, t, qp)
    crc = _stored(good)[1]["nasrt.data_crc32"]
    edited = _edit(good, tensors=lambda s: s["head.1.bias"].__setitem__(0, s["head.1.bias"][0] + 1))
    stale = edited.replace(_stored(edited)[1]["nasrt.data_crc32"].encode(), crc.encode())
    path = tmp_path / "m.nasrt"
    for data, py_match, native_match in [
            (stale, r"metadata nasrt\.data_crc32: tensor data checksum mismatch", None),
            # JSON has no NaN: Python's reader takes it and names the field, the native one the key.
            (_edit(good, _act("input", "scale", float("nan"))),
             r"metadata nasrt\.quant: activations\['input'\]\.scale: must be finite and > 0",
             r"metadata nasrt\.quant: not valid JSON"),
            (good.replace(b'"nasrt.version":"3"', b'"nasrt.version":"4"'),
             r"metadata nasrt\.version: unsupported version '4' \(this reader knows 1, 2 and 3\)",
             r"metadata nasrt\.version: unsupported version '4' \(this reader knows 2 and 3\)")]:
        path.write_bytes(data)
        with pytest.raises(ModelError, match=f"^{re.escape(str(path))}: {py_match}"):
            read_int8_model(path)
        with pytest.raises(ModelError, match=f"^{re.escape(str(path))}: {native_match or py_match}"):
            _core.load_model_bytes(data, str(path))


def test_cli_quantize_writes_the_int8_model_and_info_shows_it(tmp_path, capsys):
    from nasrt.cli import main
    from nasrt.contract.modelfile import write_model
    plan = Plan((1, 12, 12), 4, Block("conv", 3, 1, 8), ((Block("conv", 3, 2, 8),), (Block("sepconv", 3, 2, 8),)),
                (Sync(0, "sum"),))
    write_model(tmp_path / "m.nasrt", plan, rand_tensors(plan), {"nasrt.test_accuracy": "0.5000"})
    out = tmp_path / "m.int8.nasrt"
    assert main(["quantize", str(tmp_path / "m.nasrt"), "--dataset", "synthetic", "--calib-images", "64",
                 "--method", "numpy-minmax", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"test accuracy \(256 images\): fp32 0\.\d+  int8 0\.\d+  top-1 agreement [01]\.\d+", text)
    assert re.search(r"per-layer error of int8 vs fp32 \(first 256 test images\).*\n  stem +[\d.]+ +[\d.]+\n", text)
    assert re.search(r"\n  logits +-?[\d.]+ +[\d.]+\n", text)
    assert f"wrote {out} (int8 model (format 3))" in text
    plan2, qp, floats, meta = read_int8_model(out)
    assert plan2 == plan and qp.fp32 == {"stem"} and qp.method == "numpy-minmax"
    assert "nasrt.test_accuracy" not in meta  # the fp32 model's, not this one's
    assert mf.read_model_file(out, lambda *_: None)[2][KEY_VERSION] == "3"

    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{out}: int8 model (8-bit weights, calibration numpy-minmax), format version 3, " \
           f"{out.stat().st_size:,} bytes" in text
    assert re.search(r"\n  stem +fp32\n  paths\.0\.blocks\.0 +int8\n", text)
    assert "\n  head.0 " in text
    assert re.search(r"\nkernels \(.*\):\n  stem +\w+ fp32\n  paths\.0\.blocks\.0 +\w+ int8\n", text)  # as the runtime runs it


def test_fuzz_seed_is_a_valid_int8_model():
    """tests/data/fuzz/tiny.int8.nasrt seeds the model fuzzer (.ci/run): it must load, in int8."""
    q = _core.load_model(str(ROOT / "tests" / "data" / "fuzz" / "tiny.int8.nasrt")).quant
    assert q["layers"]["stem"]["precision"] == "fp32" and q["layers"]["head.1"]["precision"] == "int8"
