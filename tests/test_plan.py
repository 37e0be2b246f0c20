"""Plan validation (errors name the field), round trips, fuzzing, exact costs."""
import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nasrt
from nasrt.errors import ModelError, PlanError
from nasrt.runtime.bench import paper_sized_plan

VALID = paper_sized_plan(syncs=True).to_dict()


def test_round_trip(tmp_path):
    plan = nasrt.Plan.from_dict(VALID)
    assert nasrt.Plan.from_dict(plan.to_dict()) == plan
    plan.save(tmp_path / "plan.json")
    assert nasrt.Plan.load(tmp_path / "plan.json") == plan
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left nothing behind


def mutated(path, value):
    d = copy.deepcopy(VALID)
    obj = d
    for k in path[:-1]:
        obj = obj[k]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return d


@pytest.mark.parametrize("path,value,message", [
    (("paths", 1, 2, "kernel"), 4, r"paths\[1\]\[2\]\.kernel: must be an odd integer >= 1"),
    (("paths", 0, 0, "kernel"), 0, r"paths\[0\]\[0\]\.kernel: must be an odd integer"),
    (("paths", 1, 0, "op"), "conv9", r"paths\[1\]\[0\]\.op: unknown op 'conv9'"),
    (("paths", 1, 3, "out"), 32, r"paths\[1\]\[3\]\.out: is 32 but paths\[0\]\[3\]\.out is 64"),
    (("paths", 1, 1, "stride"), 1, r"paths\[1\]\[1\]\.stride"),
    (("paths", 0, 1, "kernal"), 3, r"paths\[0\]\[1\]\.kernal: unknown field"),
    (("paths", 0, 1, "out"), True, r"paths\[0\]\[1\]\.out: must be an integer"),
    (("format",), "onnx", r"format: must be 'nasrt.plan'"),
    (("version",), 2, r"version: unsupported version 2"),
    (("input",), [3, 32], r"input: must be \[channels, height, width\]"),
    (("classes",), 0, r"classes: must be an integer >= 1"),
    (("classes",), KeyError, r"classes: missing"),
    (("syncs", 0, "after"), 4, r"syncs\[0\]\.after: must be in \[0, 3\]"),
    (("syncs", 1, "after"), 0, r"syncs\[1\]\.after: syncs must be sorted"),
    (("syncs", 0, "merge"), "concat", r"syncs\[0\]\.merge: unknown merge"),
    (("head", "hidden"), [64, 0], r"head\.hidden: must be a list of at most 16 integers in \[1, 65536\]"),
    (("paths",), [], r"paths: must be a non-empty list"),
    (("paths", 0, 2, "residual"), 1, r"^plan: paths\[0\]\[2\]\.residual: must be true or false, got 1$"),
    (("paths", 1, 0, "residual"), "true", r"^plan: paths\[1\]\[0\]\.residual: must be true or false, got 'true'$"),
    (("paths", 1, 3, "residual"), None, r"^plan: paths\[1\]\[3\]\.residual: must be true or false, got None$"),
    (("stem", "residual"), False, r"^plan: stem\.residual: the stem cannot be residual"),
    (("stem", "residual"), True, r"^plan: stem\.residual: the stem cannot be residual"),
    (("paths", 0, 1, "op"), "dconv3", r"paths\[0\]\[1\]\.op: unknown op 'dconv3' \(known: conv, sepconv, dconv\)"),
])
def test_errors_name_the_field(path, value, message):
    with pytest.raises(PlanError, match=message):
        nasrt.Plan.from_dict(mutated(path, value))


def test_residual_round_trip_and_old_plans_unchanged(tmp_path):
    """residual is written only when true: a plan without it keeps its exact bytes."""
    from nasrt.contract.plan import Block
    old = nasrt.Plan.from_dict(VALID)
    assert old.to_dict() == VALID and all(not b.residual for p in old.paths for b in p)
    old.save(tmp_path / "old.json")
    assert "residual" not in (tmp_path / "old.json").read_text()
    assert Block("conv", 3, 1, 8) == Block("conv", 3, 1, 8, False)  # positional form unchanged
    d = mutated(("paths", 0, 2, "residual"), True)
    d["paths"][1][1] = {"op": "dconv", "kernel": 3, "stride": 2, "out": VALID["paths"][1][1]["out"], "residual": True}
    d["paths"][1][3]["residual"] = False  # explicit false reads as absent
    plan = nasrt.Plan.from_dict(d)
    assert plan.paths[0][2].residual and plan.paths[1][1] == Block("dconv", 3, 2, plan.paths[1][1].out, True)
    assert not plan.paths[1][3].residual and plan != old
    back = plan.to_dict()
    assert back["paths"][0][2]["residual"] is True and "residual" not in back["paths"][1][3]
    plan.save(tmp_path / "res.json")
    assert nasrt.Plan.load(tmp_path / "res.json") == plan
    assert plan.paths[1][1].label() == "dconv3x3/s2+res" and "dconv3x3/s2+res" in plan.summary()


def test_uneven_paths():
    d = mutated(("paths", 1), VALID["paths"][1][:3])
    with pytest.raises(PlanError, match=r"paths\[1\]: has 3 blocks"):
        nasrt.Plan.from_dict(d)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(PlanError, match="nope.json: cannot read plan"):
        nasrt.Plan.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PlanError, match="bad.json: not valid JSON"):
        nasrt.Plan.load(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(mutated(("paths", 0, 0, "kernel"), 2)))
    with pytest.raises(PlanError, match=r"wrong.json: paths\[0\]\[0\]\.kernel"):
        nasrt.Plan.load(wrong)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 70) | st.sampled_from(["conv", "sepconv", "dconv", "sum", "conv1x1", "x"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["op", "kernel", "stride", "out", "residual", "after", "merge", "hidden", "paths"]), children, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key_path=st.lists(st.integers(0, 5), min_size=1, max_size=4), value=json_values)
def test_fuzzed_plan_dicts_raise_only_model_error(key_path, value):
    d = copy.deepcopy(VALID)
    obj = d
    for i, idx in enumerate(key_path):
        container_keys = list(obj) if isinstance(obj, dict) else list(range(len(obj)))
        if not container_keys:
            break
        k = container_keys[idx % len(container_keys)]
        if i == len(key_path) - 1 or not isinstance(obj[k], (dict, list)):
            obj[k] = value
            break
        obj = obj[k]
    try:
        plan = nasrt.Plan.from_dict(d)
    except ModelError:
        return
    # Whatever was accepted is a consistent plan.
    assert nasrt.Plan.from_dict(plan.to_dict()) == plan
    plan.layer_shapes()


def test_layer_geometry_has_one_form():
    """Plan and space give their layers as one LayerShape; its dict is lut.json's "layers" entry."""
    from nasrt.contract.plan import Block, LayerShape, Plan
    from nasrt.contract.space import SearchSpace
    sp = SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), stem_kernel=3, stem_out=4).bind((1, 9, 9), 3)
    shapes = sp.layer_shapes()
    assert shapes == [LayerShape(4, 9, 9, 4, 9, 9, 1), LayerShape(4, 9, 9, 8, 5, 5, 2)]
    path = (Block("sepconv", 5, 1, 4), Block("conv", 3, 2, 8))
    assert Plan((1, 9, 9), 3, sp.stem_block, (path, path)).layer_shapes() == shapes
    assert shapes[1].to_dict() == {"in_c": 4, "h": 9, "w": 9, "out_c": 8, "oh": 5, "ow": 5, "stride": 2}
    assert [LayerShape.from_dict(s.to_dict()) for s in shapes] == shapes
    with pytest.raises(PlanError, match=r"^layer\.oh: must be an integer in \[1, 8192\], got 0$"):
        LayerShape.from_dict({**shapes[0].to_dict(), "oh": 0})
    with pytest.raises(PlanError, match=r"^layer: output 9x9 is not the input 9x9 at stride 2$"):
        LayerShape.from_dict({**shapes[0].to_dict(), "stride": 2})


# -- exact costs against hand-computed values --------------------------------

def test_conv_and_fc_costs_by_hand():
    from nasrt.contract.ops import block_cost, fc_cost, merge_cost

    # conv 5x5, 3 -> 8 channels, 32x32 same padding: multiplies 25*3*32*32*8,
    # adds (25*3 - 1)*32*32*8.
    macs, flops, params = block_cost("conv", 3, 8, 5, 1, 32, 32)
    assert macs == 614_400 and flops == 614_400 + 606_208 and params == 8 * 3 * 25 + 8
    # stride 2 halves each side: 16 -> 32, 3x3, 16x16 in -> 8x8 out.
    assert block_cost("conv", 16, 32, 3, 2, 16, 16)[0] == 9 * 16 * 8 * 8 * 32
    # sepconv 5x5 8 -> 16 stride 2 on 32x32: depthwise 25*1*16*16*8 + pointwise 8*16*16*16.
    macs, flops, _ = block_cost("sepconv", 8, 16, 5, 2, 32, 32)
    assert macs == 25 * 16 * 16 * 8 + 8 * 16 * 16 * 16
    assert flops == (25 * 16 * 16 * 8 + 24 * 16 * 16 * 8) + (8 * 16 * 16 * 16 + 7 * 16 * 16 * 16)
    # FC 128 -> 64: 64*128 multiplies, 64*127 adds.
    assert fc_cost(128, 64) == (8192, 8192 + 64 * 127, 8192 + 64)
    # merges: conv1x1 over 2x16 channels at 16x16 -> 16; sum of 2 maps = 1 add per element.
    assert merge_cost("conv1x1", 2, 16, 16, 16)[0] == 32 * 16 * 16 * 16
    assert merge_cost("sum", 3, 8, 4, 4) == (0, 2 * 8 * 4 * 4, 0)


def test_residual_and_dconv_costs_by_hand():
    from nasrt.contract.ops import block_cost
    from nasrt.contract.plan import Block, Plan

    # dconv 3x3 8 -> 16 stride 2 on 16x16: conv1 9*8 per output of 16x8x8, conv2 9*16 per output.
    c1, c2 = 9 * 8 * 8 * 8 * 16, 9 * 16 * 8 * 8 * 16
    macs, flops, params = block_cost("dconv", 8, 16, 3, 2, 16, 16)
    assert macs == c1 + c2
    assert flops == (c1 + (9 * 8 - 1) * 8 * 8 * 16) + (c2 + (9 * 16 - 1) * 8 * 8 * 16)
    assert params == (16 * 8 * 9 + 16) + (16 * 16 * 9 + 16)
    # ...residual: the 1x1 projection 8 -> 16 of stride 2 (8*16*8*8 MACs, 7 adds per output),
    # then one add per output element.
    proj = 8 * 16 * 8 * 8
    assert block_cost("dconv", 8, 16, 3, 2, 16, 16, residual=True) == (
        macs + proj, flops + proj + 7 * 16 * 8 * 8 + 16 * 8 * 8, params + 16 * 8 + 16)
    # identity shortcut (stride 1, 16 -> 16): only the adds, 16*8*8.
    base = block_cost("conv", 16, 16, 5, 1, 8, 8)
    assert block_cost("conv", 16, 16, 5, 1, 8, 8, residual=True) == (base[0], base[1] + 16 * 8 * 8, base[2])
    # a stride-1 block that changes channels projects too: 4 -> 8 at 6x6.
    assert block_cost("sepconv", 4, 8, 3, 1, 6, 6, True)[0] == 9 * 4 * 36 + 4 * 8 * 36 + 4 * 8 * 36
    # Plan.cost sums the blocks' residual costs.
    path = (Block("conv", 3, 1, 8), Block("dconv", 3, 1, 8, True), Block("dconv", 3, 2, 16, True))
    plan = Plan((8, 8, 8), 4, None, (path,))
    want = [block_cost("conv", 8, 8, 3, 1, 8, 8), block_cost("dconv", 8, 8, 3, 1, 8, 8, True),
            block_cost("dconv", 8, 16, 3, 2, 8, 8, True), (16 * 4, 16 * 4 + 4 * 15, 16 * 4 + 4)]
    assert plan.cost() == {k: sum(w[i] for w in want) for i, k in enumerate(("macs", "flops", "params"))}
    assert plan.cost()["params"] == (8 * 8 * 9 + 8) + 2 * (8 * 8 * 9 + 8) + (16 * 8 * 9 + 16) + (
        16 * 16 * 9 + 16) + (16 * 8 + 16) + 68


def test_paper_plan_total_macs():
    plan = paper_sized_plan()
    stem = 25 * 3 * 32 * 32 * 8
    path_a = 25 * 8 * 32 * 32 * 8 + 25 * 8 * 16 * 16 * 16 + 25 * 16 * 8 * 8 * 32 + 25 * 32 * 4 * 4 * 64
    path_b = 9 * 8 * 32 * 32 * 8 + 9 * 8 * 16 * 16 * 16 + 9 * 16 * 8 * 8 * 32 + 9 * 32 * 4 * 4 * 64
    head = 128 * 64 + 64 * 10
    assert plan.macs() == stem + path_a + path_b + head
    assert "MACs" in plan.summary()
