"""The SuperNet: P paths of mixed blocks (eq. 1-2) and a sync gate after every
layer (eq. 3-4); derive() turns its decision variables into a Plan."""
from __future__ import annotations

import torch
from torch import nn

from nasrt.contract.ops import merge_unit
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.contract.space import SearchSpace
from nasrt.search.metakernel import MetaConv
from nasrt.search.net import ConvBN, make_block, make_head, merge, pool_and_head


def choice_weights(logits: torch.Tensor, gumbel_tau: float | None = None) -> torch.Tensor:
    """softmax(logits), or a Gumbel-softmax sample at temperature tau."""
    if gumbel_tau is None:
        return torch.softmax(logits, dim=-1)
    return nn.functional.gumbel_softmax(logits, tau=gumbel_tau, hard=False, dim=-1)


class MixedBlock(nn.Module):
    """O = sum_i OP_i(I) * P_op_i, P_op = softmax(w) (paper eq. 1-2). The choices of a
    meta-kernel group run as one MetaConv: W_g * MetaConv(I, P_g / W_g), W_g = sum P_g."""

    def __init__(self, candidates, meta_groups, in_c: int, out_c: int, stride: int):
        super().__init__()
        grouped = {i for g in meta_groups for i in g}
        self.plain_idx = [i for i in range(len(candidates)) if i not in grouped]
        self.ops = nn.ModuleList(make_block(Block(*candidates[i], stride, out_c), in_c) for i in self.plain_idx)
        self.meta_idx = [list(g) for g in meta_groups]
        self.metas = nn.ModuleList(MetaConv(tuple(candidates[i][1] for i in g), in_c, out_c, stride)
                                   for g in meta_groups)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        terms = [op(x) * weights[i] for i, op in zip(self.plain_idx, self.ops)]
        for idx, meta in zip(self.meta_idx, self.metas):
            w = weights[idx]
            total = w.sum()
            terms.append(meta(x, w / total) * total)
        out = terms[0]
        for t in terms[1:]:
            out = out + t
        return out


class SuperNet(nn.Module):
    """Weights in ``weight_parameters()``, decision variables in ``arch_parameters()``:
    ``op_logits`` (L, P, n_ops) and ``sync_logits`` (L, 2) = [sync, direct]."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        if space.input is None or space.classes is None:
            raise ValueError("space: bind the dataset's input shape and classes first (space.bind)")
        self.space = space
        P, L = space.paths, space.layers
        c = space.input[0]
        self.stem = None
        if space.stem_block is not None:
            self.stem = make_block(space.stem_block, c)
            c = space.stem_out
        self.blocks = nn.ModuleList()
        self.merges = nn.ModuleList()
        for out, stride in zip(space.channels, space.strides):
            self.blocks.append(nn.ModuleList(MixedBlock(space.candidates, space.meta_groups, c, out, stride)
                                             for _ in range(P)))
            unit = merge_unit(space.merge, P, out)
            self.merges.append(ConvBN(unit) if unit else nn.Identity())
            c = out
        self.head = make_head(self._plan_skeleton())
        self.op_logits = nn.Parameter(torch.zeros(L, P, len(space.candidates)))
        self.sync_logits = nn.Parameter(torch.zeros(L, 2))
        self.gumbel_tau: float | None = None  # set by the search loop when sampling
        self.keep_pooled = False  # forward keeps each path's pooled features (the feedback block's path losses)
        self.pooled: list[torch.Tensor] | None = None

    def weight_parameters(self):
        return [p for n, p in self.named_parameters() if not n.endswith("_logits")]

    def arch_parameters(self):
        return [self.op_logits, self.sync_logits]

    def op_probs(self) -> torch.Tensor:
        return torch.softmax(self.op_logits, -1)

    def sync_probs(self) -> torch.Tensor:
        """(L, 2): [P_sync, P_direct] per layer."""
        return torch.softmax(self.sync_logits, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tau = self.gumbel_tau if self.training else None
        op_w = choice_weights(self.op_logits, tau)
        sync_w = choice_weights(self.sync_logits, tau)
        s = self.stem(x) if self.stem is not None else x
        feats = [s] * self.space.paths
        for l, (blocks, merge_conv) in enumerate(zip(self.blocks, self.merges)):
            outs = [blk(f, op_w[l, p]) for p, (blk, f) in enumerate(zip(blocks, feats))]
            s = merge(outs, self.space.merge, merge_conv)
            # O_i = s * P_sync + B_i * P_direct (eq. 4)
            feats = [s * sync_w[l, 0] + o * sync_w[l, 1] for o in outs]
        if self.keep_pooled:
            self.pooled = [f.mean(dim=(2, 3)).detach() for f in feats]
        return pool_and_head(feats, self.head)

    def meta_sets(self) -> list[list[MetaConv]]:
        """Per layer and meta-kernel group, that group's MetaConv on every path (the feedback block mixes them)."""
        return [[blocks[p].metas[g] for p in range(len(blocks))]
                for blocks in self.blocks for g in range(len(blocks[0].metas))]

    def _plan_skeleton(self) -> Plan:
        sp = self.space
        first = sp.candidates[0]
        return _make_plan(sp, [[first] * sp.layers for _ in range(sp.paths)], [])


def _make_plan(space: SearchSpace, choice, kept_syncs, meta=None) -> Plan:
    stem = space.stem_block
    paths = tuple(tuple(Block(op, k, s, c) for (op, k), c, s in zip(path, space.channels, space.strides))
                  for path in choice)
    return Plan(tuple(space.input), space.classes, stem, paths,
                tuple(Sync(l, space.merge) for l in kept_syncs), tuple(space.hidden), meta or {})


def derive(space: SearchSpace, op_logits: torch.Tensor, sync_logits: torch.Tensor,
           meta: dict | None = None) -> Plan:
    """Argmax op per block; a sync point is kept where P_sync > P_direct.

    A pure function of the decision variables (DARTS' genotype step).
    """
    P, L = space.paths, space.layers
    if tuple(op_logits.shape) != (L, P, len(space.candidates)) or tuple(sync_logits.shape) != (L, 2):
        raise ValueError(f"decision variables have shapes {tuple(op_logits.shape)}, {tuple(sync_logits.shape)}; "
                         f"the space needs ({L}, {P}, {len(space.candidates)}) and ({L}, 2)")
    best = op_logits.argmax(-1)  # (L, P)
    choice = [[space.candidates[int(best[l, p])] for l in range(L)] for p in range(P)]
    probs = torch.softmax(sync_logits, -1)
    kept = [l for l in range(L) if probs[l, 0] > probs[l, 1]]
    return _make_plan(space, choice, kept, meta)
