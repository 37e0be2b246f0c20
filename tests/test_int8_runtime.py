"""The int8 executor end to end: random plans quantised on random calibration data, written
as model format 3 and run by nasrt.Runtime against the numpy oracle int8_reference
(docs/FORMATS.md section 6) on every backend, 1..P threads, balance on and off."""
import random

import numpy as np
import pytest

from _helpers import random_plan
from nasrt.contract.lowering import expected_tensors
from nasrt.quant import calibrate, default_fp32, fp32_forward, int8_reference, write_int8_model
from nasrt.runtime.runtime import Runtime, compiled_backends

f32 = np.float32
pytestmark = pytest.mark.filterwarnings("ignore:threads=.*share cores")  # P threads on 2 cores: still bitwise
PLANS = [random_plan(random.Random(s)) for s in range(10)]


def rand_tensors(plan, seed):
    """He-initialised weights, small biases: activations keep their scale through the net."""
    r = np.random.default_rng(seed)
    return {k: (r.standard_normal(shape) * (np.sqrt(2 / np.prod(shape[1:])) if k.endswith(".weight") else 0.1))
            .astype(f32) for k, shape in expected_tensors(plan).items()}


def images(plan, n, seed):
    return np.random.default_rng(seed).standard_normal((n, *plan.input)).astype(f32)


def int8_model(tmp_path, i, fp32):
    plan = PLANS[i]
    t = rand_tensors(plan, i)
    qp = calibrate(plan, t, images(plan, 32, i + 100), "numpy-minmax", fp32=fp32(plan))
    path = tmp_path / f"m{i}.int8.nasrt"
    write_int8_model(path, plan, t, qp)
    return plan, t, qp, path


def configs(plan):
    P = len(plan.paths)
    return [(b, threads, balance) for b in compiled_backends() for threads in range(1, P + 1)
            for balance in ((False, True) if threads > 1 else (True,))]


@pytest.mark.parametrize("i", range(len(PLANS)))
def test_all_int8_logits_are_bitwise_the_oracle(tmp_path, i):
    plan, _, qp, path = int8_model(tmp_path, i, lambda p: ())
    x = images(plan, 6, i + 7)
    want = int8_reference(plan, qp, x)
    for b, threads, balance in configs(plan):
        rt = Runtime(path, threads=threads, backend=b, balance=balance, adapt=False)
        assert set(rt.precisions.values()) == {"int8"}
        got = rt.run(x)
        assert np.array_equal(got, want), (b, threads, balance, np.abs(got - want).max())


def test_fp32_layers_follow_the_oracle(tmp_path):
    """The default keeps the convs reading a 1-3 channel input in fp32: the runtime's float32
    stem differs from the oracle's float64 one in the last bits, which can move a code by one
    step at a rounding boundary; the runs themselves are bitwise equal across configurations."""
    agree = n = checked = 0
    for i, plan in enumerate(PLANS):
        if not default_fp32(plan):
            continue
        # and a hidden FC in fp32 too: dequantised features in, quantised by the next FC
        plan, t, qp, path = int8_model(tmp_path, i, lambda p: default_fp32(p) | ({"head.0"} if p.hidden else set()))
        x = images(plan, 16, i + 7)
        want, f = int8_reference(plan, qp, x, tensors=t), fp32_forward(plan, t, x)
        for b in compiled_backends():
            runs = []
            for bb, threads, balance in configs(plan):
                if bb != b:
                    continue
                rt = Runtime(path, threads=threads, backend=b, balance=balance, adapt=False)
                assert {rt.precisions[k] for k in qp.fp32 if not k.startswith("head.")} == {"fp32"}  # convs only
                runs.append(rt.run(x))
            assert all(np.array_equal(r, runs[0]) for r in runs), (i, b)  # 1 vs P threads, balance
            assert np.abs(runs[0] - want).max() <= 0.05 * np.abs(want).max() + 1e-4, (i, b)
            agree, n = agree + int((runs[0].argmax(1) == want.argmax(1)).sum()), n + len(x)
        assert np.abs(want - f).max() <= 0.25 * np.abs(f).max() + 1e-3
        checked += 1
    assert checked >= 3
    assert agree >= 0.95 * n, (agree, n)


# Residual nets in int8: the add rule (FORMATS.md section 6) in the executor, bitwise the oracle.
RESIDUAL_PLANS = [random_plan(random.Random(s), residual=True) for s in range(8)]


@pytest.mark.parametrize("i", range(len(RESIDUAL_PLANS)))
def test_residual_int8_logits_are_bitwise_the_oracle(tmp_path, i):
    plan = RESIDUAL_PLANS[i]
    t = rand_tensors(plan, i)
    for fp32 in ((), default_fp32(plan)):  # all int8, then an fp32 producer into an add where the plan has one
        qp = calibrate(plan, t, images(plan, 32, i + 100), "numpy-minmax", fp32=fp32)
        path = tmp_path / f"r{i}.int8.nasrt"
        write_int8_model(path, plan, t, qp)
        x = images(plan, 6, i + 7)
        want = int8_reference(plan, qp, x, tensors=t)
        for b, threads, balance in configs(plan):
            got = Runtime(path, threads=threads, backend=b, balance=balance, adapt=False).run(x)
            if fp32:  # a float conv's last bits can move a code at a rounding boundary
                assert np.abs(got - want).max() <= 0.05 * np.abs(want).max() + 1e-4, (b, threads, balance)
            else:
                assert np.array_equal(got, want), (b, threads, balance, np.abs(got - want).max())
