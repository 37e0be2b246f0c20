"""Per-conv kernel backends: mixes agree with torch and are bitwise equal across
thread counts; tuning files are used only for their own model and CPU."""
import json
import random

import numpy as np
import pytest

import nasrt
from _helpers import export_random, random_plan, sample_input
from nasrt import _core

FAST = [b for b in _core.compiled_backends() if b != "reference"]


def write_mix(rt, path, pick):
    """A tuning file for rt's model that puts conv i on pick(i)."""
    names = list(rt.kernels)
    doc = {"format": "nasrt.tune", "version": 1, "model": rt.content_hash, "cpu": _core.cpu_signature(),
           "isa": _core.host_isa(), "convs": {n: {"backend": pick(i), "us": {}} for i, n in enumerate(names)}}
    path.write_text(json.dumps(doc))
    return doc


@pytest.mark.parametrize("seed", range(12))
def test_mixed_backends_match_torch_and_are_bitwise_equal_across_threads(seed, tmp_path):
    torch = pytest.importorskip("torch")
    choices = FAST + ["reference"]
    plan = random_plan(random.Random(500 + seed))
    net, path, _ = export_random(plan, tmp_path, seed)
    rt = nasrt.Runtime(path, threads=1)
    doc = write_mix(rt, rt.tuning_path, lambda i: choices[(i + seed) % len(choices)])
    x = sample_input(plan, n=2, seed=seed)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    outs = []
    for threads in sorted({1, plan.num_paths}):
        mixed = nasrt.Runtime(path, threads=threads)
        assert mixed.kernels == {n: c["backend"] for n, c in doc["convs"].items()}
        outs.append(mixed.run(x))
        err = np.abs(outs[-1] - ref).max()
        assert err <= 1e-4 * max(np.abs(ref).max(), 1e-6), f"threads {threads}: {err}\n{plan.summary()}"
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


def test_each_backend_alone_matches_the_reference(tmp_path):
    plan = random_plan(random.Random(77))
    _, path, _ = export_random(plan, tmp_path)
    x = sample_input(plan, n=1)
    ref = nasrt.Runtime(path, threads=1, backend="reference").run(x)
    for b in FAST:
        rt = nasrt.Runtime(path, threads=plan.num_paths, backend=b)
        assert set(rt.kernels.values()) == {b}
        assert np.abs(rt.run(x) - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1e-6), b


@pytest.fixture
def model(tmp_path):
    plan = random_plan(random.Random(3))
    _, path, _ = export_random(plan, tmp_path)
    return path


def test_missing_tuning_file_uses_the_builtin_choice_silently(model, recwarn):
    rt = nasrt.Runtime(model)
    assert not rt.tuning_path.exists()
    assert not [w for w in recwarn if "tune" in str(w.message)]
    expected = "onednn" if "onednn" in FAST and _core.host_isa() in ("avx2", "avx512", "avx", "sse") else \
        ("xnnpack" if "xnnpack" in FAST else FAST[0] if FAST else "reference")
    assert set(rt.kernels.values()) == {expected}


def test_tune_writes_a_file_that_later_loads(model):
    rt = nasrt.Runtime(model, tune=True)
    assert rt.tuning and all(t["backend"] in FAST + ["reference"] for t in rt.tuning)
    doc = json.loads(rt.tuning_path.read_text())
    assert doc["model"] == rt.content_hash and doc["cpu"] == _core.cpu_signature()
    assert set(doc["convs"]) == set(rt.kernels)
    again = nasrt.Runtime(model)
    assert again.kernels == {t["name"]: t["backend"] for t in rt.tuning}


def test_tuning_file_of_another_model_is_ignored_with_a_notice(model, tmp_path):
    other = tmp_path / "other.nasrt"
    _, other, _ = export_random(random_plan(random.Random(4)), tmp_path, seed=9)
    rt_other = nasrt.Runtime(other, threads=1)
    write_mix(rt_other, other.with_name(other.name + ".tune.json"), lambda i: "reference")
    (model.parent / (model.name + ".tune.json")).write_text(
        other.with_name(other.name + ".tune.json").read_text())
    with pytest.warns(UserWarning, match=r"tune.json: ignored \(made for another model file\)"):
        rt = nasrt.Runtime(model)
    assert "reference" not in rt.kernels.values() or not FAST


def test_tuning_file_of_another_cpu_is_ignored_with_a_notice(model):
    rt = nasrt.Runtime(model, threads=1)
    doc = write_mix(rt, rt.tuning_path, lambda i: "reference")
    doc["cpu"] = "Some Other CPU | neon | xnnpack"
    rt.tuning_path.write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="made on another CPU or build"):
        rt = nasrt.Runtime(model)
    assert "reference" not in rt.kernels.values() or not FAST


@pytest.mark.parametrize("text", ["", "{", "[]", "null", '{"format": "nasrt.tune", "version": 2}',
                                  '{"format": "nasrt.tune", "version": 1, "model": "x"}',
                                  "[" * 100000, "\x00\xff garbage"])
def test_corrupt_tuning_file_is_ignored_never_a_crash(model, text):
    rt = nasrt.Runtime(model, threads=1)
    rt.tuning_path.write_bytes(text.encode("latin-1"))
    with pytest.warns(UserWarning, match="tune.json: ignored"):
        again = nasrt.Runtime(model)
    assert again.kernels == rt.kernels


def test_stale_entries_are_ignored_never_a_crash(model):
    rt = nasrt.Runtime(model, threads=1)
    doc = write_mix(rt, rt.tuning_path, lambda i: "reference")
    first = next(iter(doc["convs"]))
    doc["convs"][first]["backend"] = "cuda"
    rt.tuning_path.write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="ignored"):
        nasrt.Runtime(model)
    doc["convs"][first] = 5
    rt.tuning_path.write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="malformed entries"):
        nasrt.Runtime(model)
