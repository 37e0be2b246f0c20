"""The runtime against the torch net it was exported from, on many random plans."""
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nasrt  # noqa: E402
from _helpers import export_random, random_plan, sample_input  # noqa: E402

SEEDS = range(40)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_plan_matches_torch(seed, tmp_path):
    plan = random_plan(random.Random(seed))
    net, path, _ = export_random(plan, tmp_path, seed)
    x = sample_input(plan, n=2, seed=seed)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    tol = 1e-4 * max(np.abs(ref).max(), 1e-6)
    for threads in sorted({1, plan.num_paths}):
        rt = nasrt.Runtime(path, threads=threads)
        y = rt.run(x)
        err = np.abs(y - ref).max()
        assert err <= tol, f"seed {seed} threads {threads}: max err {err} > {tol}\n{plan.summary()}"


@pytest.mark.parametrize("seed", range(0, 40, 3))
def test_reference_backend_matches_xnnpack(seed, tmp_path):
    from nasrt import _core

    if not _core.xnnpack_compiled():
        pytest.skip("built without XNNPACK")
    plan = random_plan(random.Random(1000 + seed))
    _, path, _ = export_random(plan, tmp_path, seed)
    x = sample_input(plan, n=1, seed=seed)
    a = nasrt.Runtime(path, threads=1, backend="reference").run(x)
    b = nasrt.Runtime(path, threads=plan.num_paths, backend="xnnpack").run(x)
    assert np.abs(a - b).max() <= 1e-4 * max(np.abs(a).max(), 1e-6), plan.summary()


def test_chw_input_and_batch(tmp_path):
    plan = random_plan(random.Random(7))
    net, path, _ = export_random(plan, tmp_path)
    rt = nasrt.Runtime(path)
    x = sample_input(plan, n=3)
    batch = rt.run(x)
    assert batch.shape == (3, plan.classes) and batch.dtype == np.float32
    np.testing.assert_array_equal(rt.run(x[1]), batch[1:2])
    # A non-contiguous view gives the same result as its contiguous copy.
    xt = np.ascontiguousarray(np.swapaxes(x, 2, 3))
    np.testing.assert_array_equal(rt.run(np.swapaxes(xt, 2, 3)), batch)


def test_paper_plan_example_from_spec(tmp_path):
    """The example plan printed in plan-v1.md, end to end."""
    d = {"format": "nasrt.plan", "version": 1, "input": [3, 32, 32], "classes": 10,
         "stem": {"op": "conv", "kernel": 5, "stride": 1, "out": 8},
         "paths": [[{"op": "conv", "kernel": 5, "stride": 1, "out": 8},
                    {"op": "conv", "kernel": 3, "stride": 2, "out": 16},
                    {"op": "conv", "kernel": 5, "stride": 2, "out": 32},
                    {"op": "conv", "kernel": 3, "stride": 2, "out": 64}],
                   [{"op": "conv", "kernel": 3, "stride": 1, "out": 8},
                    {"op": "sepconv", "kernel": 5, "stride": 2, "out": 16},
                    {"op": "conv", "kernel": 3, "stride": 2, "out": 32},
                    {"op": "conv", "kernel": 5, "stride": 2, "out": 64}]],
         "syncs": [{"after": 1, "merge": "conv1x1"}, {"after": 3, "merge": "sum"}],
         "head": {"hidden": [64]}}
    plan = nasrt.Plan.from_dict(d)
    net, path, _ = export_random(plan, tmp_path)
    x = sample_input(plan, n=1)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    for threads in (1, 2):
        np.testing.assert_allclose(nasrt.Runtime(path, threads=threads).run(x), ref,
                                   atol=1e-4 * np.abs(ref).max(), rtol=0)


# Every random plan may hold residual blocks; these seeds' plans are half residual blocks on
# every path, on 1 and P threads.
@pytest.mark.parametrize("seed", range(20))
def test_residual_plan_matches_torch(seed, tmp_path):
    plan = random_plan(random.Random(3000 + seed), residual=True)
    net, path, _ = export_random(plan, tmp_path, seed)
    x = sample_input(plan, n=2, seed=seed)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    tol = 1e-4 * max(np.abs(ref).max(), 1e-6)
    for threads in sorted({1, plan.num_paths}):
        y = nasrt.Runtime(path, threads=threads).run(x)
        err = np.abs(y - ref).max()
        assert err <= tol, f"seed {seed} threads {threads}: max err {err} > {tol}\n{plan.summary()}"
