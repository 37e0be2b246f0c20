"""The native tools (C API) against the Python runtime: bitwise equal logits on
1 and P threads. CI builds them (NASRT_NATIVE_BIN = the installed bin dir);
elsewhere the test runs when nasrt-run is on PATH."""
import os
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import nasrt
from _helpers import host_vnni, random_plan
from nasrt.runtime.bench import write_random_model
from nasrt.runtime.runtime import compiled_backends


def native(tool: str) -> str:
    d = os.environ.get("NASRT_NATIVE_BIN")
    exe = str(Path(d) / tool) if d else shutil.which(tool)
    if not exe or not Path(exe).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{tool} not built: CI must set NASRT_NATIVE_BIN")
        pytest.skip(f"{tool} not built (cmake --install, then NASRT_NATIVE_BIN=<prefix>/bin)")
    return exe


@pytest.mark.parametrize("seed", range(6))
def test_c_api_logits_bitwise_equal_to_python(seed, tmp_path):
    exe = native("nasrt-run")
    plan = random_plan(random.Random(900 + seed))
    model = tmp_path / "m.nasrt"
    write_random_model(plan, model, seed=seed)
    x = np.random.default_rng(seed).standard_normal((2, *plan.input)).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    for threads in sorted({1, plan.num_paths}):
        out = tmp_path / f"y{threads}.bin"
        r = subprocess.run([exe, str(model), str(tmp_path / "x.bin"), "--threads", str(threads), "--logits", str(out)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        y = np.fromfile(out, np.float32).reshape(2, plan.classes)
        np.testing.assert_array_equal(y, nasrt.Runtime(model, threads=threads).run(x))


@pytest.mark.parametrize("seed", range(4))
def test_c_api_int8_logits_bitwise_equal_to_python(seed, tmp_path):
    """quantise -> model file (format 3) -> native loader -> C API: the logits of Python's
    Runtime bitwise, on 1 and P threads, mixed precision (default rule) and all-int8."""
    from nasrt.contract.modelfile import read_model
    from nasrt.quant import calibrate, default_fp32, write_int8_model
    exe = native("nasrt-run")
    plan = random_plan(random.Random(950 + seed))
    write_random_model(plan, tmp_path / "f.nasrt", seed=seed)
    _, tensors, meta = read_model(tmp_path / "f.nasrt")
    rng = np.random.default_rng(seed)
    calib = rng.standard_normal((16, *plan.input)).astype(np.float32)
    x = rng.standard_normal((3, *plan.input)).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    for fp32 in (default_fp32(plan), ()):
        model = tmp_path / "q.int8.nasrt"
        write_int8_model(model, plan, tensors, calibrate(plan, tensors, calib, "numpy-minmax", fp32=fp32), meta)
        for threads in sorted({1, plan.num_paths}):
            out = tmp_path / f"y{threads}.bin"
            r = subprocess.run([exe, str(model), str(tmp_path / "x.bin"), "--threads", str(threads), "--logits",
                                str(out)], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            rt = nasrt.Runtime(model, threads=threads)
            assert "int8" in rt.precisions.values()
            np.testing.assert_array_equal(np.fromfile(out, np.float32).reshape(3, plan.classes), rt.run(x))


def test_nasrt_run_backend_runs_the_int8_fixture_as_python_does(tmp_path):
    """`nasrt-run --backend` (the aarch64 board check runs the int8 fixture so): the logits of
    Python's Runtime on that backend, bitwise; an unknown backend is a one-line error."""
    exe = native("nasrt-run")
    data = Path(__file__).resolve().parent / "data"
    model, x = data / "fuzz" / "tiny.int8.nasrt", data / "tiny_int8_inputs.bin"
    xs = np.fromfile(x, np.float32).reshape(-1, 3, 16, 16)
    for backend in ("reference", *[b for b in ("xnnpack", "onednn") if b in compiled_backends()]):
        out = tmp_path / f"{backend}.bin"
        r = subprocess.run([exe, str(model), str(x), "--backend", backend, "--threads", "2", "--logits", str(out)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        rt = nasrt.Runtime(model, threads=2, backend=backend)
        if backend == "onednn" and not host_vnni():  # the fixture's 8-bit convs fall back (|w| > 64)
            assert rt.kernels["stem"] == "onednn" and "onednn failed the load-time self-check" in r.stderr
        else:
            assert set(rt.kernels.values()) == {backend}
        np.testing.assert_array_equal(np.fromfile(out, np.float32).reshape(len(xs), -1), rt.run(xs))
    r = subprocess.run([exe, str(model), str(x), "--backend", "fastest"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "backend: must be auto" in r.stderr


def test_native_tools_give_one_line_errors(tmp_path):
    exe = native("nasrt-run")
    bad = tmp_path / "bad.nasrt"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    r = subprocess.run([exe, str(bad), str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "bad.nasrt" in r.stderr
    bench = native("nasrt-bench")
    r = subprocess.run([bench, str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "bad.nasrt: not a readable safetensors model file" in r.stderr
