"""A plan as named conv units: the one mapping from plan to tensor names and
shapes, shared by the model file, the runtime, the ONNX graph and BN folding."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from nasrt.contract.ops import ConvUnit, lower_block, merge_unit, shortcut_unit
from nasrt.contract.plan import Block, Plan


@dataclass(frozen=True)
class Named:
    prefix: str  # tensors are prefix + ".weight" / ".bias"
    unit: ConvUnit


@dataclass(frozen=True)
class Fc:
    prefix: str
    in_f: int
    out_f: int
    relu: bool


def _block_units(prefix: str, block: Block, in_c: int) -> list[Named]:
    return [Named(f"{prefix}.{u.name}" if u.name else prefix, u)
            for u in lower_block(block.op, in_c, block.out, block.kernel, block.stride, block.residual)]


def stem_units(plan: Plan) -> list[Named]:
    return _block_units("stem", plan.stem, plan.input[0]) if plan.stem else []


def block_chain(plan: Plan, p: int, l: int) -> list[Named]:
    """The conv chain of block l of path p (a residual block's last unit has no ReLU)."""
    in_c = plan.layer_shapes()[l].in_c
    return _block_units(f"paths.{p}.blocks.{l}", plan.paths[p][l], in_c)


def block_shortcut(plan: Plan, p: int, l: int) -> Named | None:
    """A residual block's 1x1 projection; None for the identity and for a plain block."""
    b, in_c = plan.paths[p][l], plan.layer_shapes()[l].in_c
    u = shortcut_unit(in_c, b.out, b.stride) if b.residual else None
    return Named(f"paths.{p}.blocks.{l}.{u.name}", u) if u else None


def block_units(plan: Plan, p: int, l: int) -> list[Named]:
    """Every conv unit of block l of path p: the chain, then the projection if any."""
    sc = block_shortcut(plan, p, l)
    return block_chain(plan, p, l) + ([sc] if sc else [])


def sync_units(plan: Plan) -> dict[int, Named | None]:
    """Kept sync points by layer: the merge conv, or None for sum."""
    shapes = plan.layer_shapes()
    out = {}
    for s in plan.syncs:
        u = merge_unit(s.merge, plan.num_paths, shapes[s.after].out_c)
        out[s.after] = Named(f"syncs.{s.after}", u) if u else None
    return out


def head_fcs(plan: Plan) -> list[Fc]:
    sizes = plan.head_sizes()
    return [Fc(f"head.{j}", i, o, relu=j < len(sizes) - 1) for j, (i, o) in enumerate(sizes)]


def expected_tensors(plan: Plan) -> dict[str, tuple[int, ...]]:
    """Every tensor a model file of this plan holds, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(n: Named):
        shapes[n.prefix + ".weight"] = n.unit.weight_shape
        shapes[n.prefix + ".bias"] = (n.unit.out_c,)

    for n in stem_units(plan):
        conv(n)
    for p in range(plan.num_paths):
        for l in range(plan.num_layers):
            for n in block_units(plan, p, l):
                conv(n)
    for sync in sync_units(plan).values():
        if sync:
            conv(sync)
    for fc in head_fcs(plan):
        shapes[fc.prefix + ".weight"] = (fc.out_f, fc.in_f)
        shapes[fc.prefix + ".bias"] = (fc.out_f,)
    return shapes


def conv_units(plan: Plan) -> list[Named]:
    """Every conv unit of the net (stem, blocks, merge convs)."""
    units = list(stem_units(plan))
    for p in range(plan.num_paths):
        for l in range(plan.num_layers):
            units += block_units(plan, p, l)
    units += [n for n in sync_units(plan).values() if n]
    return units


def _unit_dict(n: Named) -> dict:
    u = n.unit
    return {"name": n.prefix, "in": u.in_c, "out": u.out_c, "kernel": u.kernel, "stride": u.stride,
            "groups": u.groups, "relu": u.relu}


def _layer_dict(plan: Plan, p: int, l: int) -> list | dict:
    """A plain block's units, or a residual block's {"convs": chain, "shortcut": projection or null}."""
    chain = [_unit_dict(n) for n in block_chain(plan, p, l)]
    if not plan.paths[p][l].residual:
        return chain
    sc = block_shortcut(plan, p, l)
    return {"convs": chain, "shortcut": _unit_dict(sc) if sc else None}


def graph(plan: Plan) -> dict:
    """The lowered graph that model files carry (metadata ``nasrt.graph``) and the
    native loader reads: every conv unit with its tensor prefix, by stem / path /
    layer, the kept syncs and the head. The format is in docs/FORMATS.md."""
    syncs = []
    for after, n in sorted(sync_units(plan).items()):
        syncs.append({"after": after, "merge": "conv1x1", "conv": _unit_dict(n)} if n
                     else {"after": after, "merge": "sum"})
    return {
        "input": list(plan.input),
        "stem": [_unit_dict(n) for n in stem_units(plan)],
        "paths": [[_layer_dict(plan, p, l) for l in range(plan.num_layers)] for p in range(plan.num_paths)],
        "syncs": syncs,
        "head": [{"name": fc.prefix, "in": fc.in_f, "out": fc.out_f, "relu": fc.relu} for fc in head_fcs(plan)],
    }


class Ops(Protocol):
    """What walk() does at each step of the lowered net (ONNX nodes, numpy arrays, names)."""
    def conv(self, n: Named, x: Any) -> Any: ...
    def sum(self, key: str, xs: list) -> Any: ...
    def add(self, key: str, a: Any, b: Any) -> Any: ...  # a residual block's ReLU(a + b)
    def concat(self, key: str, xs: list) -> Any: ...
    def features(self, xs: list) -> Any: ...  # global average pool of every path, concatenated
    def fc(self, fc: Fc, h: Any, last: bool) -> Any: ...


def walk(plan: Plan, ops: Ops, x: Any) -> Any:
    """Runs the net on ``x`` with ``ops``. Activation names: a conv unit's or FC's output
    is its tensor prefix ("stem", "paths.0.blocks.1.dw", "paths.0.blocks.1.shortcut",
    "syncs.3", "head.0"), a residual block's output (after the add and ReLU)
    "paths.{p}.blocks.{l}.add", a sum merge's "syncs.{l}", a conv1x1 merge's input
    "syncs.{l}.concat", the pooled features "features"; the net input is "input"."""
    for n in stem_units(plan):
        x = ops.conv(n, x)
    feats = [x] * plan.num_paths
    syncs = sync_units(plan)
    for l in range(plan.num_layers):
        outs = []
        for p in range(plan.num_paths):
            x_in = y = feats[p]
            for n in block_chain(plan, p, l):
                y = ops.conv(n, y)
            if plan.paths[p][l].residual:  # the shortcut reads the block input (identity: is it)
                sc = block_shortcut(plan, p, l)
                y = ops.add(f"paths.{p}.blocks.{l}.add", y, ops.conv(sc, x_in) if sc else x_in)
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
