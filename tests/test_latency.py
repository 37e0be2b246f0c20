"""Latency table, latency model, differentiable latency, budget, profile schema."""
import dataclasses
import warnings

import pytest

torch = pytest.importorskip("torch")

from nasrt.contract.latency import predict_latency  # noqa: E402
from nasrt.contract.plan import Block, Plan, Sync  # noqa: E402
from nasrt.contract.space import SearchSpace  # noqa: E402
from nasrt.errors import ModelError  # noqa: E402
from nasrt.search.budget import fit_budget  # noqa: E402
from nasrt.search.cost import expected_latency, latency_table, smooth_max  # noqa: E402
from nasrt.search.supernet import derive  # noqa: E402

SPACE = SearchSpace(paths=2, channels=(4, 8, 8), strides=(1, 2, 1), ops=("conv3x3", "conv5x5"), stem_kernel=3,
                    stem_out=4, hidden=(8,)).bind((1, 12, 12), 4)


def planted_lut(space=SPACE, threads=2, op_us=None, sync_us=(3.0, 5.0, 7.0), barrier_us=None, precision=None,
                settings=None):
    """A hand-built table: conv3x3 costs 10*(l+1) us, conv5x5 30*(l+1) us at layer l. precision None:
    a table before int8 (no field); settings: more settings (the round spreads: absent before 0.3)."""
    from nasrt.contract.lut import LatencyTable
    L = space.layers
    op_us = op_us or [{"conv3x3": 10.0 * (l + 1), "conv5x5": 30.0 * (l + 1)} for l in range(L)]
    d = {"format": "nasrt.lut", "version": 1, "layers": [s.to_dict() for s in space.layer_shapes()], "ops_us": op_us,
         "stem_us": {"1": 4.0, str(threads): 2.0}, "head_us": 1.0,
         "sync_us": {m: {"1": [s / 2 for s in sync_us], str(threads): list(sync_us)} for m in ("conv1x1", "sum")},
         "overhead_us": {"1": 0.5, str(threads): 1.5}, "settings": {"threads": threads, **(settings or {})}}
    if precision is not None:
        d["precision"] = precision
    if barrier_us is not None:
        d["barrier_us"] = {"1": 0.0, str(threads): barrier_us}
    return LatencyTable.from_dict(d, "planted")


def plan_of(kernels, syncs=()):
    """kernels[p][l] in {3, 5}, on SPACE's shapes."""
    paths = tuple(tuple(Block("conv", k, s, c) for k, c, s in zip(ks, SPACE.channels, SPACE.strides)) for ks in kernels)
    return Plan(SPACE.input, SPACE.classes, Block("conv", 3, 1, 4), paths,
                tuple(Sync(l, "conv1x1") for l in syncs), SPACE.hidden)


def test_single_thread_is_the_plain_sum():
    lut = planted_lut()
    plan = plan_of([[3, 5, 3], [5, 5, 3]], syncs=(1,))
    ops = (10 + 60 + 30) + (30 + 60 + 30)
    assert predict_latency(plan, lut, 1) == pytest.approx(0.5 + 4.0 + 1.0 + ops + 5.0 / 2)


def test_multi_thread_is_the_critical_path_per_segment():
    lut = planted_lut()
    plan = plan_of([[3, 5, 3], [5, 3, 5]], syncs=(0,))
    # segment 1 = layer 0: max(10, 30); sync 3; segment 2 = layers 1-2: max(60 + 30, 20 + 90)
    assert predict_latency(plan, lut, 2) == pytest.approx(1.5 + 2.0 + 1.0 + 30 + 3.0 + 110)
    no_sync = dataclasses.replace(plan, syncs=())
    assert predict_latency(no_sync, lut, 2) == pytest.approx(1.5 + 2.0 + 1.0 + max(10 + 60 + 30, 30 + 20 + 90))
    with pytest.raises(ModelError, match="measured for threads"):
        predict_latency(plan, lut, 3)


def test_more_paths_than_threads_share_threads_round_robin():
    sp = dataclasses.replace(SPACE, paths=3)
    lut = planted_lut(sp)
    paths = tuple(tuple(Block("conv", k, s, c) for c, s in zip(SPACE.channels, SPACE.strides)) for k in (5, 3, 3))
    plan = Plan(SPACE.input, 4, Block("conv", 3, 1, 4), paths, (), SPACE.hidden)
    # thread 0 runs paths 0 and 2 (180 + 60), thread 1 path 1 (60)
    assert predict_latency(plan, lut, 2) == pytest.approx(1.5 + 2.0 + 1.0 + 240)


def test_table_shape_mismatch_is_an_error():
    other = SearchSpace(channels=(8, 16), strides=(1, 2)).bind((1, 12, 12), 4)
    plan = derive(other, torch.zeros(2, 2, 2), torch.zeros(2, 2))
    with pytest.raises(ModelError, match="plan has 2 layers, the latency table 3"):
        predict_latency(plan, planted_lut(), 2)
    with pytest.raises(ModelError, match="profile this space"):
        latency_table(other, planted_lut())


def test_smooth_max_approaches_max_as_temperature_falls():
    x = torch.tensor([3.0, 7.0, 6.5])
    gaps = [float(smooth_max(x, tau) - 7.0) for tau in (4.0, 1.0, 0.1, 0.01)]
    assert all(g >= 0 for g in gaps) and gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-3


@pytest.mark.parametrize("kernels,syncs", [([[3, 5, 3], [5, 3, 5]], (0,)), ([[5, 5, 5], [3, 3, 3]], ()),
                                           ([[3, 3, 5], [3, 5, 3]], (0, 1, 2))])
def test_differentiable_latency_equals_the_model_at_hard_choices(kernels, syncs):
    lut = planted_lut()
    table = latency_table(SPACE, lut)
    L, P = SPACE.layers, SPACE.paths
    op_probs = torch.zeros(L, P, 2, dtype=torch.float64)
    for p in range(P):
        for l in range(L):
            op_probs[l, p, 0 if kernels[p][l] == 3 else 1] = 1
    sync_probs = torch.tensor([[1.0, 0.0] if l in syncs else [0.0, 1.0] for l in range(L)])
    got = float(expected_latency(op_probs, sync_probs, table, tau=1e-3))
    assert got == pytest.approx(predict_latency(plan_of(kernels, syncs), lut, 2), abs=0.01)
    # and it is differentiable in both kinds of decision variable
    logits = torch.zeros(L, P, 2, requires_grad=True)
    s_logits = torch.zeros(L, 2, requires_grad=True)
    expected_latency(torch.softmax(logits, -1), torch.softmax(s_logits, -1), table).backward()
    assert logits.grad.abs().sum() > 0 and s_logits.grad.abs().sum() > 0


def test_fit_budget_meets_the_budget_or_says_it_cannot():
    lut = planted_lut()
    slow = plan_of([[5, 5, 5], [5, 5, 5]], syncs=(0, 1, 2))
    assert predict_latency(slow, lut, 2) > 150
    fitted, changes = fit_budget(slow, SPACE, lut, 2, budget_us=100.0)
    assert predict_latency(fitted, lut, 2) <= 100.0 and changes
    with pytest.raises(ValueError, match="cannot be met with this space: its cheapest plan is .* us predicted on 2 threads"):
        fit_budget(slow, SPACE, lut, 2, budget_us=20.0)


def test_search_with_latency_cost_and_budget_on_planted_table(tmp_path):
    import json

    from nasrt.data.builtin import load_dataset
    from nasrt.search.config import SearchConfig
    from nasrt.search.gradient import run_search

    ds = load_dataset("synthetic")
    lut_path = tmp_path / "lut.json"
    planted_lut().save(lut_path)
    cfg = SearchConfig(epochs=2, batch_size=64, beta=0.0, cost="latency", lut=str(lut_path), budget_us=90.0)
    space = dataclasses.replace(SPACE, input=None, classes=None)
    plan = run_search(space, ds, cfg, tmp_path / "s", show_progress=False, log=lambda *a: None).plan
    assert predict_latency(plan, planted_lut(), 2) <= 90.0
    assert plan.meta["search"]["predicted_latency_us"]["2"] <= 90.0
    log = [json.loads(l) for l in (tmp_path / "s" / "search_log.jsonl").read_text().splitlines()]
    assert all(r["expected_latency_us"] > 0 for r in log)
    with pytest.raises(ValueError, match="need a latency table"):
        SearchConfig(cost="latency").validate()


def test_profile_output_schema(tmp_path):
    import json

    from nasrt.contract.lut import load_lut
    from nasrt.runtime.profile import profile

    lut = profile(SPACE, threads=1, runs=6, rounds=3, warmup=1, span_s=0, show_progress=False)
    lut.save(tmp_path / "lut.json")
    assert json.loads((tmp_path / "lut.json").read_text())["format"] == "nasrt.lut"
    assert load_lut(tmp_path / "lut.json") == lut  # the file round-trips to the same table
    assert lut.settings["runs"] == 6 and lut.settings["rounds"] == 3
    assert lut.settings["round_spread"] >= 0
    assert lut.median_factor == 1 + lut.settings["round_spread"]
    assert {"machine", "cores"} <= set(lut.machine) and lut.machine["cores"] >= 1
    assert len(lut.ops_us) == SPACE.layers and set(lut.ops_us[0]) == set(SPACE.ops)
    assert all(v > 0 for row in lut.ops_us for v in row.values())
    assert set(lut.sync_us) == {"conv1x1", "sum"} and len(lut.sync_us["conv1x1"][1]) == SPACE.layers
    assert lut.head_us > 0 and 1 in lut.overhead_us
    plan = plan_of([[3, 5, 3], [5, 3, 5]], syncs=(1,))
    assert predict_latency(plan, lut, 1) > 0
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ModelError, match="not a nasrt latency table"):
        load_lut(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="rounds"):
        profile(SPACE, runs=2, rounds=3, show_progress=False)


def test_search_and_runtime_with_three_and_four_paths(tmp_path):
    """P > 2 through search, derive, retrain, export and the runtime (threads capped by cores)."""
    import numpy as np

    import nasrt
    from nasrt.data.builtin import load_dataset
    from nasrt.search.config import SearchConfig, TrainConfig
    from nasrt.search.gradient import run_search
    from nasrt.search.train import retrain

    ds = load_dataset("synthetic")
    for P in (3, 4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # P may exceed this machine's cores: functional test only
            space = SearchSpace(paths=P, channels=(4, 8), strides=(1, 2), stem_kernel=3, stem_out=4, hidden=(8,))
        plan = run_search(space, ds, SearchConfig(epochs=1, batch_size=64), tmp_path / str(P),
                          show_progress=False, log=lambda *a: None).plan
        assert plan.num_paths == P
        retrain(plan, ds, TrainConfig(epochs=1), tmp_path / str(P), show_progress=False, log=lambda *a: None)
        x = ds.x_test[:4]
        ys = [nasrt.Runtime(tmp_path / str(P) / "model.nasrt", threads=t).run(x) for t in range(1, P + 1)]
        assert all(np.array_equal(ys[0], y) for y in ys[1:])



def test_schedule_model_without_balancing_by_hand():
    from nasrt.runtime.schedule import predict_schedule_latency
    lut = planted_lut(barrier_us=0.25)
    plan = plan_of([[3, 5, 3], [5, 3, 5]], syncs=(0,))
    # phases: stem split in rows (4.0 / 2 each), layer 0 max(10, 30), conv1x1 merge split (1.5 / 2 each),
    # layers 1-2 max(60 + 30, 20 + 90); a barrier after each phase but the last (in the call's cost)
    expected = 1.5 + 1.0 + 3 * 0.25 + 2.0 + 30 + 0.75 + 110
    assert predict_schedule_latency(plan, lut, 2, balance=False) == pytest.approx(expected)
    with pytest.raises(ModelError, match="barrier"):
        predict_schedule_latency(plan, planted_lut(), 2)


def test_schedule_model_credits_balancing():
    """A heavy path next to a light one: the runtime splits the heavy path's leading
    convs across both threads, and the model of its schedule is faster than the
    critical path."""
    from nasrt.runtime.schedule import predict_schedule_latency
    lut = planted_lut(barrier_us=0.25)
    plan = plan_of([[5, 5, 5], [3, 3, 3]])
    balanced = predict_schedule_latency(plan, lut, 2)
    unbalanced = predict_schedule_latency(plan, lut, 2, balance=False)
    assert unbalanced == pytest.approx(1.5 + 1.0 + 0.25 + 2.0 + 180)
    assert 1.5 + 1.0 + 2.0 + (180 + 60) / 2 < balanced < unbalanced  # never better than a perfect split


def test_executor_schedule_covers_every_op_once():
    """Every conv of every block, the stem and each merge appear in the schedule
    with their rows summing to the whole output, balanced or not."""
    import numpy as np

    from nasrt import _core
    from nasrt.contract.lowering import expected_tensors
    from nasrt.runtime.runtime import lower_to_netspec

    big = [(5, 16, 1), (5, 16, 1), (3, 32, 2)]  # large enough that the runtime splits the heavy path
    heavy = tuple(Block("sepconv" if l == 2 else "conv", k, s, c) for l, (k, c, s) in enumerate(big))
    light = tuple(Block("conv", 3, s, c) for _, c, s in big)
    plan = Plan((1, 32, 32), 4, Block("conv", 3, 1, 8), (heavy, light), (Sync(1, "conv1x1"),), (8,))
    tensors = {k: np.zeros(s, np.float32) for k, s in expected_tensors(plan).items()}
    for balance in (False, True):
        ex = _core.Executor(lower_to_netspec(plan, tensors), 2, [], "reference", balance=balance)
        # The pure schedule is what the executor realises (the reference kernels split every conv).
        assert _core.schedule(lower_to_netspec(plan, tensors), 2, balance) == ex.schedule()
        rows, totals = {}, {}
        for phase in ex.schedule():
            assert len(phase) == plan.num_paths
            for share in phase:
                for op in share:
                    key = (op["kind"], op["path"], op["layer"], op["conv"])
                    rows[key] = rows.get(key, 0) + op["rows"]
                    totals[key] = op["total_rows"]
        assert rows == totals
        convs = {(p, l, j) for p in range(2) for l in range(3)
                 for j in range(2 if plan.paths[p][l].op == "sepconv" else 1)}
        assert {k[1:] for k in rows if k[0] == "conv"} == convs
        assert {k[2] for k in rows if k[0] == "merge"} == {1} and ("stem", -1, 0, 0) in rows
    assert ex.phases > 4  # balanced: split phases on top of stem, 2 segments and the merge


SPREADS = {"round_spread": 0.1}


@pytest.mark.parametrize("precision", [None, "fp32", "int8"])
def test_prediction_is_the_plain_median_the_table_scaled_by_its_round_spread(precision):
    from nasrt.runtime.schedule import predict_schedule_latency
    plan = plan_of([[3, 5, 3], [5, 3, 5]], syncs=(0,))
    best_1 = 0.5 + 4.0 + 1.0 + (10 + 60 + 30) + (30 + 20 + 90) + 3.0 / 2  # the plain sum, as above
    best_2 = 1.5 + 2.0 + 1.0 + 30 + 3.0 + 110
    lut = planted_lut(precision=precision, settings=SPREADS)
    assert lut.precision == (precision or "fp32")
    assert predict_latency(plan, lut, 1) == pytest.approx(1.1 * best_1)
    assert predict_latency(plan, lut, 2) == pytest.approx(1.1 * best_2)
    assert predict_latency(plan, lut, 1, statistic="best") == pytest.approx(best_1)
    assert predict_latency(plan, lut, 2, statistic="best") == pytest.approx(best_2)
    barrier = planted_lut(precision=precision, settings=SPREADS, barrier_us=0.25)
    assert predict_schedule_latency(plan, barrier, 2, balance=False) == pytest.approx(
        1.1 * predict_schedule_latency(plan, barrier, 2, balance=False, statistic="best"))
    # A table before the spreads: its statistic unchanged.
    assert predict_latency(plan, planted_lut(precision=precision), 2) == pytest.approx(best_2)
    with pytest.raises(ValueError, match="statistic: must be one of median, best"):
        predict_latency(plan, lut, 2, statistic="mean")


def test_differentiable_latency_is_in_the_plain_median_too():
    lut = planted_lut(settings=SPREADS)
    table = latency_table(SPACE, lut)
    plan = plan_of([[3, 5, 3], [5, 3, 5]], syncs=(1,))
    idx = {3: 0, 5: 1}
    op = torch.zeros(3, 2, 2, dtype=torch.float64)
    for p, path in enumerate(plan.paths):
        for l, b in enumerate(path):
            op[l, p, idx[b.kernel]] = 1.0
    sync = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert float(expected_latency(op, sync, table, tau=1e-4)) == pytest.approx(predict_latency(plan, lut, 2), rel=1e-4)
    assert float(expected_latency(op, sync, table, tau=1e-4)) == pytest.approx(
        1.1 * predict_latency(plan, lut, 2, statistic="best"), rel=1e-4)


@pytest.mark.parametrize("settings, field", [
    ({"round_spread": -0.1}, "settings.round_spread"),
    ({"round_spread": float("nan")}, "settings.round_spread"),
    ({"round_spread": "0.1"}, "settings.round_spread"),
    ({"round_spread": 10}, "settings.round_spread"),
    ({"round_spread": True}, "settings.round_spread"),
])
def test_bad_round_spread_is_an_error_naming_the_field(settings, field):
    from nasrt.errors import LutError
    with pytest.raises(LutError, match=f"^planted: {field}: "):
        planted_lut(settings=settings)


def test_search_with_an_int8_table_records_its_precision_in_plan_and_model(tmp_path, capsys):
    from nasrt.cli import main
    from nasrt.contract.latency import searched_precision
    from nasrt.contract.modelfile import KEY_LATENCY_PRECISION, read_model
    from nasrt.data.builtin import load_dataset
    from nasrt.search.config import SearchConfig, TrainConfig
    from nasrt.search.gradient import run_search
    from nasrt.search.train import retrain

    ds = load_dataset("synthetic")
    lut_path = tmp_path / "lut.int8.json"
    planted_lut(precision="int8", settings=SPREADS).save(lut_path)
    cfg = SearchConfig(epochs=1, batch_size=64, beta=0.0, cost="latency", lut=str(lut_path), budget_us=110.0)
    space = dataclasses.replace(SPACE, input=None, classes=None)
    lines: list[str] = []
    plan = run_search(space, ds, cfg, tmp_path / "s", show_progress=False, log=lines.append).plan
    lut = planted_lut(precision="int8", settings=SPREADS)
    assert predict_latency(plan, lut, 2) <= 110.0  # the budget holds for the plain median
    record = plan.meta["search"]["latency"]
    assert record == {"precision": "int8", "table": str(lut_path), "cpu": "", "backend": "", "threads": 2,
                      "statistic": "median of many calls"}
    assert searched_precision(plan) == "int8"
    assert any(ln.startswith(f"predicted int8 latency (median of many calls; table {lut_path}): ") for ln in lines)
    retrain(plan, ds, TrainConfig(epochs=1, batch_size=64), tmp_path / "t", show_progress=False)
    assert read_model(tmp_path / "t" / "model.nasrt")[2][KEY_LATENCY_PRECISION] == "int8"
    assert main(["info", str(tmp_path / "t" / "model.nasrt")]) == 0
    out = capsys.readouterr().out
    assert f"{KEY_LATENCY_PRECISION}: int8" in out and "searched for int8 latency" in out
    assert "note: " in out and "was searched with an int8 latency table: deploy it in int8" in out


def test_precision_mismatches_are_notes_not_errors(tmp_path, monkeypatch, capsys):
    import nasrt.search.train
    from nasrt.cli import main
    from nasrt.contract.modelfile import KEY_LATENCY_PRECISION, write_model
    from nasrt.data.builtin import load_dataset
    from nasrt.quant import quantize_model
    from nasrt.runtime.bench import random_tensors

    plan = plan_of([[3, 5, 3], [5, 3, 5]])
    tensors = random_tensors(plan)
    ds = load_dataset("synthetic")
    # Quantising a net searched for fp32 latency: a note, and the int8 model is written.
    write_model(tmp_path / "fp32.nasrt", plan, tensors, {KEY_LATENCY_PRECISION: "fp32"})
    r = quantize_model(tmp_path / "fp32.nasrt", ds, tmp_path / "q.json", calib_images=8, method="numpy-minmax")
    assert r.note.startswith(f"note: {tmp_path / 'fp32.nasrt'} was searched with an fp32 latency table") \
        and "nasrt profile --precision int8" in r.note and (tmp_path / "q.json").is_file()
    for meta in ({KEY_LATENCY_PRECISION: "int8"}, {}):  # searched for int8, or without a table: nothing to note
        write_model(tmp_path / "m.nasrt", plan, tensors, meta)
        assert quantize_model(tmp_path / "m.nasrt", ds, tmp_path / "q.json", 8, "numpy-minmax").note is None
    # A bad value is an error naming the file and the key.
    write_model(tmp_path / "bad.nasrt", plan, tensors, {KEY_LATENCY_PRECISION: "bf16"})
    assert main(["info", str(tmp_path / "bad.nasrt")]) == 2
    assert (f"{tmp_path / 'bad.nasrt'}: metadata {KEY_LATENCY_PRECISION}: must be one of fp32, int8, got 'bf16'"
            in capsys.readouterr().err)
    # Training a plan searched for int8 latency: the note says how to deploy it in int8, unless --int8.
    monkeypatch.setattr(nasrt.search.train, "retrain", lambda *a, **k: {})  # the note comes before training
    dataclasses.replace(plan, meta={"search": {"latency": {"precision": "int8"}}}).save(tmp_path / "plan.json")
    for flags, noted in (([], True), (["--int8"], False)):
        assert main(["train", str(tmp_path / "plan.json"), "--dataset", "synthetic", "--out",
                     str(tmp_path / f"t{len(flags)}"), *flags]) == 0
        assert ("plan.json was searched with an int8 latency table: deploy it in int8" in capsys.readouterr().err) \
            == noted


@pytest.mark.parametrize("meta, precision", [
    ({}, None), ({"search": {"latency": {"precision": "int8"}}}, "int8"), ({"search": 3}, None),
    ({"search": {"latency": {"precision": "bf16"}}}, None), ({"search": {"latency": "int8"}}, None),
    ({"search": {"latency": {"precision": "fp32"}}}, "fp32")])
def test_searched_precision_reads_free_form_meta(meta, precision):
    from nasrt.contract.latency import searched_precision
    assert searched_precision(dataclasses.replace(plan_of([[3, 3, 3], [3, 3, 3]]), meta=meta)) == precision


def test_cli_predict_says_the_precision_and_the_plain_median(tmp_path, capsys):
    from nasrt.cli import main
    from nasrt.runtime.bench import write_random_model
    from nasrt.runtime.schedule import predict_schedule_latency

    plan = plan_of([[3, 5, 3], [5, 3, 5]], syncs=(0,))
    best_1 = 0.5 + 4.0 + 1.0 + (10 + 60 + 30) + (30 + 20 + 90) + 3.0 / 2
    lut = planted_lut(precision="int8", settings=SPREADS, barrier_us=0.25)
    lut.save(tmp_path / "lut.int8.json")
    dataclasses.replace(plan, meta={"search": {"latency": {"precision": "int8"}}}).save(tmp_path / "plan.json")
    assert main(["predict", str(tmp_path / "plan.json"), "--lut", str(tmp_path / "lut.int8.json")]) == 0
    out = capsys.readouterr().out
    assert "int8 latency measured on" in out and "predicted median of many calls" in out
    assert f"1 thread : {1.1 * best_1:8.1f}" in out
    assert f"2 threads: {predict_latency(plan, lut, 2):8.1f} critical path, " \
           f"{predict_schedule_latency(plan, lut, 2):.1f} balanced" in out
    assert "note:" not in out
    write_random_model(plan, tmp_path / "m.nasrt")  # an fp32 model against an int8 table: a note
    assert main(["predict", str(tmp_path / "m.nasrt"), "--lut", str(tmp_path / "lut.int8.json")]) == 0
    assert "is an fp32 model, " in capsys.readouterr().out
    planted_lut(dataclasses.replace(SPACE, channels=(4, 8), strides=(1, 2)), sync_us=(3.0, 5.0)).save(tmp_path / "other.json")
    assert main(["predict", str(tmp_path / "plan.json"), "--lut", str(tmp_path / "other.json")]) == 2
    assert f"{tmp_path / 'plan.json'} on {tmp_path / 'other.json'}: plan has 3 layers, the latency table 2" \
        in capsys.readouterr().err
