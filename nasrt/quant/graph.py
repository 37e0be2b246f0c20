"""The lowered net as one walk (stem, paths, syncs, pool, head: the order of
nasrt.contract.onnx_graph), run with different ops: the names and groups of the
activation tensors the int8 net reads and writes, the fp32 and the int8 reference."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from nasrt.contract.lowering import Fc, Named, block_units, head_fcs, stem_units, sync_units
from nasrt.contract.plan import Plan

INPUT, FEATURES = "input", "features"


class Ops(Protocol):
    def conv(self, n: Named, x: Any) -> Any: ...
    def sum(self, key: str, xs: list) -> Any: ...
    def concat(self, key: str, xs: list) -> Any: ...
    def features(self, xs: list) -> Any: ...  # global average pool of every path, concatenated
    def fc(self, fc: Fc, h: Any, last: bool) -> Any: ...


def walk(plan: Plan, ops: Ops, x: Any) -> Any:
    """Runs the net on ``x`` with ``ops``. Activation names: a conv unit's or FC's output
    is its tensor prefix ("stem", "paths.0.blocks.1.dw", "syncs.3", "head.0"), a sum
    merge's "syncs.{l}", a conv1x1 merge's input "syncs.{l}.concat", the pooled features
    "features"; the net input is "input"."""
    for n in stem_units(plan):
        x = ops.conv(n, x)
    feats = [x] * plan.num_paths
    syncs = sync_units(plan)
    for l in range(plan.num_layers):
        outs = []
        for p in range(plan.num_paths):
            y = feats[p]
            for n in block_units(plan, p, l):
                y = ops.conv(n, y)
            outs.append(y)
        if l in syncs:
            unit = syncs[l]
            s = ops.sum(f"syncs.{l}", outs) if unit is None else ops.conv(unit, ops.concat(f"syncs.{l}.concat", outs))
            feats = [s] * plan.num_paths
        else:
            feats = outs
    h = ops.features(feats)
    fcs = head_fcs(plan)
    for j, fc in enumerate(fcs):
        h = ops.fc(fc, h, last=j == len(fcs) - 1)
    return h


@dataclass
class Tensors:
    """The activation tensors of a plan's int8 net (values: their names)."""
    keys: list[str] = field(default_factory=lambda: [INPUT])
    relu: set[str] = field(default_factory=set)  # written by a ReLU: zero point 0
    groups: list[tuple[str, ...]] = field(default_factory=list)  # tensors that share one (scale, zp)
    sums: dict[str, list[str]] = field(default_factory=dict)  # sum merge -> its inputs
    pools: list[tuple[str, int]] = field(default_factory=list)  # (pooled tensor, pixels) per path
    inputs: dict[str, str] = field(default_factory=dict)  # conv / FC -> the tensor it reads
    weight_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


class _Names:
    def __init__(self, plan: Plan):
        self.t = Tensors()
        self.hw = {INPUT: plan.input[1:]}

    def _new(self, key: str, src: str, relu: bool, hw):
        self.t.keys.append(key)
        self.hw[key] = hw
        if relu:
            self.t.relu.add(key)
        self.t.inputs.setdefault(key, src)
        return key

    def conv(self, n, x):
        self.t.weight_shapes[n.prefix] = n.unit.weight_shape
        return self._new(n.prefix, x, n.unit.relu, n.unit.out_hw(*self.hw[x]))

    def sum(self, key, xs):
        self.t.sums[key] = list(xs)
        self.t.groups.append(tuple(dict.fromkeys(xs)))
        self.t.keys.append(key)
        self.hw[key] = self.hw[xs[0]]
        return key

    def concat(self, key, xs):
        self.t.groups.append(tuple(dict.fromkeys([key, *xs])))
        self.t.keys.append(key)
        self.hw[key] = self.hw[xs[0]]
        return key

    def features(self, xs):
        self.t.pools = [(x, self.hw[x][0] * self.hw[x][1]) for x in xs]
        self.t.keys.append(FEATURES)
        return FEATURES

    def fc(self, fc, h, last):
        self.t.weight_shapes[fc.prefix] = (fc.out_f, fc.in_f)
        self.t.inputs[fc.prefix] = h
        if last:
            return "logits"
        return self._new(fc.prefix, h, fc.relu, (1, 1))


def graph_tensors(plan: Plan) -> Tensors:
    names = _Names(plan)
    walk(plan, names, INPUT)
    t = names.t
    grouped = {k for g in t.groups for k in g}
    t.groups += [(k,) for k in t.keys if k not in grouped]
    return t


def conv_layers(plan: Plan) -> dict[str, str]:
    """Every conv unit and FC, in net order, with the activation tensor it reads."""
    return dict(graph_tensors(plan).inputs)
