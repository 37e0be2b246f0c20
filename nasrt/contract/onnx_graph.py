"""The ONNX graph of a plan, built from its BN-folded tensors (needs onnx, not torch)."""
from __future__ import annotations

import os

import numpy as np

from nasrt._io import atomic_write_bytes
from nasrt.contract.lowering import Named, block_units, head_fcs, stem_units, sync_units
from nasrt.contract.plan import Plan

# onnxruntime 1.31 rejects the IR version 14 that onnx 1.23 writes by default.
IR_VERSION = 10
OPSET = 17


def build_onnx(plan: Plan, tensors: dict[str, np.ndarray]):
    """ModelProto with input 'input' (N, C, H, W) and output 'logits' (N, classes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    inits: list = []
    counter = iter(range(1 << 30))

    def fresh(stem: str) -> str:
        return f"{stem}_{next(counter)}"

    def conv(n: Named, x: str) -> str:
        u = n.unit
        w, b = n.prefix + ".weight", n.prefix + ".bias"
        for name in (w, b):
            if name not in {i.name for i in inits}:
                inits.append(numpy_helper.from_array(np.asarray(tensors[name], np.float32), name))
        y = fresh(n.prefix + ".conv")
        p = u.kernel // 2
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[u.kernel, u.kernel],
                                      strides=[u.stride, u.stride], pads=[p, p, p, p], group=u.groups))
        if not u.relu:
            return y
        r = fresh(n.prefix + ".relu")
        nodes.append(helper.make_node("Relu", [y], [r]))
        return r

    x = "input"
    for n in stem_units(plan):
        x = conv(n, x)
    feats = [x] * plan.num_paths
    syncs = sync_units(plan)
    for l in range(plan.num_layers):
        outs = []
        for p in range(plan.num_paths):
            y = feats[p]
            for n in block_units(plan, p, l):
                y = conv(n, y)
            outs.append(y)
        if l in syncs:
            if syncs[l] is None:
                s = fresh(f"syncs.{l}.sum")
                nodes.append(helper.make_node("Sum", outs, [s]))
            else:
                c = fresh(f"syncs.{l}.concat")
                nodes.append(helper.make_node("Concat", outs, [c], axis=1))
                unit = syncs[l]
                assert unit is not None
                s = conv(unit, c)
            feats = [s] * plan.num_paths
        else:
            feats = outs
    pooled = []
    for p, f in enumerate(feats):
        g, v = fresh(f"pool.{p}"), fresh(f"flat.{p}")
        nodes.append(helper.make_node("GlobalAveragePool", [f], [g]))
        nodes.append(helper.make_node("Flatten", [g], [v], axis=1))
        pooled.append(v)
    h = pooled[0]
    if len(pooled) > 1:
        h = fresh("features")
        nodes.append(helper.make_node("Concat", pooled, [h], axis=1))
    fcs = head_fcs(plan)
    for j, fc in enumerate(fcs):
        w, b = fc.prefix + ".weight", fc.prefix + ".bias"
        inits.append(numpy_helper.from_array(np.asarray(tensors[w], np.float32), w))
        inits.append(numpy_helper.from_array(np.asarray(tensors[b], np.float32), b))
        y = "logits" if j == len(fcs) - 1 else fresh(fc.prefix)
        nodes.append(helper.make_node("Gemm", [h, w, b], [y], transB=1))
        if fc.relu:
            r = fresh(fc.prefix + ".relu")
            nodes.append(helper.make_node("Relu", [y], [r]))
            y = r
        h = y
    graph = helper.make_graph(
        nodes, "nasrt",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *plan.input])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", plan.classes])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="nasrt")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_onnx(path: str | os.PathLike, plan: Plan, tensors: dict[str, np.ndarray]) -> None:
    """Builds, checks (onnx.checker) and atomically writes the ONNX file."""
    atomic_write_bytes(path, build_onnx(plan, tensors).SerializeToString())
