"""E-DNAS meta-kernels and the feedback block: the merged conv, its costs by hand,
derive to plain convs (plan-v1 unchanged), the latency table, search end to end."""
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import nasrt.search  # noqa: E402
from nasrt.contract.space import SearchSpace, expand_candidate, parse_candidate  # noqa: E402
from nasrt.data.builtin import load_dataset  # noqa: E402
from nasrt.errors import PlanError  # noqa: E402
from nasrt.search.config import SearchConfig, TrainConfig  # noqa: E402
from nasrt.search.cost import flop_table, loss_ops  # noqa: E402
from nasrt.search.gradient import run_search  # noqa: E402
from nasrt.search.metakernel import MetaConv, feedback_coefficients, feedback_mix, path_losses  # noqa: E402
from nasrt.search.supernet import SuperNet, derive  # noqa: E402


@pytest.mark.parametrize("stride", [1, 2])
def test_merged_kernel_conv_equals_the_sum_of_the_separate_convs(stride):
    torch.manual_seed(0)
    m = MetaConv((3, 5, 7), 3, 4, stride)
    x = torch.randn(2, 3, 11, 11)
    p = torch.softmax(torch.randn(3), 0)
    separate = sum(pi * F.conv2d(x, w, stride=stride, padding=w.shape[-1] // 2) for pi, w in zip(p, m.kernels))
    merged = m.conv(x, p)
    assert merged.shape == separate.shape
    assert torch.allclose(merged, separate, atol=1e-5)
    # one-hot choice: exactly that size's conv
    assert torch.allclose(m.conv(x, torch.tensor([0.0, 1.0, 0.0])),
                          F.conv2d(x, m.kernels[1], stride=stride, padding=2), atol=1e-6)


def test_candidate_parsing_and_expansion():
    assert parse_candidate("metaconv7x7") == ("metaconv", 7)
    assert expand_candidate("metaconv7x7") == (("conv", 3), ("conv", 5), ("conv", 7))
    assert expand_candidate("sepconv5x5") == (("sepconv", 5),)
    for bad in ("metaconv1x1", "metaconv4x4", "metaconv3x5"):
        with pytest.raises(ValueError, match="metaconv|unknown candidate"):
            parse_candidate(bad)
    sp = SearchSpace(ops=("conv3x3", "metaconv7x7"))
    assert sp.candidates == (("conv", 3), ("conv", 3), ("conv", 5), ("conv", 7))
    assert sp.meta_groups == ((1, 2, 3),)
    assert sp.choice_labels == ("conv3x3", "metaconv7x7[3]", "metaconv7x7[5]", "metaconv7x7[7]")
    assert [n for n, _ in sp.plan_ops] == ["conv3x3", "conv5x5", "conv7x7"]
    assert SearchSpace.from_dict(sp.to_dict()) == sp  # space.json round trip


def test_meta_kernel_cost_is_the_expected_cost_over_sizes_by_hand():
    sp = SearchSpace(paths=2, channels=(4,), strides=(1,), ops=("metaconv5x5",), stem_kernel=None,
                     hidden=()).bind((2, 6, 6), 3)
    t = flop_table(sp)
    # conv k, 2 -> 4 channels, 6x6 stride 1: (2*k*k*2 - 1) * 36 * 4
    assert t.op_flops[0, 0, 0].tolist() == [(2 * 9 * 2 - 1) * 144, (2 * 25 * 2 - 1) * 144]  # 5040, 14256
    probs = torch.tensor([[[0.25, 0.75], [0.25, 0.75]]])
    # 2 paths * (0.25 * 5040 + 0.75 * 14256) over the norm 2 * 14256
    assert float(loss_ops(probs, t)) == pytest.approx(23904 / 28512, rel=1e-6)


def test_supernet_runs_one_conv_per_meta_kernel_and_matches_the_mixture():
    sp = SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), ops=("conv3x3", "metaconv5x5"), stem_kernel=3,
                     stem_out=4, hidden=(8,)).bind((1, 8, 8), 3)
    torch.manual_seed(1)
    net = SuperNet(sp).eval()
    blk = net.blocks[0][0]
    assert len(blk.ops) == 1 and len(blk.metas) == 1 and blk.metas[0].sizes == (3, 5)
    x = torch.randn(2, 4, 8, 8)
    w = torch.softmax(torch.randn(3), 0)
    meta = blk.metas[0]
    inner = w[1:] / w[1:].sum()
    expected = blk.ops[0](x) * w[0] + torch.relu(meta.bn(meta.conv(x, inner))) * w[1:].sum()
    assert torch.allclose(blk(x, w), expected, atol=1e-6)


def test_derive_emits_plain_convs_and_plans_never_hold_a_meta_kernel():
    sp = SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), ops=("sepconv3x3", "metaconv7x7"),
                     stem_kernel=3, stem_out=4, hidden=()).bind((1, 8, 8), 3)
    logits = torch.zeros(2, 2, 4)
    logits[0, 0, 3] = 5  # metaconv7x7[7]
    logits[0, 1, 0] = 5  # sepconv3x3
    logits[1, :, 2] = 5  # metaconv7x7[5]
    plan = derive(sp, logits, torch.zeros(2, 2))
    assert [(b.op, b.kernel) for b in plan.paths[0]] == [("conv", 7), ("conv", 5)]
    assert [(b.op, b.kernel) for b in plan.paths[1]] == [("sepconv", 3), ("conv", 5)]
    d = plan.to_dict()
    assert d["version"] == 1 and "metaconv" not in json.dumps(d)
    d["paths"][0][0]["op"] = "metaconv"
    with pytest.raises(PlanError, match="unknown op 'metaconv'"):
        nasrt.Plan.from_dict(d)


def test_feedback_coefficients_and_mix_by_hand():
    b = feedback_coefficients(torch.tensor([0.5, 1.0]))
    t2, t1 = math.tanh(2.0), math.tanh(1.0)
    assert b.tolist() == pytest.approx([t2 / (t1 + t2), t1 / (t1 + t2)], rel=1e-6)
    torch.manual_seed(0)
    a, c = MetaConv((3, 5), 2, 2, 1), MetaConv((3, 5), 2, 2, 1)
    want = [b[0] * ka.detach() + b[1] * kc.detach() for ka, kc in zip(a.kernels, c.kernels)]
    feedback_mix([[a, c]], b)
    for i in range(2):
        assert torch.allclose(a.kernels[i], want[i]) and torch.equal(a.kernels[i], c.kernels[i])


def test_path_loss_is_the_head_on_that_path_alone():
    head = torch.nn.ModuleList([torch.nn.Linear(6, 4), torch.nn.Linear(4, 3)])
    f0, f1 = torch.randn(5, 3), torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        losses = path_losses([f0, f1], head, y)

    def ce(h):
        with torch.no_grad():
            return F.cross_entropy(head[1](torch.relu(head[0](h))), y)
    assert losses[0] == pytest.approx(float(ce(torch.cat([f0, torch.zeros_like(f1)], 1))))
    assert losses[1] == pytest.approx(float(ce(torch.cat([torch.zeros_like(f0), f1], 1))))


def test_search_with_meta_kernels_and_feedback_end_to_end(tmp_path):
    """search -> derive -> retrain -> export -> runtime (equal to torch within 1e-4)."""
    from nasrt.search.train import retrain
    ds = load_dataset("synthetic")
    sp = SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), ops=("conv3x3", "metaconv7x7"), stem_kernel=3,
                     stem_out=4, hidden=(8,))
    plan = run_search(sp, ds, SearchConfig(epochs=2, batch_size=64, feedback=True), tmp_path,
                      show_progress=False, log=lambda *a: None).plan
    log = [json.loads(line) for line in (tmp_path / "search_log.jsonl").read_text().splitlines()]
    assert log[-1]["ops"] == ["conv3x3", "metaconv7x7[3]", "metaconv7x7[5]", "metaconv7x7[7]"]
    assert len(log[-1]["path_losses"]) == 2 and all(v > 0 for v in log[-1]["path_losses"])
    # after the last step's feedback every layer's meta-kernels are the same on both paths
    state = torch.load(tmp_path / "checkpoint_search.pt", weights_only=False)["net"]
    for l in range(2):
        for i in range(3):
            assert torch.equal(state[f"blocks.{l}.0.metas.0.kernels.{i}"], state[f"blocks.{l}.1.metas.0.kernels.{i}"])
    assert all(b.op == "conv" and b.kernel in (3, 5, 7) for path in plan.paths for b in path)
    retrain(plan, ds, TrainConfig(epochs=1), tmp_path, show_progress=False, log=lambda *a: None)
    net = nasrt.search.build_net(plan)
    net.load_state_dict(torch.load(tmp_path / "checkpoint_train.pt", weights_only=False)["net"])
    x = ds.x_test[:8]
    with torch.no_grad():
        ref = net.eval()(torch.from_numpy(x)).numpy()
    y = nasrt.Runtime(tmp_path / "model.nasrt", threads=2).run(x)
    assert np.abs(y - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_feedback_needs_a_meta_kernel(tmp_path):
    ds = load_dataset("synthetic")
    with pytest.raises(ValueError, match="--feedback: .* metaconv"):
        run_search(SearchSpace(), ds, SearchConfig(epochs=1, feedback=True), tmp_path,
                   show_progress=False, log=lambda *a: None)


def test_latency_table_of_a_meta_kernel_space_has_every_size(tmp_path):
    from nasrt.runtime.profile import profile
    from nasrt.search.cost import latency_table
    sp = SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), ops=("metaconv5x5",), stem_kernel=3,
                     stem_out=4, hidden=()).bind((1, 8, 8), 3)
    lut = profile(sp, threads=1, runs=4, rounds=2, warmup=1, span_s=0, show_progress=False)
    assert set(lut.ops_us[0]) == {"conv3x3", "conv5x5"}
    terms = latency_table(sp, lut)
    assert terms.op_us.shape == (2, 1, 1, 2)  # (L, W_in, W_out, ops), one width
    assert float(terms.op_us[1, 0, 0, 1]) == pytest.approx(lut.op(1, "conv5x5") * lut.median_factor)  # a plain median
