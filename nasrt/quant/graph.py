"""The activation tensors of the lowered net (nasrt.contract.lowering.walk, run with
naming ops): their names and merge groups, which the int8 parameters, the fp32 and
the int8 reference use."""
from __future__ import annotations

from dataclasses import dataclass, field

from nasrt.contract.lowering import walk
from nasrt.contract.plan import Plan

INPUT, FEATURES = "input", "features"


@dataclass
class Tensors:
    """The activation tensors of a plan's int8 net (values: their names)."""
    keys: list[str] = field(default_factory=lambda: [INPUT])
    relu: set[str] = field(default_factory=set)  # written by a ReLU: zero point 0
    groups: list[tuple[str, ...]] = field(default_factory=list)  # tensors that share one (scale, zp)
    sums: dict[str, list[str]] = field(default_factory=dict)  # sum merge -> its inputs
    adds: dict[str, tuple[str, str]] = field(default_factory=dict)  # residual add -> (chain, shortcut)
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

    def add(self, key, a, b):  # no shared (s, zp): each input has its own multiplier
        self.t.adds[key] = (a, b)
        self.t.keys.append(key)
        self.t.relu.add(key)
        self.hw[key] = self.hw[a]
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
