"""Residual blocks and the dconv op on the Python side (docs/FORMATS.md sections 1, 2, 6):
the lowering and its graph object, the torch net and its BN fold, the model file, the int8
tensors and parameters, the oracle's residual add rule and calibration of the new tensors.
The native runtime's side of the same plans is in test_runtime_vs_torch.py and
test_int8_runtime.py (test_residual_*)."""
import json
import random

import numpy as np
import pytest

from _helpers import ort_exact_weight_bits, random_plan, randomize_bn, sample_input
from nasrt.contract.lowering import conv_units, expected_tensors, graph
from nasrt.contract.modelfile import KEY_GRAPH, canonical_json, read_model, write_model
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.errors import ModelError
from nasrt.quant import fp32_forward, validate
from nasrt.quant.graph import INPUT, graph_tensors
from nasrt.quant.params import ActQ
from nasrt.quant.reference import _T, Int8Ops

f32 = np.float32
# A ResNet-like net: a stem, basic blocks (dconv3x3 + residual) with an identity shortcut
# (layer 0: 8 -> 8, stride 1), a projection (layer 1: stride 2), a residual sepconv whose
# stride-1 block changes channels (layer 2: projection), a plain dconv; a sum merge of two
# residual outputs and a conv1x1 merge.
PLAN = Plan((3, 12, 12), 5, Block("conv", 3, 1, 8), (
    (Block("dconv", 3, 1, 8, True), Block("dconv", 3, 2, 16, True), Block("sepconv", 3, 1, 24, True),
     Block("dconv", 1, 1, 24)),
    (Block("conv", 5, 1, 8, True), Block("conv", 3, 2, 16), Block("dconv", 3, 1, 24, True),
     Block("conv", 3, 1, 24, True))),
    (Sync(0, "sum"), Sync(2, "conv1x1")), (12,))


def _unit(name, i, o, k, s, relu, groups=1):
    return {"name": name, "in": i, "out": o, "kernel": k, "stride": s, "groups": groups, "relu": relu}


def test_lowering_and_the_graph_object():
    g = graph(PLAN)
    p0, p1 = g["paths"]
    assert p0[0] == {"convs": [_unit("paths.0.blocks.0.conv1", 8, 8, 3, 1, True),
                               _unit("paths.0.blocks.0.conv2", 8, 8, 3, 1, False)], "shortcut": None}
    assert p0[1] == {"convs": [_unit("paths.0.blocks.1.conv1", 8, 16, 3, 2, True),
                               _unit("paths.0.blocks.1.conv2", 16, 16, 3, 1, False)],
                     "shortcut": _unit("paths.0.blocks.1.shortcut", 8, 16, 1, 2, False)}
    assert p0[2] == {"convs": [_unit("paths.0.blocks.2.dw", 16, 16, 3, 1, True, groups=16),
                               _unit("paths.0.blocks.2.pw", 16, 24, 1, 1, False)],
                     "shortcut": _unit("paths.0.blocks.2.shortcut", 16, 24, 1, 1, False)}
    assert p0[3] == [_unit("paths.0.blocks.3.conv1", 24, 24, 1, 1, True),  # plain dconv: a list
                     _unit("paths.0.blocks.3.conv2", 24, 24, 1, 1, True)]
    assert p1[0] == {"convs": [_unit("paths.1.blocks.0", 8, 8, 5, 1, False)], "shortcut": None}
    assert p1[1] == [_unit("paths.1.blocks.1", 8, 16, 3, 2, True)]
    shapes = expected_tensors(PLAN)
    assert shapes["paths.0.blocks.1.shortcut.weight"] == (16, 8, 1, 1)
    assert shapes["paths.0.blocks.2.shortcut.bias"] == (24,)
    assert not any(k.startswith(("paths.0.blocks.0.shortcut", "paths.1.blocks.0.shortcut",
                                 "paths.1.blocks.3.shortcut")) for k in shapes)  # identities
    # A plan without residual blocks lowers as before: lists of units only.
    plain = random_plan(random.Random(3), residual=False)
    assert all(isinstance(layer, list) for path in graph(plain)["paths"] for layer in path)


class _Names:
    """walk()'s steps as names: the order and the operands of every add."""

    def __init__(self):
        self.adds, self.reads = [], {}

    def conv(self, n, x):
        self.reads[n.prefix] = x
        return n.prefix

    def sum(self, key, xs):
        return key

    def concat(self, key, xs):
        return key

    def add(self, key, a, b):
        self.adds.append((key, a, b))
        return key

    def features(self, xs):
        return "features"

    def fc(self, fc, h, last):
        return fc.prefix


def test_walk_adds_the_chain_and_the_shortcut():
    from nasrt.contract.lowering import walk

    names = _Names()
    walk(PLAN, names, INPUT)
    assert names.adds == [
        ("paths.0.blocks.0.add", "paths.0.blocks.0.conv2", "stem"),  # identity: the block input
        ("paths.1.blocks.0.add", "paths.1.blocks.0", "stem"),
        ("paths.0.blocks.1.add", "paths.0.blocks.1.conv2", "paths.0.blocks.1.shortcut"),
        ("paths.0.blocks.2.add", "paths.0.blocks.2.pw", "paths.0.blocks.2.shortcut"),
        ("paths.1.blocks.2.add", "paths.1.blocks.2.conv2", "paths.1.blocks.2.shortcut"),
        ("paths.1.blocks.3.add", "paths.1.blocks.3", "syncs.2")]  # a merge's output is the block input
    assert names.reads["paths.0.blocks.1.shortcut"] == "syncs.0"  # the projection reads the block input
    assert names.reads["paths.0.blocks.2.shortcut"] == "paths.0.blocks.1.add"  # a residual block's output
    assert names.reads["paths.0.blocks.2.dw"] == "paths.0.blocks.1.add"


def _net(plan, seed=0):
    import torch

    import nasrt.search

    torch.manual_seed(seed)
    net = nasrt.search.build_net(plan)
    randomize_bn(net, seed)
    return net.eval()


def test_bn_fold_covers_every_bn_and_is_exact():
    """Every BatchNorm of the torch net is folded into the unit at its tensor prefix (the
    module names are the lowering's), and the folded float net (numpy, float64 sums) gives
    the torch net's logits."""
    torch = pytest.importorskip("torch")
    from nasrt.search.export import folded_tensors

    for plan in (PLAN, *(random_plan(random.Random(s), residual=True) for s in range(6))):
        net = _net(plan)
        bns = {name[:-len(".bn")] for name, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
        assert bns == {n.prefix for n in conv_units(plan)}
        t = folded_tensors(net)
        assert {k: v.shape for k, v in t.items()} == expected_tensors(plan)
        x = sample_input(plan, n=3, seed=1)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).double().numpy()
            # Each residual block alone: its folded convs and add against the module.
            for p, path in enumerate(plan.paths):
                for l, b in enumerate(path):
                    if b.residual:
                        mod = net.paths[p].blocks[l]
                        xin = torch.randn(2, plan.layer_shapes()[l].in_c, 5, 5, generator=torch.Generator().manual_seed(l))
                        sub = Plan((xin.shape[1], 5, 5), 1, None, ((b,),))
                        ops = _FloatBlock(t, p, l)
                        got = _walk_block(sub, ops, xin.numpy())
                        np.testing.assert_allclose(got, mod(xin).numpy(), rtol=1e-5, atol=1e-5)
        got = fp32_forward(plan, t, x).astype(np.float64)
        assert np.abs(got - ref).max() <= 1e-5 * max(np.abs(ref).max(), 1e-6), plan.summary()


class _FloatBlock:
    """FloatOps on one block of a bigger net: the block's prefix renamed to path 0 layer 0."""

    def __init__(self, tensors, p, l):
        from nasrt.quant.reference import FloatOps

        pre = f"paths.{p}.blocks.{l}"
        self.ops = FloatOps({k.replace(pre, "paths.0.blocks.0", 1): v for k, v in tensors.items() if k.startswith(pre)})

    def __getattr__(self, name):
        return getattr(self.ops, name)


def _walk_block(plan, ops, x):
    from nasrt.contract.lowering import block_chain, block_shortcut

    y = x
    for n in block_chain(plan, 0, 0):
        y = ops.conv(n, y)
    sc = block_shortcut(plan, 0, 0)
    return ops.add("paths.0.blocks.0.add", y, ops.conv(sc, x) if sc else x)


def test_model_file_round_trip(tmp_path):
    """model.nasrt of a residual plan: the plan with its residual flags, the graph object
    and the shortcut tensors back as written; a missing projection is refused by name."""
    from nasrt.runtime.bench import random_tensors

    t = random_tensors(PLAN)
    path = tmp_path / "res.nasrt"
    write_model(path, PLAN, t)
    plan, back, meta = read_model(path)
    assert plan == PLAN and plan.paths[0][1].residual and json.loads(meta[KEY_GRAPH]) == graph(PLAN)
    assert set(back) == set(t) and all(np.array_equal(back[k], t[k]) for k in t)
    del t["paths.0.blocks.1.shortcut.weight"]
    with pytest.raises(ModelError, match=r"tensor paths\.0\.blocks\.1\.shortcut\.weight: missing \(expected shape "
                                         r"\[16, 8, 1, 1\]\)"):
        write_model(tmp_path / "bad.nasrt", PLAN, t)


# -- int8 ---------------------------------------------------------------------

def _rand_tensors(plan, seed=0):
    r = np.random.default_rng(seed)
    return {k: (r.standard_normal(shape) * (np.sqrt(2 / np.prod(shape[1:])) if k.endswith(".weight") else 0.1))
            .astype(f32) for k, shape in expected_tensors(plan).items()}


def _images(plan, n, seed):
    return np.random.default_rng(seed).standard_normal((n, *plan.input)).astype(f32)


def test_int8_tensors_and_producer_rules():
    """The add is the block's output (zero point 0, the producer into merges); the chain's
    last unit and the projection are linear outputs (asymmetric); the identity shortcut
    reads the block input itself."""
    from nasrt.quant import calibrate

    g = graph_tensors(PLAN)
    for key in ("paths.0.blocks.0.add", "paths.1.blocks.0.add", "paths.0.blocks.1.add"):
        assert key in g.keys and key in g.relu and key not in g.inputs  # not a layer
    for key in ("paths.0.blocks.0.conv2", "paths.0.blocks.1.shortcut", "paths.1.blocks.0"):
        assert key in g.keys and key not in g.relu
    assert "paths.0.blocks.1.shortcut" in g.inputs and g.inputs["paths.0.blocks.1.shortcut"] == "syncs.0"
    assert g.sums["syncs.0"] == ["paths.0.blocks.0.add", "paths.1.blocks.0.add"]
    assert ("syncs.2.concat", "paths.0.blocks.2.add", "paths.1.blocks.2.add") in g.groups
    assert g.adds["paths.1.blocks.3.add"] == ("paths.1.blocks.3", "syncs.2")
    t = _rand_tensors(PLAN)
    qp = calibrate(PLAN, t, _images(PLAN, 32, 5), "numpy-minmax", fp32=())
    a = qp.activations
    assert a["paths.0.blocks.0.add"] == a["paths.1.blocks.0.add"] and a["paths.0.blocks.0.add"].zero_point == 0
    assert a["paths.0.blocks.2.add"] == a["syncs.2.concat"] == a["paths.1.blocks.2.add"]
    assert a["paths.0.blocks.1.shortcut"].zero_point > 0 and a["paths.0.blocks.0.conv2"].zero_point > 0
    import dataclasses
    for key, value, match in (
            ("paths.0.blocks.1.add", ActQ(a["paths.0.blocks.1.add"].scale, 3),
             r"^q: activations\['paths\.0\.blocks\.1\.add'\]\.zero_point: must be 0 after a ReLU, got 3$"),
            ("paths.0.blocks.0.add", ActQ(a["paths.0.blocks.0.add"].scale * 2, 0),
             r"^q: activations\['paths\.1\.blocks\.0\.add'\]: must have the scale and zero point of "
             r"'paths\.0\.blocks\.0\.add' \(they meet at a merge\)$"),
            ("paths.1.blocks.3.add", ActQ(1e-12, 0),  # sa / sy and sb / sy far beyond 256
             r"^q: activations\['paths\.1\.blocks\.3\.add'\] \(from 'paths\.1\.blocks\.3'\): requantisation "
             r"multiplier .* outside \[2\^-32, 256\)$")):
        bad = dataclasses.replace(qp, activations={**a, key: value})
        with pytest.raises(ModelError, match=match):
            validate(bad, PLAN, "q")


def _oracle_add(qa, qb, pa, pb, py):
    ops = Int8Ops.__new__(Int8Ops)
    ops.qp = type("QP", (), {"activations": {"a": pa, "b": pb, "y": py}})()
    ops.acts = None
    return ops.add("y", _T("a", q=qa), _T("b", q=qb)).q


def test_int8_add_rule_is_float32_and_follows_float64():
    """The oracle's add against the rule written out in float32 (bitwise) and a float64
    simulation (dequantise, add, ReLU, requantise: within 1 LSB, nearly always exact);
    cases where the same formula in float64 rounds otherwise take the float32 answer."""
    r = np.random.default_rng(0)
    total = off = promoted = 0
    grid = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    qa, qb = (g.reshape(1, 1, 256, 256) for g in grid)  # every pair of codes
    for i in range(100):
        pa = ActQ(float(f32(r.uniform(0.002, 0.1))), int(r.integers(0, 256)))
        pb = ActQ(float(f32(r.uniform(0.002, 0.1))), int(r.integers(0, 256)) if i % 2 else 0)
        py = ActQ(float(f32(r.uniform(0.01, 0.2))), 0)
        y = _oracle_add(qa, qb, pa, pb, py)
        ma, mb = f32(pa.scale) / f32(py.scale), f32(pb.scale) / f32(py.scale)
        da, db = qa.astype(np.int64) - pa.zero_point, qb.astype(np.int64) - pb.zero_point
        want = np.clip(np.rint(da.astype(f32) * ma + db.astype(f32) * mb), 0, 255)
        assert y.dtype == np.uint8 and np.array_equal(y, want)
        f64 = np.clip(np.rint(da * np.float64(ma) + db * np.float64(mb)), 0, 255)  # float64 promotion
        promoted += int((f64 != want).sum())
        sim = np.clip(np.rint(np.maximum(da * pa.scale + db * pb.scale, 0) / py.scale), 0, 255)
        d = np.abs(y.astype(np.int64) - sim)
        assert d.max() <= 1
        total, off = total + d.size, off + int((d > 0).sum())
    assert promoted > 0  # the test tells float32 from float64 evaluation (33 of 6.6M when written)
    assert off / total < 0.001, (off, total)


def test_int8_oracle_runs_residual_nets_close_to_fp32():
    from nasrt.quant import calibrate, int8_reference

    t = _rand_tensors(PLAN, 1)
    x = _images(PLAN, 16, 2)
    for fp32 in ((), ("stem", "paths.0.blocks.1.shortcut", "paths.1.blocks.0")):  # an fp32 producer into an add
        qp = calibrate(PLAN, t, _images(PLAN, 64, 3), "numpy-minmax", fp32=fp32)
        f, (q, codes) = fp32_forward(PLAN, t, x), int8_reference(PLAN, qp, x, tensors=t, collect=True)
        assert np.abs(q - f).max() <= 0.1 * np.abs(f).max()
        assert codes["paths.0.blocks.1.add"].dtype == np.uint8
        assert (f.argmax(1) == q.argmax(1)).mean() >= 0.8


def test_calibration_observes_the_add_and_the_linear_outputs():
    """ORT's min/max calibrator on the fp32 ONNX finds every tensor of the int8 net, the adds
    and the linear outputs included, with the numpy fp32 net's ranges."""
    pytest.importorskip("onnxruntime")
    from nasrt.quant.calibrate import _ort_ranges, numpy_ranges

    t, x = _rand_tensors(PLAN, 2), _images(PLAN, 16, 4)
    ort, ref = _ort_ranges(PLAN, t, x, "minmax"), numpy_ranges(PLAN, t, x)
    assert set(ort) == set(ref) == set(graph_tensors(PLAN).keys)
    for k in ref:
        np.testing.assert_allclose(ort[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert ref["paths.0.blocks.1.shortcut"][0] < 0 and ref["paths.0.blocks.1.add"][0] == 0


def test_qdq_residual_adds_are_fused_and_match_the_oracle(tmp_path):
    """ORT runs the QDQ residual add as QLinearAdd on the codes (its ReLU: the u8 clamp of a
    zero point 0), no float op left, and gives the oracle's logits."""
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from nasrt.quant import calibrate, int8_reference
    from nasrt.quant.qdq import build_qdq_onnx

    t = _rand_tensors(PLAN, 4)
    qp = calibrate(PLAN, t, _images(PLAN, 32, 6), "numpy-minmax", fp32=(), weight_bits=ort_exact_weight_bits())
    so = ort.SessionOptions()
    so.graph_optimization_level, so.log_severity_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL, 3
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    sess = ort.InferenceSession(build_qdq_onnx(PLAN, t, qp).SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearAdd") >= 6 and not {"Conv", "Add", "Relu", "Sum", "Gemm"} & set(ops)
    assert ops.count("QuantizeLinear") == 1 and "DequantizeLinear" not in ops
    x = _images(PLAN, 32, 8)
    got, want = sess.run(None, {"input": x})[0], int8_reference(PLAN, qp, x)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, float(np.abs(want).max()))


def test_graph_fuzz_seed_is_this_plans_graph_and_loads():
    """tests/data/fuzz/graph_residual.json seeds the graph fuzzer (.ci/run) with residual blocks
    (identity and projection shortcuts, dconv): it must stay the lowering of PLAN and load natively."""
    from pathlib import Path

    from nasrt.runtime.runtime import _core
    text = (Path(__file__).parent / "data" / "fuzz" / "graph_residual.json").read_text()
    assert text == canonical_json(graph(PLAN))  # after a lowering change: rewrite the seed from PLAN
    rng = np.random.default_rng(0)
    tensors = {k: rng.standard_normal(s).astype(f32) for k, s in expected_tensors(PLAN).items()}
    _core.netspec_from_graph(text, tensors)
