"""Regression tests of the reliability audit (issue: hardening): each defect
D1-D9 that the Python side can reach, and what must keep holding."""
import json
import os
import struct

import numpy as np
import pytest

import nasrt
from _helpers import run_py
from nasrt import _core
from nasrt.contract.modelfile import model_bytes
from nasrt.errors import ModelError, PlanError
from nasrt.runtime.bench import paper_sized_plan, random_tensors, write_random_model

PLAN = paper_sized_plan(syncs=True)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.nasrt"
    write_random_model(PLAN, path)
    return path




def test_d1_fresh_two_thread_runtimes_never_hang(model):
    # The native ctest does 50,000 cycles (and a TSan run); here the Python path, bounded.
    r = run_py(f"""
        import numpy as np, nasrt
        x = np.ones((1, 3, 32, 32), np.float32)
        ref = nasrt.Runtime({str(model)!r}, threads=1).run(x)
        for i in range(300):
            assert np.array_equal(nasrt.Runtime({str(model)!r}, threads=2).run(x), ref)
        print("ok")
    """, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_d2_runtime_works_in_a_forked_child(model):
    r = run_py(f"""
        import os, numpy as np, nasrt
        rt = nasrt.Runtime({str(model)!r}, threads=2)
        x = np.ones((1, 3, 32, 32), np.float32)
        ref = rt.run(x)
        pid = os.fork()
        if pid == 0:
            os._exit(0 if np.array_equal(rt.run(x), ref) else 1)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
    """, timeout=60)
    assert "child 0" in r.stdout, (r.stdout, r.stderr)
    assert "fork()ed child: running on 1 thread" in r.stderr


def test_d3_refused_worker_thread_is_an_error_not_an_abort(model):
    r = run_py(f"""
        import resource, nasrt
        from nasrt.errors import ModelError
        nasrt.Runtime({str(model)!r}, threads=1, backend="reference")
        used = int(open("/proc/self/statm").read().split()[0]) * 4096
        resource.setrlimit(resource.RLIMIT_AS, (used + (6 << 20),) * 2)  # no room for an 8 MiB thread stack
        try:
            nasrt.Runtime({str(model)!r}, threads=2, backend="reference")
        except ModelError as e:
            print("error:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert "OS refused to start worker thread" in r.stdout


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("backend", _core.compiled_backends())
def test_d4_non_finite_input_is_rejected_on_every_backend(model, bad, backend):
    rt = nasrt.Runtime(model, threads=1, backend=backend)
    x = np.zeros((2, 3, 32, 32), np.float32)
    x[1, 2, 5, 7] = bad
    with pytest.raises(ModelError, match=r"input: holds NaN or infinite values \(sample 1\)"):
        rt.run(x)


def test_d4_non_finite_logits_are_an_error(tmp_path):
    """Overflow that reaches the logits is an error. (oneDNN and XNNPACK turn a NaN into 0
    at ReLU, as their clamps do, so an overflow in the middle of the net can still give
    finite logits there: declined, see the closing note of the hardening issue.)"""
    from nasrt.contract.modelfile import write_model
    t = {k: v * (1e18 if k.endswith("weight") else 1) for k, v in random_tensors(PLAN).items()}
    write_model(tmp_path / "huge.nasrt", PLAN, t)  # finite weights whose activations overflow
    rt = nasrt.Runtime(tmp_path / "huge.nasrt", threads=1, backend="reference")
    with pytest.raises(ModelError, match="NaN or infinite logits for sample 0"):
        rt.run(np.ones((1, 3, 32, 32), np.float32))


def test_d5_tiny_files_cannot_ask_for_gigabytes(tmp_path):
    d = PLAN.to_dict()
    d["input"] = [3, 100000, 100000]
    with pytest.raises(PlanError, match="input: channels must be <= 65536 and sides <= 8192"):
        nasrt.Plan.from_dict(d)
    d["input"] = [3, 8192, 8192]
    d["paths"][0][0]["out"] = d["paths"][1][0]["out"] = 60000
    with pytest.raises(PlanError, match="paths: activations of .* GiB exceed the 1 GiB limit"):
        nasrt.Plan.from_dict(d)
    d = PLAN.to_dict()
    d["classes"] = 2 ** 31
    with pytest.raises(PlanError, match="classes: must be <= 65536"):
        nasrt.Plan.from_dict(d)
    # A valid small file whose graph claims a huge input: refused by the native loader.
    path = tmp_path / "big.nasrt"
    data = model_bytes(PLAN, random_tensors(PLAN))
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    g = json.loads(header["__metadata__"]["nasrt.graph"])
    g["input"] = [3, 50000, 50000]
    header["__metadata__"]["nasrt.graph"] = json.dumps(g)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
    with pytest.raises(ModelError, match="nasrt.graph: input: .*8192"):
        nasrt.Runtime(path)


def test_d6_lowering_is_linear_in_the_layer_count(monkeypatch):
    from nasrt.contract import lowering
    from nasrt.contract import plan as plan_mod
    from nasrt.contract.plan import Block, Plan

    calls = {"n": 0}
    real = plan_mod.lower_block

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(plan_mod, "lower_block", counting)
    counts = []
    for L in (100, 200):
        calls["n"] = 0
        p = Plan((1, 8, 8), 2, None, tuple(tuple(Block("conv", 3, 1, 4) for _ in range(L)) for _ in range(2)))
        lowering.graph(p)
        counts.append(calls["n"])
    assert counts[1] <= 2 * counts[0] + 2, counts  # quadratic would be 4x


@pytest.mark.parametrize("text", ["[" * 100000 + "]" * 100000, '{"format": "nasrt.plan", "version": ' + "9" * 5000 + "}"])
def test_d8_hostile_plan_json_gives_a_plan_error(tmp_path, text):
    p = tmp_path / "plan.json"
    p.write_text(text)
    with pytest.raises(PlanError, match="plan.json: "):
        nasrt.Plan.load(p)


@pytest.mark.parametrize("arg", [None, b"m.nasrt", 3])
def test_d8_bad_path_types_give_a_model_error(arg):
    with pytest.raises(ModelError, match="path: expected a file path"):
        nasrt.Runtime(arg)


@pytest.mark.parametrize("cores", [["a"], [None, None], 5])
def test_d8_bad_cores_give_a_model_error(model, cores):
    with pytest.raises(ModelError, match="cores"):
        nasrt.Runtime(model, threads=2, cores=cores)


def test_d8_bad_metadata_in_nasrt_run_is_one_line(tmp_path, capsys):
    from nasrt.cli import main
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, 32, 32), np.float32))
    for meta, expect in [({"nasrt.input_mean": "[0.5, 0.5, 0.5]"}, "input_std: missing"),
                         ({"nasrt.input_mean": "0.5", "nasrt.input_std": "[1,1,1]"}, "input_mean: must be a list of 3")]:
        m = tmp_path / "m.nasrt"
        write_random_model(PLAN, m)
        from nasrt.contract.modelfile import read_model, write_model
        plan, t, _ = read_model(m)
        write_model(m, plan, t, meta)
        assert main(["run", str(m), str(x)]) == 2
        err = capsys.readouterr().err
        assert expect in err and err.count("\n") == 1, err
    m = tmp_path / "c.nasrt"
    write_random_model(PLAN, m)
    plan, t, _ = read_model(m)
    write_model(m, plan, t, {"nasrt.class_names": "5"})
    assert main(["run", str(m), str(x)]) == 0  # odd class names: a warning, class numbers


def test_run_rejects_nan_and_converts_uint8_npy(model, tmp_path, capsys):
    from nasrt.cli import main
    x = tmp_path / "x.npy"
    np.save(x, np.full((3, 32, 32), np.nan, np.float32))
    assert main(["run", str(model), str(x)]) == 2
    assert "holds NaN" in capsys.readouterr().err
    np.save(x, np.full((3, 32, 32), 200, np.uint8))
    assert main(["run", str(model), str(x)]) == 0
    np.save(x, np.zeros((3, 32, 32), np.int64))
    assert main(["run", str(model), str(x)]) == 2


def test_d9_temp_files_of_killed_writers_are_removed(tmp_path):
    from nasrt._io import atomic_write_text
    target = tmp_path / "plan.json"
    dead = tmp_path / ".plan.json.999999999.x1.tmp"  # no such pid
    mine = tmp_path / f".plan.json.{os.getpid()}.x2.tmp"  # a live writer's: kept
    dead.write_text("partial")
    mine.write_text("partial")
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}" and not dead.exists() and mine.exists()


def test_d9_damaged_checkpoint_is_one_clear_error(tmp_path):
    pytest.importorskip("torch")
    from nasrt.search.training import load_checkpoint
    ck = tmp_path / "checkpoint_search.pt"
    ck.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ModelError, match="checkpoint_search.pt: damaged checkpoint .*start over without --resume"):
        load_checkpoint(ck)


def test_exports_are_reproducible_and_shippable(tmp_path):
    a, b = tmp_path / "a.nasrt", tmp_path / "b.nasrt"
    old = os.umask(0o022)
    try:
        write_random_model(PLAN, a)
        write_random_model(PLAN, b)
    finally:
        os.umask(old)
    assert a.read_bytes() == b.read_bytes()
    assert (a.stat().st_mode & 0o777) == 0o644


def test_altered_weights_fail_the_checksum(model):
    data = bytearray(model.read_bytes())
    data[-5] ^= 0x01  # a weight's low bit: still finite, still the right shape
    model.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="nasrt.data_crc32: tensor data checksum mismatch"):
        nasrt.Runtime(model)
    with pytest.raises(ModelError, match="checksum mismatch"):
        nasrt.read_model(model)


def test_concurrent_calls_agree(model):
    import threading
    rt = nasrt.Runtime(model, threads=2)
    xs = [np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(4)]
    refs = [nasrt.Runtime(model, threads=1).run(x) for x in xs]
    bad = []

    def worker(i):
        for _ in range(200):
            if not np.array_equal(rt.run(xs[i]), refs[i]):
                bad.append(i)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad
