"""build_net: the torch module of a Plan, implementing plan-v1 exactly."""
from __future__ import annotations

import torch
from torch import nn

from nasrt.contract.ops import ConvUnit, lower_block, merge_unit, shortcut_unit
from nasrt.contract.plan import Block, Plan


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU: the unit that folds into one conv. As a residual
    block of op conv (``residual``): ReLU(BN(conv(x)) + shortcut(x)), the shortcut a ConvBN
    projection or None for the identity."""

    def __init__(self, u: ConvUnit, residual: bool = False, shortcut: ConvUnit | None = None):
        super().__init__()
        self.conv = nn.Conv2d(u.in_c, u.out_c, u.kernel, u.stride, u.kernel // 2,
                              groups=u.groups, bias=False)
        self.bn = nn.BatchNorm2d(u.out_c)
        self.relu = u.relu
        self.residual = residual
        self.shortcut = ConvBN(shortcut) if shortcut is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if self.residual:
            return _add(y, x, self.shortcut)
        return torch.relu(y) if self.relu else y


def _add(y: torch.Tensor, x: torch.Tensor, shortcut: nn.Module | None) -> torch.Tensor:
    """A residual block's output: ReLU(chain + S(x)), S the projection or the identity."""
    return torch.relu(y + (shortcut(x) if shortcut is not None else x))


class Chain(nn.Module):
    """A block of several conv units (sepconv: dw, pw; dconv: conv1, conv2), each a ConvBN
    submodule named by its unit (the lowering's tensor suffix); residual as in ConvBN."""

    def __init__(self, units: list[ConvUnit], residual: bool = False, shortcut: ConvUnit | None = None):
        super().__init__()
        self.names = tuple(u.name for u in units)
        for u in units:
            self.add_module(u.name, ConvBN(u))
        self.residual = residual
        self.shortcut = ConvBN(shortcut) if shortcut is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for name in self.names:
            y = getattr(self, name)(y)
        return _add(y, x, self.shortcut) if self.residual else y


def make_block(block: Block, in_c: int) -> nn.Module:
    """The torch module of one block op: its submodules are named so that every conv unit
    of the lowering (nasrt.contract.lowering) is the module at its tensor prefix, with
    ``conv`` and ``bn`` (what BN folding reads)."""
    units = lower_block(block.op, in_c, block.out, block.kernel, block.stride, block.residual)
    shortcut = shortcut_unit(in_c, block.out, block.stride) if block.residual else None
    if block.op in ("conv", "dwconv"):
        return ConvBN(units[0], block.residual, shortcut)
    if block.op in ("sepconv", "dconv"):
        return Chain(units, block.residual, shortcut)
    raise ValueError(f"no torch module for op {block.op!r}")


class PathNet(nn.Module):
    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


def merge(outs: list[torch.Tensor], mode: str, conv: nn.Module | None) -> torch.Tensor:
    """A sync merge: sum of the paths, or conv1x1 over their concatenation."""
    if mode == "sum":
        s = outs[0]
        for o in outs[1:]:
            s = s + o
        return s
    return conv(torch.cat(outs, dim=1))


def pool_and_head(feats: list[torch.Tensor], head: nn.ModuleList) -> torch.Tensor:
    """Global average pool per path, concat in path order, FC+ReLU..., final FC."""
    return head_logits(torch.cat([f.mean(dim=(2, 3)) for f in feats], dim=1), head)


def head_logits(h: torch.Tensor, head: nn.ModuleList) -> torch.Tensor:
    """The head on the concatenated pooled features: FC+ReLU..., final FC."""
    for fc in head[:-1]:
        h = torch.relu(fc(h))
    return head[-1](h)


def make_head(plan: Plan) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(i, o) for i, o in plan.head_sizes())


class PlanNet(nn.Module):
    """A parallel-path CNN built from a Plan alone."""

    def __init__(self, plan: Plan):
        super().__init__()
        self.plan = plan
        self.stem = make_block(plan.stem, plan.input[0]) if plan.stem else None
        shapes = plan.layer_shapes()
        self.paths = nn.ModuleList(
            PathNet([make_block(path[l], shapes[l].in_c) for l in range(plan.num_layers)])
            for path in plan.paths)
        self.syncs = nn.ModuleDict({
            str(s.after): ConvBN(merge_unit(s.merge, plan.num_paths, shapes[s.after].out_c))
            for s in plan.syncs if s.merge == "conv1x1"})
        self.head = make_head(plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x) if self.stem is not None else x
        feats = [s] * self.plan.num_paths
        for l in range(self.plan.num_layers):
            outs = [path.blocks[l](f) for path, f in zip(self.paths, feats)]
            sync = self.plan.sync_after(l)
            if sync:
                s = merge(outs, sync.merge, self.syncs[str(l)] if sync.merge == "conv1x1" else None)
                feats = [s] * self.plan.num_paths
            else:
                feats = outs
        return pool_and_head(feats, self.head)


def build_net(plan: Plan) -> PlanNet:
    """The torch.nn.Module implementing ``plan`` (plan-v1 semantics).

    Example:
        >>> net = build_net(Plan.load("plan.json")).eval()
        >>> logits = net(torch.zeros(1, *net.plan.input))
    """
    return PlanNet(plan)
