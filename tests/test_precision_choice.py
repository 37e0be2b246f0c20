"""Per-conv precision chosen by measurement (`nasrt quantize --fp32-layers auto`): on a planted
timing (the timer is the only source of times) the choice keeps a conv fp32 where fp32 is faster
or int8 loses too much, and falls back to the default rule when the whole net is slower on either
thread count; how the list was chosen is recorded in nasrt.quant (both readers)."""
import json
import re

import numpy as np
import pytest
from test_quant import rand_tensors

from nasrt import _core
from nasrt.cli import main
from nasrt.contract.modelfile import write_model
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.data.builtin import load_dataset
from nasrt.quant import calibrate, default_fp32, read_int8_model
from nasrt.quant.params import read_params
from nasrt.quant.quantize import AUTO_MIN_SQNR_DB, choose_fp32, layer_errors, quantize_model
from nasrt.runtime import precision

# A 1-channel input (the default keeps the stem fp32), a sepconv and a conv1x1 merge.
PLAN = Plan((1, 12, 12), 10, Block("conv", 3, 1, 8), ((Block("conv", 3, 1, 8), Block("sepconv", 3, 2, 8)),
                                                     (Block("conv", 5, 1, 8), Block("conv", 3, 2, 8))),
            (Sync(1, "conv1x1"),))
SLOW_INT8 = "paths.1.blocks.0"


NET = ((1, 10.0, 12.0), (2, 6.0, 7.0))  # (threads, candidate us, default us)


class PlantedTimer:
    """Every conv 2 us in int8 and 3 us in fp32, except the given ones (fp32 faster there); the
    whole net: ``nets[i]`` for the i-th candidate timed (the last one after that). Records what
    it was asked."""

    def __init__(self, fp32_faster=(SLOW_INT8,), nets=(NET,)):
        self.fp32_faster, self.nets, self.calls = set(fp32_faster), nets, []

    def host(self):
        return "planted | none | reference"

    def conv_us(self, fp32_model, int8_model):
        self.calls.append("conv_us")
        names = [t["name"] for t in _core.tune_convs(_core.load_model_bytes(int8_model, "int8"), 1, 1)]
        return {n: {"fp32": {"onednn": 1.0 if n in self.fp32_faster else 3.0, "xnnpack": 4.0},
                    "int8": {"onednn": 2.0, "xnnpack": 2.5}} for n in names}

    def whole_net_us(self, a, b, paths):
        net = self.nets[min(self.calls.count("whole_net_us"), len(self.nets) - 1)]
        self.calls.append("whole_net_us")
        assert paths == 2
        return [{"threads": t, "a_us": x, "b_us": y} for t, x, y in net]


def _net(net):
    return [{"threads": t, "auto_us": x, "default_us": y} for t, x, y in net]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    write_model(d / "m.nasrt", PLAN, rand_tensors(PLAN, seed=5), {})
    return d / "m.nasrt", load_dataset("synthetic")


def _quantize(model, out, timer, **kw):
    path, ds = model
    return quantize_model(path, ds, out, 64, "numpy-minmax", fp32_layers="auto", timer=timer, **kw)


def test_auto_keeps_fp32_where_fp32_is_faster_and_records_it(tmp_path, model):
    timer = PlantedTimer()
    r = _quantize(model, tmp_path / "a.int8.nasrt", timer)
    # The stem is int8 here: the planted timing says int8 is faster there.
    # Both candidates tie: the per-conv choice (tried first) stays.
    assert r.qp.fp32 == {SLOW_INT8} and timer.calls == ["conv_us", "whole_net_us", "whole_net_us"]
    c = r.qp.fp32_choice
    assert c["rule"] == "auto" and c["kept"] == "auto" and c["host"] == "planted | none | reference"
    assert c["min_sqnr_db"] == AUTO_MIN_SQNR_DB
    assert c["convs"][SLOW_INT8] == {"fp32_us": 1.0, "int8_us": 2.0, "sqnr_db": c["convs"][SLOW_INT8]["sqnr_db"],
                                     "precision": "fp32"}
    assert c["convs"]["stem"]["precision"] == "int8" and c["convs"]["stem"]["int8_us"] == 2.0
    # Tried: the per-conv choice, then the convs kept for accuracy alone (none here: every conv int8).
    assert c["tried"] == [{"fp32": [SLOW_INT8], "net": _net(NET)}, {"fp32": [], "net": _net(NET)}]
    # The record round-trips through the file; the native loader takes it and runs the choice.
    _, qp, _, _ = read_int8_model(tmp_path / "a.int8.nasrt")
    assert qp.fp32 == {SLOW_INT8} and qp.fp32_choice == c
    m = _core.load_model(str(tmp_path / "a.int8.nasrt"))
    assert {k: v["precision"] for k, v in m.quant["layers"].items() if v["precision"] == "fp32"} == {SLOW_INT8: "fp32"}


@pytest.mark.parametrize("slower_on", [1, 2])
def test_auto_refuses_a_whole_net_slower_on_either_thread_count(tmp_path, model, slower_on):
    net = tuple((t, 8.0 if t == slower_on else 5.0, 7.0) for t in (1, 2))
    r = _quantize(model, tmp_path / "b.int8.nasrt", PlantedTimer(nets=(net,)))
    assert r.qp.fp32 == default_fp32(PLAN) == {"stem"}
    c = r.qp.fp32_choice
    assert c["kept"] == "default" and c["convs"][SLOW_INT8]["precision"] == "fp32"  # what was measured
    assert c["tried"] == [{"fp32": [SLOW_INT8], "net": _net(net)}, {"fp32": [], "net": _net(net)}]
    assert read_int8_model(tmp_path / "b.int8.nasrt")[1].fp32 == {"stem"}


def test_auto_takes_the_faster_whole_net_of_its_candidates(tmp_path, model):
    """Per conv fp32 wins at SLOW_INT8, but its conversions make that net slower than every conv in
    int8 (the default Fashion-MNIST net's stem on a VNNI host did this): the all-int8 set wins."""
    slow, fast = ((1, 11.0, 12.0), (2, 6.9, 7.0)), ((1, 9.0, 12.0), (2, 5.0, 7.0))
    r = _quantize(model, tmp_path / "d.int8.nasrt", PlantedTimer(nets=(slow, fast)))
    assert r.qp.fp32 == set() and r.qp.fp32_choice["kept"] == "auto"
    assert read_int8_model(tmp_path / "d.int8.nasrt")[1].fp32 == set()


def test_auto_equal_to_the_default_is_not_timed_against_itself(tmp_path, model):
    timer = PlantedTimer(fp32_faster=("stem",), nets=(((1, 13.0, 12.0), (2, 6.0, 7.0)),))
    r = _quantize(model, tmp_path / "c.int8.nasrt", timer)
    # Only the accuracy-only set (every conv int8) is timed; it loses on 1 thread.
    assert r.qp.fp32 == {"stem"} and timer.calls == ["conv_us", "whole_net_us"]
    assert r.qp.fp32_choice["kept"] == "auto" and [t["fp32"] for t in r.qp.fp32_choice["tried"]] == [[]]


def test_auto_keeps_a_conv_fp32_whose_int8_error_is_too_large(model):
    path, ds = model
    from nasrt.contract.modelfile import read_model
    plan, t, _ = read_model(path)
    qp = calibrate(plan, t, ds.x_train[:64], "numpy-minmax", fp32=())
    xs = ds.x_train[64:128]
    errs = {k: e.sqnr_db for k, e in layer_errors(plan, t, qp, xs).items() if k in _core_convs(plan, t, qp)}
    worst, second = sorted(errs, key=errs.get)[:2]
    threshold = (errs[worst] + errs[second]) / 2  # only the worst conv is below it
    fp32, rec = choose_fp32(plan, t, qp, xs, path.read_bytes(), PlantedTimer(fp32_faster=()), threshold)
    assert fp32 == {worst} and rec["convs"][worst]["precision"] == "fp32"
    assert rec["convs"][worst]["sqnr_db"] == pytest.approx(errs[worst], abs=1e-3)


def _core_convs(plan, t, qp):
    from nasrt.quant import int8_model_bytes
    return {c["name"] for c in _core.tune_convs(_core.load_model_bytes(int8_model_bytes(plan, t, qp), "m"), 1, 1)}


def test_other_rules_are_recorded_and_the_params_file_keeps_the_record(tmp_path, model):
    path, ds = model
    for rule, want, rec in (("default", {"stem"}, "default"), ("none", set(), "none"),
                            (["head.0", SLOW_INT8], {"head.0", SLOW_INT8}, "given")):
        r = quantize_model(path, ds, tmp_path / "q.json", 32, "numpy-minmax", fp32_layers=rule)
        qp = read_params(tmp_path / "q.json", PLAN)
        assert r.qp.fp32 == qp.fp32 == want and qp.fp32_choice == {"rule": rec}
    d = json.loads((tmp_path / "q.json").read_text())
    d["fp32_choice"] = {"rule": "fastest"}
    (tmp_path / "q.json").write_text(json.dumps(d))
    with pytest.raises(Exception, match=r"q\.json: fp32_choice: must be an object whose rule is default, none, "
                                        r"given or auto"):
        read_params(tmp_path / "q.json", PLAN)


def test_cli_auto_prints_the_table_and_both_timings(tmp_path, model, monkeypatch, capsys):
    timer = PlantedTimer(nets=(((1, 13.0, 12.0), (2, 6.0, 7.0)),))
    for f in ("conv_us", "whole_net_us", "host"):  # the timing source the CLI uses
        monkeypatch.setattr(precision, f, getattr(timer, f))
    out = tmp_path / "m.int8.nasrt"
    assert main(["quantize", str(model[0]), "--dataset", "synthetic", "--calib-images", "32", "--method",
                 "numpy-minmax", "--out", str(out), "--fp32-layers", "auto"]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"\n  {re.escape(SLOW_INT8)} +fp32 +1\.0  int8 +2\.0  SQNR +[\d.]+  -> fp32\n", text)
    for fp32 in (SLOW_INT8, "none"):
        assert (f"whole net with fp32 {fp32} vs the default rule: 1 thread: 13.0 us vs 12.0 us, "
                "2 threads: 6.0 us vs 7.0 us\n") in text
    assert "kept the default rule (the measured choices were slower on the whole net)" in text
    assert "fp32: stem)" in text


def test_cli_fp32_layers_names_are_checked_before_any_work(tmp_path, model, capsys):
    out = tmp_path / "m.int8.nasrt"
    assert main(["quantize", str(model[0]), "--dataset", "synthetic", "--out", str(out),
                 "--fp32-layers", "stem,head.7"]) == 2
    err = capsys.readouterr().err
    assert re.match(r"nasrt: error: --fp32-layers: must be default, auto, none or layer names of \S+m\.nasrt "
                    r"\(stem, .*\), got 'head\.7'\n$", err)
    assert not out.exists()


def test_the_runtime_timer_times_every_conv_in_both_precisions(model):
    """The real timing source (no planted times): every conv of the model in both precisions."""
    path, ds = model
    from nasrt.contract.modelfile import read_model
    from nasrt.quant import int8_model_bytes
    plan, t, _ = read_model(path)
    qp = calibrate(plan, t, ds.x_train[:32], "numpy-minmax", fp32=())
    us = precision.conv_us(path.read_bytes(), int8_model_bytes(plan, t, qp))
    assert set(us) == _core_convs(plan, t, qp) and "stem" in us
    assert all(set(v) == {"fp32", "int8"} and all(x > 0 for p in v.values() for x in p.values()) for v in us.values())
    default = int8_model_bytes(plan, t, calibrate(plan, t, ds.x_train[:32], "numpy-minmax"))
    runs = precision.whole_net_us(int8_model_bytes(plan, t, qp), default, len(plan.paths))
    assert [r["threads"] for r in runs][0] == 1 and all(r["a_us"] > 0 and r["b_us"] > 0 for r in runs)
    assert np.isfinite([r["a_us"] for r in runs]).all()


def test_int8_convs_experiment_writes_the_per_conv_table(tmp_path, monkeypatch):
    import runpy
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    data = root / "tests" / "data"
    monkeypatch.setattr(sys, "argv", ["int8_convs.py", str(data / "tiny.nasrt"), "--int8",
                                      str(data / "fuzz" / "tiny.int8.nasrt"), "--out", str(tmp_path)])
    runpy.run_path(str(root / "benchmarks" / "experiments" / "int8_convs.py"), run_name="__main__")
    r = json.loads((tmp_path / "int8_convs.json").read_text())["models"][0]
    names = [c["name"] for c in r["convs"]]
    assert names[0] == "stem" and "syncs.0" in names and "paths.1.blocks.2.dw" in names
    for c in r["convs"]:
        assert "reference" in c["fp32"] and "reference" in c["int8"]
        won = "fp32" if c["fp32"][c["best"]["fp32"]] < c["int8"][c["best"]["int8"]] else "int8"
        fast = {b: v for b, v in c["int8"].items() if b != "reference"}
        assert c["won"] == won and c["best"]["int8"] == min(fast, key=fast.get)
    assert r["default_fp32"] == ["stem"] and set(r["winners_fp32"]) == {c["name"] for c in r["convs"] if c["won"] == "fp32"}
    assert set(r["whole_net"]) == {"int8 default vs fp32", "all int8 vs int8 default", "per-conv winners vs int8 default"}
    assert "| conv | fp32 " in (tmp_path / "int8_convs.md").read_text()
