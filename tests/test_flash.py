"""Training-free search (FLASH): the topology metric by hand, the predictor, SHGO under a
budget giving a valid plan, the sample cache, the strategy end to end."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")

import nasrt.search  # noqa: E402
from nasrt.contract.latency import predict_latency  # noqa: E402
from nasrt.contract.plan import Block, Plan, Sync  # noqa: E402
from nasrt.contract.space import SearchSpace  # noqa: E402
from nasrt.data.builtin import load_dataset  # noqa: E402
from nasrt.search.config import SearchConfig, TrainConfig  # noqa: E402
from nasrt.search.flash import (  # noqa: E402
    Predictor,
    Relaxation,
    SampleSettings,
    nn_degree,
    one_hot,
    run_flash,
    sample_plans,
    shgo_search,
    soft_features,
)

TINY = SearchSpace(paths=2, channels=(4,), strides=(1,), ops=("conv3x3", "sepconv3x3"), stem_kernel=None,
                   hidden=()).bind((2, 6, 6), 3)


def test_nn_degree_by_hand():
    plan = Plan((2, 6, 6), 3, None, ((Block("conv", 3, 1, 4),), (Block("sepconv", 3, 1, 4),)),
                (Sync(0, "conv1x1"),), ())
    # edges: conv 2*4, sepconv dw 2*1 + pw 2*4, conv1x1 sync (2*4)*4, head FC (2*4)*3 = 74
    # nodes: input 2, conv 4, sepconv 2 + 4, sync 4, head 3 = 19
    assert nn_degree(TINY, plan) == pytest.approx(2 * 74 / 19)
    no_sync = Plan(plan.input, 3, None, plan.paths, (), ())
    assert nn_degree(TINY, no_sync) == pytest.approx(2 * 42 / 15)


def test_soft_features_are_the_hard_ones_at_one_hot_choices_and_mix_linearly_in_macs():
    rx = Relaxation.of(TINY)
    a = np.array([[[1.0, 0.0], [1.0, 0.0]]])
    b = np.array([[[0.0, 1.0], [0.0, 1.0]]])
    fa, fb = soft_features(rx, a, np.array([0.0])), soft_features(rx, b, np.array([0.0]))
    plan_a = Plan((2, 6, 6), 3, None, ((Block("conv", 3, 1, 4),),) * 2, (), ())
    assert 10 ** fa[1] == pytest.approx(plan_a.macs())
    mid = soft_features(rx, (a + b) / 2, np.array([0.0]))
    assert 10 ** mid[1] == pytest.approx((10 ** fa[1] + 10 ** fb[1]) / 2)
    assert np.allclose(fa, soft_features(rx, *one_hot(TINY, plan_a)))


def test_predictor_recovers_a_linear_law():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    y = 0.8 + X @ np.array([0.01, 0.02, -0.005, 0.0])
    p = Predictor.fit(X, y, ridge=0.0)
    assert all(p(x) == pytest.approx(t, abs=1e-9) for x, t in zip(X, y))
    # a constant feature (std 0) is ignored, not a division by zero
    X[:, 3] = 1.0
    assert np.isfinite(Predictor.fit(X, y)(X[0]))


def test_shgo_gives_a_valid_plan_under_the_budget():
    from test_latency import SPACE, planted_lut
    lut = planted_lut()
    plans = sample_plans(SPACE, 12, 0)
    rx = Relaxation.of(SPACE)
    X = np.array([soft_features(rx, *one_hot(SPACE, p)) for p in plans])
    pred = Predictor.fit(X, X[:, 1] * 0.1)  # more MACs, more accuracy: the budget must bind
    for budget in (75.0, 140.0):  # the fastest plan of SPACE is 64.5 us, the slowest ~200
        plan, info = shgo_search(SPACE, pred, lut, budget_us=budget)
        assert nasrt.Plan.from_dict(plan.to_dict()) == plan  # a valid plan-v1 plan
        assert predict_latency(plan, lut, 2) <= budget + 1e-9
        assert info["shgo_evaluations"] > 0
    unconstrained, _ = shgo_search(SPACE, pred)  # no table: MACs cost, beta 0.01 -> the biggest net
    assert all(b.kernel == 5 for path in unconstrained.paths for b in path)
    with pytest.raises(ValueError, match="cannot be met"):
        shgo_search(SPACE, pred, lut, budget_us=60.0)
    with pytest.raises(ValueError, match="latency table"):
        shgo_search(SPACE, pred, None, budget_us=50.0)


def test_flash_end_to_end_reuses_cached_samples(tmp_path):
    """search --strategy flash -> retrain -> export -> runtime equal to torch; the second
    search trains nothing and derives the same plan."""
    from nasrt.search.train import retrain
    ds = load_dataset("synthetic")
    sp = SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), ops=("conv3x3", "sepconv3x3"), stem_kernel=3,
                     stem_out=4, hidden=(8,))
    settings = SampleSettings(epochs=1, limit=256, test_limit=128)
    cfg = SearchConfig()
    plan = run_flash(sp, ds, cfg, tmp_path / "a", tmp_path / "cache", 6, settings, log=lambda *a: None).plan
    report = json.loads((tmp_path / "a" / "flash.json").read_text())
    assert report["samples"] == 6 and report["sample_training_seconds"] > 0
    assert len(list((tmp_path / "cache").glob("*.json"))) == 6
    again = run_flash(sp, ds, cfg, tmp_path / "b", tmp_path / "cache", 6, settings, log=lambda *a: None).plan
    assert json.loads((tmp_path / "b" / "flash.json").read_text())["sample_training_seconds"] == 0
    assert again.paths == plan.paths and again.syncs == plan.syncs
    assert nasrt.Plan.load(tmp_path / "a" / "plan.json").meta["search"]["strategy"] == "flash"
    retrain(plan, ds, TrainConfig(epochs=1), tmp_path / "a", show_progress=False, log=lambda *a: None)
    net = nasrt.search.build_net(plan)
    net.load_state_dict(torch.load(tmp_path / "a" / "checkpoint_train.pt", weights_only=False)["net"])
    x = ds.x_test[:8]
    with torch.no_grad():
        ref = net.eval()(torch.from_numpy(x)).numpy()
    y = nasrt.Runtime(tmp_path / "a" / "model.nasrt", threads=2).run(x)
    assert np.abs(y - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    # a damaged cache entry is trained again, not a crash
    victim = sorted((tmp_path / "cache").glob("*.json"))[0]
    victim.write_text("{broken")
    run_flash(sp, ds, cfg, tmp_path / "c", tmp_path / "cache", 6, settings, log=lambda *a: None)
    assert json.loads(victim.read_text())["test_acc"] >= 0


def test_cli_flash_errors(tmp_path, capsys):
    from nasrt.cli import main
    assert main(["search", "--strategy", "flash", "--dataset", "synthetic", "--flash-samples", "2",
                 "--out", str(tmp_path)]) == 2
    assert "--flash-samples must be >= 5" in capsys.readouterr().err


def test_a_plan_outside_the_space_names_its_op():
    plan = Plan((2, 6, 6), 3, None, ((Block("conv", 5, 1, 4),),) * 2, (), ())
    with pytest.raises(ValueError, match=r"plan paths\[0\]\[0\]: conv5x5 is not a choice of the space"):
        one_hot(TINY, plan)
