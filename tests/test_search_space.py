"""Residual and width choices in the search (issue 19 item 1): the space's fields, the
SuperNet's decisions, derive, and the FLOP cost against hand-computed values."""
import json

import pytest

torch = pytest.importorskip("torch")

from nasrt.contract.plan import Plan  # noqa: E402
from nasrt.contract.space import SearchSpace, width_channels  # noqa: E402
from nasrt.data.builtin import load_dataset  # noqa: E402
from nasrt.errors import ModelError, SpaceError  # noqa: E402
from nasrt.search.budget import fit_macs  # noqa: E402
from nasrt.search.config import SearchConfig  # noqa: E402
from nasrt.search.cost import expected_macs, fixed_macs, flop_table, latency_table, loss_ops, loss_sync  # noqa: E402
from nasrt.search.gradient import run_search  # noqa: E402
from nasrt.search.net import build_net  # noqa: E402
from nasrt.search.result import EpochRecord  # noqa: E402
from nasrt.search.supernet import SuperNet, derive  # noqa: E402


def tiny(**kw):
    """2 paths, conv3x3 only, no stem: layer 0 reads the 2-channel 6x6 input (stride 1), layer 1 stride 2."""
    d = dict(paths=2, channels=(4, 4), strides=(1, 2), ops=("conv3x3",), stem_kernel=None, hidden=(),
             merge="sum", widths=(0.5, 1.0), residual="search")
    d.update(kw)
    return SearchSpace(**d).bind((2, 6, 6), 3)


# -- the space -------------------------------------------------------------------

@pytest.mark.parametrize("field, value, msg", [
    ("residual", "some", r"space.residual: must be one of none, search, all, got 'some' \(--residual\)"),
    ("residual", True, "space.residual: must be one of none, search, all"),
    ("widths", (), "space.widths: must be a list of 1..8 width multipliers"),
    ("widths", 1.0, "space.widths: must be a list of 1..8 width multipliers"),
    ("widths", (0.5, 0.0), r"space.widths\[1\]: must be a number in \(0, 16.0\], got 0.0"),
    ("widths", (1.0, True), r"space.widths\[1\]: must be a number in \(0, 16.0\], got True"),
    ("widths", (float("nan"),), r"space.widths\[0\]: must be a number"),
    ("widths", (1.0, 1), "space.widths: multipliers must be unique"),
    ("widths", (0.1,) * 9, "space.widths: must be a list of 1..8"),
])
def test_bad_residual_and_widths_are_one_line_errors(field, value, msg):
    with pytest.raises(SpaceError, match=msg) as e:
        SearchSpace(**{field: value})
    assert "\n" not in str(e.value)


def test_widths_beyond_the_channel_limit_name_the_layer():
    with pytest.raises(SpaceError, match=r"space.widths: 2 x channels\[1\] = 40000 exceeds 65536"):
        SearchSpace(channels=(8, 40000), widths=(1.0, 2.0))


def test_space_json_round_trip_and_old_files(tmp_path):
    sp = SearchSpace(residual="search", widths=(0.5, 1, 1.5))
    sp.save(tmp_path / "space.json")
    back = SearchSpace.load(tmp_path / "space.json")
    assert back == sp and back.widths == (0.5, 1.0, 1.5) and back.residual == "search"
    # A space without the choices writes the file it always did, and such files load with the defaults.
    old = SearchSpace().to_dict()
    assert "residual" not in old and "widths" not in old
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = SearchSpace.load(tmp_path / "old.json")
    assert (loaded.residual, loaded.widths) == ("none", (1.0,))
    (tmp_path / "bad.json").write_text(json.dumps({**old, "widths": [1, "2"]}))
    with pytest.raises(SpaceError, match=r"bad.json: space.widths\[1\]: must be a number"):
        SearchSpace.load(tmp_path / "bad.json")


def test_width_channels_and_shortcut_kinds():
    assert [width_channels(w, 5) for w in (0.1, 0.5, 1.5, 1.0)] == [1, 2, 8, 5]  # round half to even: 2.5 -> 2
    sp = tiny()
    assert sp.layer_widths(0) == (2, 4) and sp.max_channels == (4, 4) and sp.in_widths(0) == (2,)
    assert not sp.identity_shortcut(0)  # the input's 2 channels, out 2 or 4: a projection
    one = tiny(widths=(1.0,), channels=(2, 4))
    assert one.identity_shortcut(0) and not one.identity_shortcut(1)  # stride 2 needs the projection


# -- SuperNet and derive ------------------------------------------------------------

def test_supernet_forward_backward_reach_every_decision():
    sp = SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), ops=("conv3x3", "sepconv3x3", "metaconv5x5"),
                     stem_kernel=3, stem_out=4, hidden=(8,), residual="search",
                     widths=(0.5, 1.0, 1.5)).bind((1, 10, 10), 3)
    net = SuperNet(sp)
    assert [tuple(p.shape) for p in net.arch_parameters()] == [(2, 2, 4), (2, 2), (2, 2, 2), (2, 3)]
    logits = net(torch.randn(4, 1, 10, 10))
    assert logits.shape == (4, 3)
    logits.square().sum().backward()
    for p in net.arch_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.weight_parameters())
    # the SuperNet computes at the largest width: 1.5 x (4, 8) = (6, 12)
    assert net.blocks[1][0].ops[0].conv.out_channels == 12  # a one-unit candidate: its ConvBN
    assert not net.blocks[1][0].ops[0].relu  # the pre-activation z


def test_masked_channels_are_zero_and_the_next_layer_sees_them():
    sp = tiny(widths=(0.5, 1.0), residual="all", merge="conv1x1")
    net = SuperNet(sp).eval()
    net.keep_pooled = True
    with torch.no_grad():
        net.width_logits.copy_(torch.tensor([[0.0, 0.0], [80.0, -80.0]]))  # layer 1 at width 0.5 (2 of 4)
        net.sync_logits.copy_(torch.tensor([[0.0, 0.0], [80.0, -80.0]]))  # a conv1x1 merge after layer 1
        net(torch.randn(3, 2, 6, 6))
    for f in net.pooled:
        assert f.shape == (3, 4) and torch.all(f[:, 2:] == 0) and torch.any(f[:, :2] != 0)


def test_residual_mixes_the_shortcut_by_its_probability():
    sp = tiny(widths=(1.0,), channels=(2, 4))  # layer 0: identity shortcut
    net = SuperNet(sp).eval()
    x = torch.randn(2, 2, 6, 6)
    z = net.blocks[0][0](x, torch.ones(1))
    with torch.no_grad():
        for r, want in ((80.0, torch.relu(z + x)), (-80.0, torch.relu(z))):
            net.res_logits[0, 0] = torch.tensor([r, -r])
            w = torch.softmax(net.res_logits[0, 0], -1)
            torch.testing.assert_close(net._residual(z, net.shortcuts[0][0](x), w), want)
    assert isinstance(net.shortcuts[0][0], torch.nn.Identity) and not isinstance(net.shortcuts[1][0], torch.nn.Identity)


def test_derive_picks_what_the_logits_say():
    sp = tiny()
    L, P = sp.layers, sp.paths
    res = torch.zeros(L, P, 2)
    res[0, 0] = torch.tensor([2.0, -1.0])   # residual
    res[1, 1] = torch.tensor([0.1, 0.0])    # barely residual
    res[0, 1] = torch.tensor([-1.0, 1.0])   # plain
    widths = torch.tensor([[0.0, 1.0], [3.0, 0.0]])  # layer 0: width 1 (4), layer 1: width 0.5 (2)
    plan = derive(sp, torch.zeros(L, P, 1), torch.zeros(L, 2), res_logits=res, width_logits=widths)
    assert [[b.residual for b in path] for path in plan.paths] == [[True, False], [False, True]]
    assert [b.out for b in plan.paths[0]] == [4, 2] == [b.out for b in plan.paths[1]]
    assert Plan.from_dict(plan.to_dict()) == plan  # a valid plan-v1 with the residual key
    # every block residual with "all", none with "none"; no res_logits for them
    assert all(b.residual for p in derive(tiny(residual="all"), torch.zeros(L, P, 1), torch.zeros(L, 2),
                                          width_logits=widths).paths for b in p)
    with pytest.raises(ValueError, match=r"res_logits: the space \(residual 'search'\) needs shape \(2, 2, 2\), got none"):
        derive(sp, torch.zeros(L, P, 1), torch.zeros(L, 2), width_logits=widths)
    with pytest.raises(ValueError, match=r"width_logits: the space \(2 widths\) needs shape \(2, 2\), got \(2, 3\)"):
        derive(sp, torch.zeros(L, P, 1), torch.zeros(L, 2), res_logits=res, width_logits=torch.zeros(2, 3))


def test_derived_width_plan_builds_with_the_expected_macs():
    sp = tiny(residual="none")
    plan = derive(sp, torch.zeros(2, 2, 1), torch.zeros(2, 2), width_logits=torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    # path: conv3x3 2->4 at 6x6 (9*2*36*4 = 2592), conv3x3 4->2 stride 2 to 3x3 (9*4*9*2 = 648); head FC 4 -> 3
    assert plan.macs() == 2 * (2592 + 648) + 12
    net = build_net(plan)
    assert [net.paths[0].blocks[l].conv.out_channels for l in range(2)] == [4, 2]
    assert net(torch.zeros(1, 2, 6, 6)).shape == (1, 3)


# -- the FLOP cost, by hand -----------------------------------------------------------
#
# tiny(): conv3x3 in -> out, FLOPs (9*in*out + (9*in - 1)*out) * oh*ow.
# layer 0 (in 2 fixed, 6x6): out 2: 2520, out 4: 5040. Residual: out 2 is the identity
#   (add 2*36 = 72), out 4 a projection ((2*4 + 1*4) * 36 = 432) + add 144 = 576.
# layer 1 (stride 2 to 3x3): (18*in - 1) * out * 9: (2,2) 630, (2,4) 1260, (4,2) 1278, (4,4) 2556;
#   residual (always a projection, (2*in - 1)*out*9, + add out*9): 72, 144, 144, 288.

def test_flop_table_by_hand_with_widths_and_residual():
    t = flop_table(tiny())
    assert t.op_flops[0, :, :, 0].tolist() == [[2520, 5040], [2520, 5040]]  # layer 0: any input width is the stem's
    assert t.op_flops[1, :, :, 0].tolist() == [[630, 1260], [1278, 2556]]
    assert t.res_flops.tolist() == [[[72, 576], [72, 576]], [[72, 144], [144, 288]]]
    assert t.sync_flops.tolist() == [[72, 144], [18, 36]]  # sum of 2 paths: out*oh*ow adds
    assert t.max_ops == 2 * (5040 + 2556 + 576 + 288) and t.max_sync == 144 + 36
    assert flop_table(tiny(residual="none")).res_flops is None


def test_expected_flops_over_width_pairs_by_hand():
    sp = tiny()
    t = flop_table(sp)
    widths = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    res = torch.full((2, 2), 0.4)
    ops = torch.ones(2, 2, 1)
    # per path: layer 0 0.25*2520 + 0.75*5040 = 4410; layer 1 over the pairs
    # .125*630 + .125*1260 + .375*1278 + .375*2556 = 1674. Residual: 0.4 * (0.25*72 + 0.75*576 = 450,
    # and .125*72 + .125*144 + .375*144 + .375*288 = 189).
    want = 2 * (4410 + 1674) + 2 * 0.4 * (450 + 189)
    assert float(loss_ops(ops, t, res, widths)) == pytest.approx(want / 16920, rel=1e-6)
    sync = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    # layer 0: 0.25*72 + 0.75*144 = 126; layer 1: 0.5 * (0.5*18 + 0.5*36) = 13.5
    assert float(loss_sync(sync, t, widths)) == pytest.approx((126 + 13.5) / 180, rel=1e-6)
    with pytest.raises(ValueError, match="res_probs: the cost table has residual costs"):
        loss_ops(ops, t, None, widths)
    with pytest.raises(ValueError, match=r"width_probs: the cost table has 2 widths"):
        loss_ops(ops, t, res)


def test_one_hot_expected_flops_are_the_derived_plans():
    sp = tiny()
    res_logits = torch.tensor([[[5.0, -5.0], [-5.0, 5.0]], [[-5.0, 5.0], [-5.0, 5.0]]])  # only paths[0][0]
    width_logits = torch.tensor([[-5.0, 5.0], [5.0, -5.0]])  # out 4 then 2
    plan = derive(sp, torch.zeros(2, 2, 1), torch.zeros(2, 2), res_logits=res_logits, width_logits=width_logits)
    # path 0: 5040 + 576 (residual) + 1278; path 1: 5040 + 1278; head FC 4 -> 3: 4*3 + 3*3
    assert plan.cost()["flops"] == 5040 + 576 + 1278 + 5040 + 1278 + 21
    t = flop_table(sp)
    hard = loss_ops(torch.ones(2, 2, 1), t, (res_logits[..., 0] > 0).float(), (width_logits > 0).float())
    assert float(hard) * t.max_ops == pytest.approx(plan.cost()["flops"] - 21)


# -- the MAC budget (--budget-macs) ------------------------------------------------------
#
# tiny() in MACs: layer 0 conv3x3 2 -> 4 at 6x6: 9*2*4*36 = 2592 (-> 2: 1296), its projection
# 2 -> 4: 8*36 = 288; layer 1 conv3x3 4 -> 2 at 3x3: 9*4*2*9 = 648 (2 -> 2: 324).

def test_expected_macs_of_one_hot_choices_by_hand():
    sp = tiny()
    res_logits = torch.tensor([[[5.0, -5.0], [-5.0, 5.0]], [[-5.0, 5.0], [-5.0, 5.0]]])  # only paths[0][0]
    width_logits = torch.tensor([[-5.0, 5.0], [5.0, -5.0]])  # out 4 then 2
    plan = derive(sp, torch.zeros(2, 2, 1), torch.zeros(2, 2), res_logits=res_logits, width_logits=width_logits)
    assert plan.macs() == 2 * 2592 + 288 + 2 * 648 + 4 * 3  # head FC 2*2 -> 3
    assert fixed_macs(sp) == 8 * 3  # the head at the widest last layer (2 paths x 4): an upper bound
    got = expected_macs(torch.ones(2, 2, 1), torch.zeros(2, 2), flop_table(sp, "macs"), fixed_macs(sp),
                        (res_logits[..., 0] > 0).double(), (width_logits > 0).double())
    assert float(got) == pytest.approx(plan.macs() - 12 + 24)


def test_fit_macs_meets_the_budget_or_names_the_cheapest_plan():
    sp = tiny()
    widest = derive(sp, torch.zeros(2, 2, 1), torch.zeros(2, 2), res_logits=torch.tensor([[[1.0, 0.0]] * 2] * 2),
                    width_logits=torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert widest.macs() > 5000
    fitted, changes = fit_macs(widest, sp, 5000)
    assert fitted.macs() <= 5000 and changes and all(c.endswith(" MACs)") for c in changes)
    assert fit_macs(fitted, sp, 5000) == (fitted, [])  # a plan within the budget is kept as it is
    # the cheapest plan: out 2 everywhere, no shortcut, 2 * (1296 + 324) + head 4 -> 3
    with pytest.raises(ValueError, match="budget 3,000 MACs cannot be met with this space: its cheapest plan is "
                                         "3,252 MACs"):
        fit_macs(widest, sp, 3000)
    # with residual "all" the shortcut stays: the floor adds layer 0's identity and layer 1's projection
    with pytest.raises(ValueError, match="its cheapest plan is 3,324 MACs"):  # + 2 paths x 2*2*9 (projection)
        fit_macs(widest, tiny(residual="all"), 3000)


def test_search_under_a_mac_budget_derives_a_plan_within_it(tmp_path):
    ds = load_dataset("synthetic")
    sp = SearchSpace(paths=2, channels=(8, 16), strides=(1, 2), ops=("conv3x3", "conv5x5"), stem_kernel=3,
                     stem_out=4, hidden=(8,), residual="search", widths=(0.5, 1.0))
    budget = 100_000
    widest = sp.bind(ds.input_shape, ds.classes)  # the most expensive plan: 5x5, residual, widest
    unbounded = derive(widest, torch.tensor([[[0.0, 1.0]] * 2] * 2), torch.zeros(2, 2),
                       res_logits=torch.tensor([[[1.0, 0.0]] * 2] * 2),
                       width_logits=torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert unbounded.macs() > budget  # the budget binds
    lines: list[str] = []
    cfg = SearchConfig(epochs=1, batch_size=64, train_limit=256, beta=0.0, budget_macs=budget)
    with pytest.warns(UserWarning):
        plan = run_search(sp, ds, cfg, tmp_path, show_progress=False, log=lines.append).plan
    assert plan.macs() <= budget
    assert f"derived plan: {plan.macs():,} MACs; budget 100,000" in lines
    assert plan.meta["search"]["config"]["budget_macs"] == budget
    # a budget below the space's cheapest plan fails before the search, in one line
    with pytest.raises(ValueError, match=r"budget 1,000 MACs cannot be met with this space: its cheapest plan is [\d,]+ MACs"):
        run_search(sp, ds, SearchConfig(epochs=1, budget_macs=1000), tmp_path / "no", log=lines.append)
    assert not (tmp_path / "no" / "search_log.jsonl").exists()


# -- end to end -----------------------------------------------------------------------

def test_search_with_residual_and_widths_logs_and_derives(tmp_path):
    ds = load_dataset("synthetic")
    sp = SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), ops=("conv3x3",), stem_kernel=3, stem_out=4,
                     hidden=(8,), residual="search", widths=(0.5, 1.0))
    cfg = SearchConfig(epochs=1, batch_size=64, train_limit=256, beta=5.0)
    with pytest.warns(UserWarning):  # a 1-epoch SuperNet stays near chance
        plan = run_search(sp, ds, cfg, tmp_path, show_progress=False, log=lambda *a: None).plan
    line = json.loads((tmp_path / "search_log.jsonl").read_text().splitlines()[0])
    rec = EpochRecord.from_dict(line)
    assert len(rec.res_probs) == 2 and len(rec.res_probs[0]) == 2 and rec.widths == ["x0.5", "x1"]
    search = plan.meta["search"]
    outs = [b.out for b in plan.paths[0]]
    best = [max(range(2), key=lambda i: p[i]) for p in search["width_probs"]]
    assert outs == [(2, 4)[best[0]], (4, 8)[best[1]]]
    assert [[b.residual for b in path] for path in plan.paths] == [[p > 0.5 for p in row] for row in
                                                                  zip(*search["res_probs"])]
    assert SearchSpace.load(tmp_path / "space.json").widths == (0.5, 1.0)
    # a log line of a space without the choices is as before, and old lines still read
    old = {k: v for k, v in line.items() if k not in ("res_probs", "width_probs", "widths")}
    assert EpochRecord.from_dict(old).res_probs is None


# -- the CLI ---------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["search", "pipeline"])
def test_cli_flags_are_in_help(cmd, capsys):
    from nasrt.cli import main
    with pytest.raises(SystemExit):
        main([cmd, "--help"])
    text = capsys.readouterr().out
    assert "--residual {none,search,all}" in text and "--widths WIDTHS" in text and "--budget-macs N" in text


@pytest.mark.parametrize("args, message", [
    (["--widths", "0,1"], "space.widths[0]: must be a number in (0, 16.0], got 0.0 (--widths)"),
    (["--widths", "1,x"], "expected comma-separated numbers"),
    (["--residual", "some"], "invalid choice: 'some'"),
    (["--budget-macs", "5.5X"], "expected a number with an optional k/M/G suffix (e.g. 5.5M), got '5.5X'"),
    (["--budget-macs", "0k"], "expected a finite number > 0, got '0k'"),
])
def test_cli_bad_space_flags(tmp_path, capsys, args, message):
    from nasrt.cli import main
    try:
        rc = main(["search", "--dataset", "synthetic", "--out", str(tmp_path / "o"), *args])
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_search_writes_the_space_of_the_flags(tmp_path):
    from nasrt.cli import main
    out = tmp_path / "run"
    assert main(["search", "--dataset", "synthetic", "--out", str(out), "--epochs", "1", "--channels", "4,8",
                 "--residual", "all", "--widths", "0.5,1", "--search-limit", "128", "--quiet"]) == 0
    sp = SearchSpace.load(out / "space.json")
    assert (sp.residual, sp.widths) == ("all", (0.5, 1.0))
    plan = Plan.load(out / "plan.json")
    assert all(b.residual for path in plan.paths for b in path)
    assert [b.out for b in plan.paths[0]][0] in (2, 4)


# -- latency: the width and residual entries of lut.json ------------------------------

def planted_width_lut(drop=None, barrier_us=None):
    """tiny()'s table by hand (2 threads): the ops at layer l by in:out channels, the shortcuts, and
    the sum merge at the widest (4) and at x0.5 (2). drop: an ops_us[0] key to leave out."""
    from nasrt.contract.lut import LatencyTable
    sp = tiny()
    ops = [{"conv3x3": 40.0, "conv3x3@2:2": 20.0, "shortcut@2:2": 1.0, "shortcut@2:4": 3.0},
           {"conv3x3": 16.0, "conv3x3@2:2": 4.0, "conv3x3@2:4": 8.0, "conv3x3@4:2": 8.5,
            "shortcut@2:2": 0.5, "shortcut@2:4": 1.0, "shortcut@4:2": 1.5, "shortcut@4:4": 2.0}]
    if drop:
        ops[0].pop(drop)
    d = {"format": "nasrt.lut", "version": 1, "layers": [s.to_dict() for s in sp.layer_shapes()], "ops_us": ops,
         "stem_us": {"1": 0.0, "2": 0.0}, "head_us": 1.0, "overhead_us": {"1": 0.5, "2": 1.5},
         "sync_us": {"sum": {"1": [3.0, 1.5], "2": [6.0, 3.0]}, "sum@x0.5": {"1": [1.0, 0.5], "2": [2.0, 1.0]}},
         "settings": {"threads": 2}, "space": sp.to_dict()}
    if barrier_us is not None:
        d["barrier_us"] = {"1": 0.0, "2": barrier_us}
    return LatencyTable.from_dict(d, "planted")


def test_latency_of_a_residual_width_plan_by_hand():
    from nasrt.contract.latency import predict_latency
    from nasrt.search.cost import expected_latency
    sp, lut = tiny(), planted_width_lut()
    res_logits = torch.tensor([[[5.0, -5.0], [-5.0, 5.0]], [[-5.0, 5.0], [-5.0, 5.0]]])  # only paths[0][0]
    width_logits = torch.tensor([[-5.0, 5.0], [5.0, -5.0]])  # out 4 then 2
    sync_logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])  # a sum after layer 0
    plan = derive(sp, torch.zeros(2, 2, 1), sync_logits, res_logits=res_logits, width_logits=width_logits)
    # call 1.5 + head 1; layer 0: max(40 + 3, 40); sum at 4 channels 6; layer 1 at 4 -> 2: 8.5
    assert predict_latency(plan, lut, 2) == pytest.approx(1.5 + 1 + 43 + 6 + 8.5)
    t = latency_table(sp, lut)
    hard = expected_latency(torch.ones(2, 2, 1), torch.softmax(sync_logits, -1).round(), t, 1e-4,
                            (res_logits[..., 0] > 0).double(), (width_logits > 0).double())
    assert float(hard) == pytest.approx(60.0, abs=1e-3)
    # soft: per path layer 0 0.25*20 + 0.75*40 + 0.4*(0.25*1 + 0.75*3) = 36, layer 1 over the pairs
    # .125*4 + .125*8 + .375*8.5 + .375*16 + 0.4*(.125*.5 + .125*1 + .375*1.5 + .375*2) = 11.2875; no syncs
    soft = expected_latency(torch.ones(2, 2, 1), torch.tensor([[0.0, 1.0], [0.0, 1.0]]), t, 1e-4,
                            torch.full((2, 2), 0.4), torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    assert float(soft) == pytest.approx(2.5 + 36 + 11.2875, abs=1e-3)


def test_schedule_latency_counts_the_shortcut_once():
    """The runtime's schedule runs a residual block as chain, projection, add: the table's shortcut
    entry (projection + add) is charged once, on the path's thread."""
    from nasrt.runtime.schedule import predict_schedule_latency
    sp, lut = tiny(), planted_width_lut(barrier_us=0.25)
    width_logits = torch.tensor([[-5.0, 5.0], [5.0, -5.0]])
    sync_logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])
    plans = [derive(sp, torch.zeros(2, 2, 1), sync_logits, res_logits=torch.tensor(r), width_logits=width_logits)
             for r in ([[[5.0, -5.0], [-5.0, 5.0]], [[-5.0, 5.0], [-5.0, 5.0]]],   # paths[0][0] residual
                       [[[-5.0, 5.0], [-5.0, 5.0]], [[-5.0, 5.0], [-5.0, 5.0]]])]  # none
    assert plans[0].paths[0][0].residual and not plans[1].paths[0][0].residual
    with_res, plain = (predict_schedule_latency(p, lut, 2, balance=False, statistic="best") for p in plans)
    assert with_res - plain == pytest.approx(3.0)  # layer 0: max(40 + 3, 40) vs max(40, 40)


def test_a_table_without_the_entries_is_a_one_line_error():
    with pytest.raises(ModelError, match=r"latency table has no conv3x3 at 2 -> 2 channels at layer 0: profile a "
                                         r"space with these residual and width choices") as e:
        latency_table(tiny(), planted_width_lut(drop="conv3x3@2:2"))
    assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match="latency table has no residual shortcut at 2 -> 4 channels at layer 0"):
        latency_table(tiny(), planted_width_lut(drop="shortcut@2:4"))
    # a space without residual blocks needs no shortcut entries
    assert latency_table(tiny(residual="none"), planted_width_lut(drop="shortcut@2:4")).res_us is None


@pytest.mark.parametrize("key, value, message", [
    ("ops_us", [{"conv3x3@0:4": 1.0}, {"conv3x3": 1.0}], r"ops_us\[0\].conv3x3@0:4: unknown op"),
    ("ops_us", [{"conv3x3": 1.0, "shortcut": 1.0}, {"conv3x3": 1.0}], r"ops_us\[0\].shortcut: unknown op"),
    ("ops_us", [{"conv3x3": 1.0, "conv3x3@2:99999": 1.0}, {"conv3x3": 1.0}], "channels must be <= 65536"),
    ("ops_us", [{"conv3x3": 1.0, "shortcut@2:4": -1.0}, {"conv3x3": 1.0}], r"shortcut@2:4: must be a finite number >= 0"),
    ("sync_us", {"sum@xabc": {"1": [1.0, 1.0], "2": [1.0, 1.0]}}, r"sync_us.sum@xabc: unknown merge"),
    ("sync_us", {"sum@x17": {"1": [1.0, 1.0], "2": [1.0, 1.0]}}, r"sync_us.sum@x17: unknown merge"),
])
def test_bad_width_entries_name_the_field(key, value, message):
    from nasrt.contract.lut import LatencyTable
    from nasrt.errors import LutError
    d = json.loads(json.dumps(planted_width_lut().to_dict()))  # as the file holds it
    d[key] = value
    with pytest.raises(LutError, match=message):
        LatencyTable.from_dict(d, "lut.json")


def test_profile_kit_of_a_residual_width_space_on_planted_timings():
    from nasrt import _core
    from nasrt.contract.lut import LatencyTable
    from nasrt.runtime.profile import build_kit
    sp = SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), ops=("conv3x3", "sepconv3x3"), stem_kernel=3,
                     stem_out=4, hidden=(8,), residual="search", widths=(0.5, 1.0)).bind((1, 8, 8), 3)
    kit = build_kit(sp, "fp32", threads=2, runs=2, rounds=1, warmup=0, span_s=0)
    keys = [p["key"] for p in kit.manifest["probes"]]
    rounds = {k: [10.0 + i] for i, k in enumerate(keys)}
    lut = LatencyTable.from_dict(json.loads(_core.assemble_lut(json.dumps(kit.manifest), kit.models, rounds,
                                                               "python")), "planted")
    # layer 1 reads 2 or 4 channels and writes 4 or 8: every other pair for each op, a shortcut for each
    assert sorted(lut.ops_us[1]) == sorted(["conv3x3", "sepconv3x3", "shortcut@4:8"] + [
        f"{n}@{p}" for n in ("conv3x3", "sepconv3x3", "shortcut") for p in ("2:4", "2:8", "4:4")])
    assert lut.ops_us[1]["conv3x3@2:4"] == rounds["op/1/conv3x3@2:4"][0]
    assert lut.units_us[1]["sepconv3x3@2:4"] == tuple(rounds[f"unit/1/sepconv3x3@2:4/{j}"][0] for j in range(2))
    # planted in key order, "with" before "without": the difference of two runs is clamped at 0
    assert lut.ops_us[0]["shortcut@4:2"] == 0.0
    rounds["res/0/4:2/with"] = [50.0]
    lut = LatencyTable.from_dict(json.loads(_core.assemble_lut(json.dumps(kit.manifest), kit.models, rounds,
                                                               "python")), "planted")
    assert lut.ops_us[0]["shortcut@4:2"] == 50.0 - rounds["res/0/4:2/without"][0]
    assert lut.sync_us["sum@x0.5"][2][1] == rounds["sync/2/1/sum@x0.5"][0] - rounds["sync/2/1/without@x0.5"][0]
    t = latency_table(sp, lut)
    assert t.op_us.shape == (2, 2, 2, 2) and t.res_us.shape == (2, 2, 2) and t.sync_us.shape == (2, 2)
    # a space without the choices has the kit it had: no width or residual probes
    plain = build_kit(SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), ops=("conv3x3",), stem_kernel=3,
                                  stem_out=4, hidden=(8,)).bind((1, 8, 8), 3), "fp32", threads=2, runs=2,
                      rounds=1, warmup=0, span_s=0)
    assert not any("@" in p["key"] or p["key"].startswith("res/") for p in plain.manifest["probes"])


# -- FLASH over residual and width choices -----------------------------------------------

def test_flash_features_see_residual_and_widths():
    import random

    import numpy as np

    from nasrt.search.flash import Relaxation, one_hot, random_plan, soft_features
    sp = tiny()
    rx = Relaxation.of(sp)
    rng = random.Random(0)
    plans = [random_plan(sp, rng) for _ in range(12)]
    assert {b.residual for p in plans for path in p.paths for b in path} == {True, False}
    assert {p.paths[0][0].out for p in plans} == {2, 4}
    for plan in plans:  # the hard features are the plan's: MACs with projections, head by the last width
        assert Plan.from_dict(plan.to_dict()) == plan
        f = soft_features(rx, *one_hot(sp, plan))
        assert 10 ** f[1] == pytest.approx(plan.macs())
    # soft widths: the MACs are the expectation over the hard width combinations (layers independent)
    op, sync, res, _ = one_hot(sp, plans[0])
    e = np.eye(2)
    hard = [10 ** soft_features(rx, op, sync, res, np.stack([e[a], e[b]]))[1] for a in range(2) for b in range(2)]
    mid = 10 ** soft_features(rx, op, sync, res, np.full((2, 2), 0.5))[1]
    assert mid == pytest.approx(sum(hard) / 4) and hard[0] < hard[-1]
    with pytest.raises(ValueError, match=r"width_probs: the space has 2 widths"):
        soft_features(rx, op, sync, res)


def test_flash_refines_residual_and_widths():
    import numpy as np

    from nasrt.search.flash import Predictor, shgo_search
    sp = tiny()
    # predicted accuracy = log10(MACs), a tiny cost weight: the biggest net wins
    pred = Predictor(np.zeros(4), np.ones(4), np.array([0.0, 0.0, 1.0, 0.0, 0.0]))
    plan, _ = shgo_search(sp, pred, beta=1e-6)
    assert [b.out for b in plan.paths[0]] == [4, 4]  # the widest
    assert all(b.residual for path in plan.paths for b in path)  # every shortcut here is a projection (MACs)
    small, _ = shgo_search(sp, pred, beta=1e3)  # cost dominates: the narrowest, no projections
    assert [b.out for b in small.paths[0]] == [2, 2]
    assert not any(b.residual for path in small.paths for b in path)


def test_flash_names_a_width_outside_the_space():
    from nasrt.search.flash import one_hot
    plan = derive(tiny(residual="none", widths=(1.0,)), torch.zeros(2, 2, 1), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"plan paths\[0\]\[0\]: out 4 is not a width of the space \(layer 0: 2\)"):
        one_hot(tiny(residual="none", widths=(0.5,)), plan)
