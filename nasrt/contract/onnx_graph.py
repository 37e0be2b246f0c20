"""The ONNX graph of a plan, built from its BN-folded tensors (needs onnx, not torch)."""
from __future__ import annotations

import os

import numpy as np

from nasrt._io import atomic_write_bytes
from nasrt.contract.lowering import Fc, Named, walk
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

    names: set[str] = set()

    def init(name: str) -> None:  # each tensor once (a stem feeds every path)
        if name not in names:
            names.add(name)
            inits.append(numpy_helper.from_array(np.asarray(tensors[name], np.float32), name))

    def relu(prefix: str, y: str) -> str:
        r = fresh(prefix + ".relu")
        nodes.append(helper.make_node("Relu", [y], [r]))
        return r

    class OnnxOps:  # walk()'s steps as ONNX nodes, tensors named by the lowering
        def conv(self, n: Named, x: str) -> str:
            u = n.unit
            w, b = n.prefix + ".weight", n.prefix + ".bias"
            init(w)
            init(b)
            y = fresh(n.prefix + ".conv")
            p = u.kernel // 2
            nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[u.kernel, u.kernel],
                                          strides=[u.stride, u.stride], pads=[p, p, p, p], group=u.groups))
            return relu(n.prefix, y) if u.relu else y

        def sum(self, key: str, xs: list) -> str:
            s = fresh(key + ".sum")
            nodes.append(helper.make_node("Sum", xs, [s]))
            return s

        def add(self, key: str, a: str, b: str) -> str:  # named key_N: calibration finds it
            y = fresh(key)
            nodes.append(helper.make_node("Add", [a, b], [y]))
            return relu(key, y)

        def concat(self, key: str, xs: list) -> str:
            c = fresh(key)
            nodes.append(helper.make_node("Concat", xs, [c], axis=1))
            return c

        def features(self, xs: list) -> str:
            pooled = []
            for p, f in enumerate(xs):
                g, v = fresh(f"pool.{p}"), fresh(f"flat.{p}")
                nodes.append(helper.make_node("GlobalAveragePool", [f], [g]))
                nodes.append(helper.make_node("Flatten", [g], [v], axis=1))
                pooled.append(v)
            if len(pooled) == 1:
                return pooled[0]
            h = fresh("features")
            nodes.append(helper.make_node("Concat", pooled, [h], axis=1))
            return h

        def fc(self, fc: Fc, h: str, last: bool) -> str:
            w, b = fc.prefix + ".weight", fc.prefix + ".bias"
            init(w)
            init(b)
            y = "logits" if last else fresh(fc.prefix)
            nodes.append(helper.make_node("Gemm", [h, w, b], [y], transB=1))
            return relu(fc.prefix, y) if fc.relu else y

    walk(plan, OnnxOps(), "input")
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
