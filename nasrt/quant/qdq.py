"""The int8 net as QDQ ONNX: the graph ONNX Runtime and OpenVINO run as the very same
quantised net as nasrt (its scales, zero points, int8 weights and int32 biases), built
through the one walk of the lowered net as nasrt.contract.onnx_graph builds the fp32 one.

Every activation the int8 net holds in u8 is QuantizeLinear -> DequantizeLinear with
nasrt's (scale, zero point); weights are int8 initializers dequantised per output channel
(axis 0), biases int32 with scale sx * sw[c]; a layer in ``qp.fp32`` stays a float op
with the float tensors, and the logits stay float (no Q after the last FC). A ReLU of an
int8 layer is no node: its output's zero point is 0, so the u8 clamp is the ReLU (what
ONNX Runtime's quantiser emits too)."""
from __future__ import annotations

import os

import numpy as np

from nasrt._io import atomic_write_bytes
from nasrt.contract.lowering import Fc, Named, walk
from nasrt.contract.onnx_graph import IR_VERSION, OPSET
from nasrt.contract.plan import Plan
from nasrt.quant.graph import FEATURES, INPUT
from nasrt.quant.params import QuantParams, validate

f32 = np.float32


class _T:
    """A tensor of the int8 net as ONNX names: ``f`` a float value (the net input, an fp32
    layer's output) or None, ``dq`` the dequantised u8 codes of activation ``key`` (made
    once, on first use by an int8 consumer)."""
    __slots__ = ("key", "f", "dq")

    def __init__(self, key: str, f: str | None = None, dq: str | None = None):
        self.key, self.f, self.dq = key, f, dq


def build_qdq_onnx(plan: Plan, tensors: dict[str, np.ndarray], qp: QuantParams):
    """ModelProto of the int8 net: input 'input' (N, C, H, W) float32, output 'logits'
    (N, classes) float32. ``tensors`` (the float model) gives the layers in ``qp.fp32``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    validate(qp, plan)
    nodes: list = []
    inits: list = []
    counter = iter(range(1 << 30))

    def fresh(stem: str) -> str:
        return f"{stem}_{next(counter)}"

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    scales: set[str] = set()

    def act_params(key: str) -> tuple[str, str]:  # one (scale, zp) pair of initializers per activation
        a = qp.activations[key]
        s, z = key + ".scale", key + ".zero_point"
        if key not in scales:
            scales.add(key)
            const(s, f32(a.scale))
            const(z, np.uint8(a.zero_point))
        return s, z

    def quantize(key: str, x: str) -> str:
        """x (float) quantised to activation ``key``'s u8 codes and dequantised again."""
        s, z = act_params(key)
        q, dq = fresh(key + ".q"), fresh(key + ".dq")
        nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [q]))
        nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [dq]))
        return dq

    def deq(t: _T) -> str:
        if t.dq is None:
            assert t.f is not None
            t.dq = quantize(t.key, t.f)
        return t.dq

    def float_of(t: _T) -> str:  # what an fp32 layer reads: the float value where there is one
        return t.f if t.f is not None else deq(t)

    def layer(name: str, x: _T, op: str, attrs: dict, relu: bool, last: bool) -> _T | str:
        if name in qp.fp32:
            w, b = const(name + ".weight", np.asarray(tensors[name + ".weight"], f32)), \
                const(name + ".bias", np.asarray(tensors[name + ".bias"], f32))
            y = "logits" if last else fresh(name + "." + op.lower())  # the last FC has no ReLU
            nodes.append(helper.make_node(op, [float_of(x), w, b], [y], **attrs))
            if relu:
                r = fresh(name + ".relu")
                nodes.append(helper.make_node("Relu", [y], [r]))
                y = r
            return y if last else _T(name, f=y)
        lq = qp.layers[name]
        sx = f32(qp.activations[lq.input].scale)
        oc = lq.weight.shape[0]
        wq, ws, wz = (const(name + ".weight_q", lq.weight), const(name + ".weight_scale", lq.scale),
                      const(name + ".weight_zero_point", np.zeros(oc, np.int8)))
        bq, bs, bz = (const(name + ".bias_q", lq.bias), const(name + ".bias_scale", (sx * lq.scale).astype(f32)),
                      const(name + ".bias_zero_point", np.zeros(oc, np.int32)))
        wd, bd = fresh(name + ".weight_dq"), fresh(name + ".bias_dq")
        nodes.append(helper.make_node("DequantizeLinear", [wq, ws, wz], [wd], axis=0))
        nodes.append(helper.make_node("DequantizeLinear", [bq, bs, bz], [bd], axis=0))
        y = "logits" if last else fresh(name + "." + op.lower())
        nodes.append(helper.make_node(op, [deq(x), wd, bd], [y], **attrs))
        if last:  # logits stay float32
            return y
        # relu: the output's zero point is 0 (validated), so QuantizeLinear's clamp at 0 is the ReLU
        return _T(name, dq=quantize(name, y))

    class QdqOps:  # walk()'s steps as QDQ ONNX nodes; activations named as nasrt.quant.graph names them
        def conv(self, n: Named, x: _T) -> _T:
            u, p = n.unit, n.unit.kernel // 2
            out = layer(n.prefix, x, "Conv", {"kernel_shape": [u.kernel, u.kernel], "strides": [u.stride, u.stride],
                                              "pads": [p, p, p, p], "group": u.groups}, u.relu, last=False)
            assert isinstance(out, _T)
            return out

        def sum(self, key: str, xs: list) -> _T:
            s = deq(xs[0])
            for x in xs[1:]:
                nxt = fresh(key + ".add")
                nodes.append(helper.make_node("Add", [s, deq(x)], [nxt]))
                s = nxt
            return _T(key, dq=quantize(key, s))

        def add(self, key: str, a: _T, b: _T) -> _T:  # the ReLU: the u8 clamp (zero point 0)
            y = fresh(key)
            nodes.append(helper.make_node("Add", [deq(a), deq(b)], [y]))
            return _T(key, dq=quantize(key, y))

        def concat(self, key: str, xs: list) -> _T:  # the producers share the concat's (scale, zp)
            c = fresh(key)
            nodes.append(helper.make_node("Concat", [deq(x) for x in xs], [c], axis=1))
            return _T(key, dq=quantize(key, c))

        def features(self, xs: list) -> _T:
            pooled = []
            for p, x in enumerate(xs):
                g, v = fresh(f"pool.{p}"), fresh(f"flat.{p}")
                nodes.append(helper.make_node("GlobalAveragePool", [deq(x)], [g]))
                nodes.append(helper.make_node("Flatten", [quantize(FEATURES, g)], [v], axis=1))
                # Q/DQ around the Flatten too (the same scale: exact), so ORT moves it to the codes
                pooled.append(quantize(FEATURES, v) if len(xs) > 1 else v)
            if len(pooled) == 1:
                return _T(FEATURES, dq=pooled[0])
            h = fresh(FEATURES)
            nodes.append(helper.make_node("Concat", pooled, [h], axis=1))
            return _T(FEATURES, dq=quantize(FEATURES, h))  # the same (scale, zp): exact

        def fc(self, fc: Fc, h: _T, last: bool):
            return layer(fc.prefix, h, "Gemm", {"transB": 1}, fc.relu, last)

    walk(plan, QdqOps(), _T(INPUT, f="input"))
    graph = helper.make_graph(
        nodes, "nasrt-int8",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *plan.input])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", plan.classes])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nasrt")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_qdq_onnx(path: str | os.PathLike, plan: Plan, tensors: dict[str, np.ndarray], qp: QuantParams) -> None:
    """Builds, checks (onnx.checker) and atomically writes the QDQ ONNX file."""
    atomic_write_bytes(path, build_qdq_onnx(plan, tensors, qp).SerializeToString())
