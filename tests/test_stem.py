"""The depthwise stem (plan-v1 extension `dwconv`, E-DNAS's 11x11 high-resolution stem):
validation, old plans unchanged, torch vs runtime vs ONNX, search space, latency table."""
import numpy as np
import pytest

import nasrt
from nasrt.contract.plan import Block, Plan
from nasrt.errors import PlanError

D = {"format": "nasrt.plan", "version": 1, "input": [3, 16, 16], "classes": 5,
     "stem": {"op": "dwconv", "kernel": 11, "stride": 1, "out": 12},
     "paths": [[{"op": "conv", "kernel": 3, "stride": 2, "out": 8}], [{"op": "sepconv", "kernel": 5, "stride": 2, "out": 8}]],
     "syncs": [], "head": {"hidden": []}}


def test_dwconv_stem_lowers_to_a_grouped_conv_with_multiplier():
    plan = nasrt.Plan.from_dict(D)
    from nasrt.contract.lowering import stem_units
    (u,) = [n.unit for n in stem_units(plan)]
    assert (u.in_c, u.out_c, u.groups, u.kernel, u.weight_shape) == (3, 12, 3, 11, (12, 1, 11, 11))
    # MACs by hand: 16*16 pixels * 12 outputs * 11*11 taps * 1 input channel each
    assert plan.cost()["macs"] - Plan.from_dict({**D, "stem": None, "input": [12, 16, 16]}).cost()["macs"] == 16 * 16 * 12 * 121


def test_dwconv_is_a_stem_op_only_and_needs_a_multiple_of_the_input():
    bad = {**D, "stem": {**D["stem"], "out": 8}}
    with pytest.raises(PlanError, match=r"stem\.out: a dwconv stem needs a multiple of the input channels \(3\)"):
        nasrt.Plan.from_dict(bad)
    bad = {**D, "paths": [[{"op": "dwconv", "kernel": 3, "stride": 1, "out": 12}]]}
    with pytest.raises(PlanError, match=r"paths\[0\]\[0\]\.op: unknown op 'dwconv'"):
        nasrt.Plan.from_dict(bad)


def test_runtime_and_onnx_match_torch_with_a_dwconv_stem(tmp_path):
    torch = pytest.importorskip("torch")
    from _helpers import export_random, sample_input
    plan = nasrt.Plan.from_dict(D)
    net, path, onnx = export_random(plan, tmp_path, seed=3, onnx=True)
    x = sample_input(plan, n=2)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    tol = 1e-4 * np.abs(ref).max()
    from nasrt.runtime.runtime import compiled_backends
    for backend in compiled_backends():
        for threads in (1, 2):
            y = nasrt.Runtime(path, threads=threads, backend=backend).run(x)
            assert np.abs(y - ref).max() <= tol, (backend, threads)
    ort = pytest.importorskip("onnxruntime")
    y = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(y - ref).max() <= tol


def test_search_space_stem_flag_and_latency_table():
    from nasrt.contract.space import SearchSpace, parse_stem
    from nasrt.runtime.profile import profile
    assert parse_stem("dwconv11x11") == ("dwconv", 11) and parse_stem("none") is None
    with pytest.raises(ValueError, match="--stem"):
        parse_stem("dwconv4x4")
    sp = SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), stem_op="dwconv", stem_kernel=11, stem_out=6,
                     hidden=()).bind((3, 12, 12), 3)
    assert sp.stem_block == Block("dwconv", 11, 1, 6)
    with pytest.raises(ValueError, match="stem_out: a dwconv stem needs a multiple"):
        SearchSpace(stem_op="dwconv", stem_out=8).bind((3, 12, 12), 3)
    lut = profile(sp, threads=1, runs=4, rounds=2, warmup=1, span_s=0, show_progress=False)
    assert lut.stem_us[1] > 0
