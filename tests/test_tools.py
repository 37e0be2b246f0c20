"""Issue 17: the native tools as a new user meets them. nasrt-run agrees with `nasrt run`
(shape checked, images refused by name, uint8 pixels, probabilities, class names);
nasrt-bench refuses cores it cannot use; a C-only app finds the CMake package."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_native import native

from nasrt.contract.modelfile import write_model
from nasrt.runtime.bench import paper_sized_plan, random_tensors

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [f"kind {i}" for i in range(9)] + ["Ünïcode"]


@pytest.fixture
def model(tmp_path):
    plan = paper_sized_plan()
    path = tmp_path / "m.nasrt"
    write_model(path, plan, random_tensors(plan, seed=3), {
        "nasrt.class_names": json.dumps(CLASSES), "nasrt.input_mean": "[0.2, 0.4, 0.6]",
        "nasrt.input_std": "[0.3, 0.25, 0.5]"})
    return path


def both(model, x, *flags):
    """stdout of nasrt-run and of `nasrt run` on the same input."""
    exe = native("nasrt-run")
    a = subprocess.run([exe, str(model), str(x), *flags], capture_output=True, text=True, timeout=120)
    b = subprocess.run([sys.executable, "-m", "nasrt.cli", "run", str(model), str(x), *flags],
                       capture_output=True, text=True, timeout=300, cwd="/")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    return a.stdout, b.stdout


def parsed(out: str):
    """(header, [(sample, label, probability)]) of a run's output."""
    lines = out.splitlines()
    rows, sample = [], 0
    for ln in lines[1:]:
        if ln.startswith("sample "):
            sample = int(ln.split()[1].rstrip(":"))
        else:
            label, p = ln.strip().rsplit(" ", 1)
            rows.append((sample, label.strip(), float(p)))
    return lines[0], rows


@pytest.mark.parametrize("kind", ["float batch", "float chw", "uint8 pixels", "uint8 batch"])
def test_nasrt_run_agrees_with_nasrt_run(tmp_path, model, kind):
    rng = np.random.default_rng(7)
    shape = (3, 3, 32, 32) if "batch" in kind else (3, 32, 32)
    x = rng.integers(0, 256, shape).astype(np.uint8) if "uint8" in kind else \
        rng.standard_normal(shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    native_out, python_out = both(model, tmp_path / "x.npy", "--top-k", "4")
    (h1, r1), (h2, r2) = parsed(native_out), parsed(python_out)
    assert h1 == h2 == "top 4 of 10 classes, softmax probabilities:"
    assert [r[:2] for r in r1] == [r[:2] for r in r2] and len(r1) == 4 * (3 if "batch" in kind else 1)
    assert all(label in CLASSES for _, label, _ in r1)  # the model's class names, not numbers
    np.testing.assert_allclose([r[2] for r in r1], [r[2] for r in r2], atol=1.5e-4)
    assert all(0 <= r[2] <= 1 for r in r1)  # probabilities, not logits


@pytest.mark.parametrize("make,message", [
    (lambda d: np.save(d / "hwc.npy", np.zeros((32, 32, 3), np.float32)) or d / "hwc.npy",
     "hwc.npy: shape [32, 32, 3], expected [3, 32, 32] or [N, 3, 32, 32] (C, H, W)"),
    (lambda d: np.save(d / "e.npy", np.zeros((0, 3, 32, 32), np.float32)) or d / "e.npy",
     "e.npy: an empty batch"),
    (lambda d: np.save(d / "i.npy", np.zeros((3, 32, 32), np.int16)) or d / "i.npy",
     "i.npy: .npy dtype must be float32 (normalised) or uint8 (pixels)"),
    (lambda d: (d / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(3 * 32 * 32 * 4 - 8)) and d / "x.png",
     "x.png: an image file"),
    (lambda d: (d / "photo").write_bytes(b"\xff\xd8\xff\xe0" + bytes(3 * 32 * 32 * 4 - 4)) and d / "photo",
     "photo: an image file"),  # a JPEG without its suffix, the right size for raw floats
])
def test_nasrt_run_refuses_what_nasrt_run_would_not_run(tmp_path, model, make, message):
    x = make(tmp_path)
    r = subprocess.run([native("nasrt-run"), str(model), str(x)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


@pytest.mark.parametrize("flags,message", [
    (["--top-k", "0"], "--top-k: must be an integer >= 1, got '0'"),
    (["--threads", "-1"], "--threads: must be an integer >= 1, got '-1'"),
])
def test_nasrt_run_bad_flags(tmp_path, model, flags, message):
    np.save(tmp_path / "x.npy", np.zeros((3, 32, 32), np.float32))
    r = subprocess.run([native("nasrt-run"), str(model), str(tmp_path / "x.npy"), *flags],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_nasrt_bench_refuses_cores_outside_the_affinity_mask(model):
    outside = max(os.sched_getaffinity(0)) + 1
    for cores in (f"0,{outside}", "0,x"):
        r = subprocess.run([native("nasrt-bench"), str(model), "--cores", cores], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert (f"--cores: core {outside} is not available to this process" if "x" not in cores
                else "--cores: bad core 'x'") in r.stderr


def test_c_only_app_finds_the_package(tmp_path):
    """project(app C) with find_package(nasrt): the package enables C++ for the link itself."""
    prefix = Path(native("nasrt-run")).resolve().parents[1]
    b = tmp_path / "build"
    r = subprocess.run(["cmake", "-S", str(ROOT / "examples" / "c-only"), "-B", str(b),
                        f"-DCMAKE_PREFIX_PATH={prefix}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["cmake", "--build", str(b)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(b / "classify_c_only"), str(ROOT / "tests/data/tiny.nasrt"),
                        str(ROOT / "tests/data/tiny_input.bin"), "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "class" in r.stdout, r.stderr
