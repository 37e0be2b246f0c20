"""build_net: the torch module of a Plan, implementing plan-v1 exactly."""
from __future__ import annotations

import torch
from torch import nn

from nasrt.contract.ops import ConvUnit, lower_block, merge_unit
from nasrt.contract.plan import Block, Plan


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU: the unit that folds into one conv."""

    def __init__(self, u: ConvUnit):
        super().__init__()
        self.conv = nn.Conv2d(u.in_c, u.out_c, u.kernel, u.stride, u.kernel // 2,
                              groups=u.groups, bias=False)
        self.bn = nn.BatchNorm2d(u.out_c)
        self.relu = u.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.relu else x


class SepConv(nn.Module):
    """Depthwise k x k (stride s) + BN + ReLU, then pointwise 1x1 + BN + ReLU."""

    def __init__(self, dw: ConvUnit, pw: ConvUnit):
        super().__init__()
        self.dw, self.pw = ConvBN(dw), ConvBN(pw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


def make_block(block: Block, in_c: int) -> nn.Module:
    """The torch module of one block op (module names match lowering's tensor names)."""
    units = lower_block(block.op, in_c, block.out, block.kernel, block.stride)
    if block.op in ("conv", "dwconv"):
        return ConvBN(units[0])
    if block.op == "sepconv":
        return SepConv(*units)
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
