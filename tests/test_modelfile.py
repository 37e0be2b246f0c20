"""Model-file errors: truncated, corrupt, foreign, wrong version, bad tensors, bad input."""
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nasrt
from nasrt.contract.modelfile import read_model, write_model
from nasrt.errors import ModelError
from nasrt.runtime.bench import paper_sized_plan, random_tensors, write_random_model

PLAN = paper_sized_plan(syncs=True)


def small_model():
    """A small plan (sepconv, conv1x1 sync, 1x1 kernels) with random tensors."""
    from nasrt.contract.plan import Block, Plan, Sync
    plan = Plan((1, 6, 6), 3, Block("conv", 3, 1, 4), (
        (Block("conv", 3, 2, 4), Block("sepconv", 3, 1, 6)),
        (Block("conv", 1, 2, 4), Block("conv", 5, 1, 6))), (Sync(0, "conv1x1"),), (5,))
    return plan, random_tensors(plan)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.nasrt"
    write_random_model(PLAN, path)
    return path


def rewrite(path, tensors=None, metadata=None):
    from safetensors import safe_open
    from safetensors.numpy import save
    with safe_open(str(path), framework="np") as f:
        meta = dict(f.metadata())
        t = {k: f.get_tensor(k) for k in f.keys()}
    if tensors is not None:
        t = tensors(t)
    if metadata is not None:
        meta = metadata(meta)
    path.write_bytes(save(t, metadata=meta))


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="nothere.nasrt: no such model file"):
        nasrt.Runtime(tmp_path / "nothere.nasrt")


def test_truncated_file(model):
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="m.nasrt: not a readable safetensors"):
        nasrt.Runtime(model)


def test_garbage_and_empty_file(tmp_path):
    p = tmp_path / "g.nasrt"
    p.write_bytes(b"\x00" * 3)
    with pytest.raises(ModelError, match="g.nasrt"):
        read_model(p)
    p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ModelError, match="g.nasrt"):
        read_model(p)


def test_foreign_safetensors_file(tmp_path):
    from safetensors.numpy import save_file
    p = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(p))
    with pytest.raises(ModelError, match="nasrt.format: expected 'nasrt.model', got None"):
        read_model(p)


def test_wrong_format_and_version(model):
    rewrite(model, metadata=lambda m: {**m, "nasrt.version": "7"})
    with pytest.raises(ModelError, match="nasrt.version: unsupported version '7'"):
        read_model(model)
    rewrite(model, metadata=lambda m: {**m, "nasrt.version": "1", "nasrt.format": "other"})
    with pytest.raises(ModelError, match="nasrt.format"):
        read_model(model)


def test_bad_plan_in_metadata(model):
    def unknown_op(m):
        d = json.loads(m["nasrt.plan"])
        d["paths"][0][1]["op"] = "winograd"
        return {**m, "nasrt.plan": json.dumps(d)}
    rewrite(model, metadata=unknown_op)
    with pytest.raises(ModelError, match=r"m.nasrt: nasrt.plan: paths\[0\]\[1\]\.op: unknown op 'winograd'"):
        nasrt.Runtime(model)
    rewrite(model, metadata=lambda m: {**m, "nasrt.plan": "{"})
    with pytest.raises(ModelError, match="nasrt.plan: not valid JSON"):
        read_model(model)
    rewrite(model, metadata=lambda m: {**m, "nasrt.plan": "[" * 65 + "]" * 65})
    with pytest.raises(ModelError, match=r"m.nasrt: metadata nasrt.plan: JSON nested deeper than 64$"):
        read_model(model)


def test_missing_misshaped_and_extra_tensors(model):
    rewrite(model, tensors=lambda t: {k: v for k, v in t.items() if k != "paths.1.blocks.2.weight"})
    with pytest.raises(ModelError, match=r"tensor paths.1.blocks.2.weight: missing \(expected shape \[32, 16, 3, 3\]\)"):
        nasrt.Runtime(model)
    write_random_model(PLAN, model)
    rewrite(model, tensors=lambda t: {**t, "syncs.1.weight": np.zeros((16, 16, 1, 1), np.float32)})
    with pytest.raises(ModelError, match=r"syncs.1.weight: shape \[16, 16, 1, 1\], expected \[16, 32, 1, 1\]"):
        nasrt.Runtime(model)
    write_random_model(PLAN, model)
    rewrite(model, tensors=lambda t: {**t, "head.0.bias": t["head.0.bias"].astype(np.float64)})
    with pytest.raises(ModelError, match="head.0.bias: dtype float64, expected float32"):
        nasrt.Runtime(model)
    write_random_model(PLAN, model)
    rewrite(model, tensors=lambda t: {**t, "extra.weight": np.zeros(2, np.float32)})
    with pytest.raises(ModelError, match="extra.weight: not part of the plan"):
        nasrt.Runtime(model)
    write_random_model(PLAN, model)
    rewrite(model, tensors=lambda t: {**t, "stem.bias": np.full(8, np.nan, np.float32)})
    with pytest.raises(ModelError, match="stem.bias: holds NaN"):
        nasrt.Runtime(model)


def test_writer_refuses_inconsistent_tensors(tmp_path):
    t = random_tensors(PLAN)
    del t["stem.weight"]
    with pytest.raises(ModelError, match="stem.weight: missing"):
        write_model(tmp_path / "x.nasrt", PLAN, t)
    assert not (tmp_path / "x.nasrt").exists()


def test_bad_inputs_to_run(model):
    rt = nasrt.Runtime(model)
    with pytest.raises(ModelError, match=r"input: shape \[1, 3, 28, 28\], expected \[N, 3, 32, 32\]"):
        rt.run(np.zeros((1, 3, 28, 28), np.float32))
    with pytest.raises(ModelError, match="dtype float64, expected float32"):
        rt.run(np.zeros((1, 3, 32, 32)))
    with pytest.raises(ModelError, match="expected a numpy array"):
        rt.run([[0.0]])
    with pytest.raises(ModelError, match="input: shape"):
        rt.run(np.zeros((3, 32), np.float32))
    assert rt.run(np.zeros((0, 3, 32, 32), np.float32)).shape == (0, 10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_model_bytes_raise_only_model_error(tmp_path, data):
    plan, tensors = small_model()
    p = tmp_path / "f.nasrt"
    write_model(p, plan, tensors)
    raw = bytearray(p.read_bytes())
    kind = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    if kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    else:
        i = data.draw(st.integers(0, len(raw)))
        raw[i:i] = data.draw(st.binary(max_size=64))
    p.write_bytes(bytes(raw))
    try:
        rt = nasrt.Runtime(p, threads=2)
    except ModelError:
        return
    # Accepted: it is a consistent model and runs.
    y = rt.run(np.zeros((1, *rt.plan.input), np.float32))
    assert y.shape == (1, rt.plan.classes)
