"""The SuperNet: P paths of mixed blocks (eq. 1-2) and a sync gate after every
layer (eq. 3-4); derive() turns its decision variables into a Plan."""
from __future__ import annotations

import torch
from torch import nn

from nasrt.contract.ops import ConvUnit, lower_block, merge_unit
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.contract.space import SearchSpace
from nasrt.search.metakernel import MetaConv
from nasrt.search.net import Chain, ConvBN, make_block, make_head, merge, pool_and_head


def choice_weights(logits: torch.Tensor, gumbel_tau: float | None = None) -> torch.Tensor:
    """softmax(logits), or a Gumbel-softmax sample at temperature tau."""
    if gumbel_tau is None:
        return torch.softmax(logits, dim=-1)
    return nn.functional.gumbel_softmax(logits, tau=gumbel_tau, hard=False, dim=-1)


def preact_block(op: str, kernel: int, in_c: int, out_c: int, stride: int) -> nn.Module:
    """A candidate's conv units with the last one's ReLU removed: its pre-activation (the
    last BN's output), which a residual block adds its shortcut to before the ReLU. The
    plan net's modules (net.py), so their names are the lowering's."""
    units = lower_block(op, in_c, out_c, kernel, stride, residual=True)
    return ConvBN(units[0]) if len(units) == 1 else Chain(units)


class MixedBlock(nn.Module):
    """O = sum_i OP_i(I) * P_op_i, P_op = softmax(w) (paper eq. 1-2). The choices of a
    meta-kernel group run as one MetaConv: W_g * MetaConv(I, P_g / W_g), W_g = sum P_g.
    preact: every choice without its last ReLU, so O is the mixed pre-activation z
    (sum_i P_op_i z_i) that the SuperNet's residual decision adds the shortcut to."""

    def __init__(self, candidates, meta_groups, in_c: int, out_c: int, stride: int, preact: bool = False):
        super().__init__()
        grouped = {i for g in meta_groups for i in g}
        self.preact = preact
        self.plain_idx = [i for i in range(len(candidates)) if i not in grouped]
        self.ops = nn.ModuleList(preact_block(*candidates[i], in_c, out_c, stride) if preact
                                 else make_block(Block(*candidates[i], stride, out_c), in_c) for i in self.plain_idx)
        self.meta_idx = [list(g) for g in meta_groups]
        self.metas = nn.ModuleList(MetaConv(tuple(candidates[i][1] for i in g), in_c, out_c, stride)
                                   for g in meta_groups)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        terms = [op(x) * weights[i] for i, op in zip(self.plain_idx, self.ops)]
        for idx, meta in zip(self.meta_idx, self.metas):
            w = weights[idx]
            total = w.sum()
            terms.append((meta.preact if self.preact else meta)(x, w / total) * total)
        out = terms[0]
        for t in terms[1:]:
            out = out + t
        return out


class SuperNet(nn.Module):
    """Weights in ``weight_parameters()``, decision variables in ``arch_parameters()``:
    ``op_logits`` (L, P, n_ops) and ``sync_logits`` (L, 2) = [sync, direct]; with
    residual "search" ``res_logits`` (L, P, 2) = [residual, plain], with several widths
    ``width_logits`` (L, n_widths).

    A residual block's output is P_res * ReLU(z + S(x)) + P_plain * ReLU(z), z the mixed
    pre-activation and S its shortcut (identity or 1x1 projection + BN, one per block).
    Widths (FBNetV2 channel masking): every layer computes at its largest width and its
    output is multiplied by the soft mask sum_w P_w * mask_w (mask_w: the first out_w
    channels); the next layer reads the max-width map, whose masked channels are zero."""

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
        preact = space.residual != "none"
        self.blocks = nn.ModuleList()
        self.merges = nn.ModuleList()
        self.shortcuts = nn.ModuleList() if preact else None
        for l, (out, stride) in enumerate(zip(space.max_channels, space.strides)):
            self.blocks.append(nn.ModuleList(MixedBlock(space.candidates, space.meta_groups, c, out, stride, preact)
                                             for _ in range(P)))
            if self.shortcuts is not None:
                self.shortcuts.append(nn.ModuleList(
                    nn.Identity() if space.identity_shortcut(l)
                    else ConvBN(ConvUnit("shortcut", c, out, 1, stride, relu=False)) for _ in range(P)))
            unit = merge_unit(space.merge, P, out)
            self.merges.append(ConvBN(unit) if unit else nn.Identity())
            # mask_w of every width choice (W, out): not saved, a function of the space
            n = torch.tensor(space.layer_widths(l))
            self.register_buffer(f"width_mask_{l}", (torch.arange(out)[None, :] < n[:, None]).float(), persistent=False)
            c = out
        self.head = make_head(self._plan_skeleton())
        self.op_logits = nn.Parameter(torch.zeros(L, P, len(space.candidates)))
        self.sync_logits = nn.Parameter(torch.zeros(L, 2))
        # Only the decisions the space offers exist (checkpoints of other spaces keep their keys).
        self.res_logits = nn.Parameter(torch.zeros(L, P, 2)) if space.searches_residual else None
        self.width_logits = nn.Parameter(torch.zeros(L, len(space.widths))) if len(space.widths) > 1 else None
        self.gumbel_tau: float | None = None  # set by the search loop when sampling
        self.keep_pooled = False  # forward keeps each path's pooled features (the feedback block's path losses)
        self.pooled: list[torch.Tensor] | None = None

    def weight_parameters(self):
        return [p for n, p in self.named_parameters() if not n.endswith("_logits")]

    def arch_parameters(self):
        return [p for p in (self.op_logits, self.sync_logits, self.res_logits, self.width_logits) if p is not None]

    def op_probs(self) -> torch.Tensor:
        return torch.softmax(self.op_logits, -1)

    def sync_probs(self) -> torch.Tensor:
        """(L, 2): [P_sync, P_direct] per layer."""
        return torch.softmax(self.sync_logits, -1)

    def res_probs(self) -> torch.Tensor | None:
        """(L, P): P_res of every block (1 with residual "all", 0 with "none")."""
        L, P = self.space.layers, self.space.paths
        if self.res_logits is not None:
            return torch.softmax(self.res_logits, -1)[..., 0]
        return self.op_logits.new_full((L, P), 1.0 if self.space.residual == "all" else 0.0)

    def width_probs(self) -> torch.Tensor:
        """(L, n_widths): P_w per layer (one column for a space of one width)."""
        if self.width_logits is None:
            return self.op_logits.new_ones(self.space.layers, 1)
        return torch.softmax(self.width_logits, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tau = self.gumbel_tau if self.training else None
        op_w = choice_weights(self.op_logits, tau)
        sync_w = choice_weights(self.sync_logits, tau)
        res_w = choice_weights(self.res_logits, tau) if self.res_logits is not None else None
        width_w = choice_weights(self.width_logits, tau) if self.width_logits is not None else None
        s = self.stem(x) if self.stem is not None else x
        feats = [s] * self.space.paths
        for l, (blocks, merge_conv) in enumerate(zip(self.blocks, self.merges)):
            outs = [blk(f, op_w[l, p]) for p, (blk, f) in enumerate(zip(blocks, feats))]
            if self.shortcuts is not None:  # outs are pre-activations z
                outs = [self._residual(z, sc(f), res_w[l, p] if res_w is not None else None)
                        for p, (z, sc, f) in enumerate(zip(outs, self.shortcuts[l], feats))]
            mask = None
            if width_w is not None:
                mask = (width_w[l] @ getattr(self, f"width_mask_{l}"))[None, :, None, None]
                outs = [o * mask for o in outs]
            s = merge(outs, self.space.merge, merge_conv)
            if mask is not None and self.space.merge == "conv1x1":
                s = s * mask  # the merge conv's out is the layer's width too
            # O_i = s * P_sync + B_i * P_direct (eq. 4)
            feats = [s * sync_w[l, 0] + o * sync_w[l, 1] for o in outs]
        if self.keep_pooled:
            self.pooled = [f.mean(dim=(2, 3)).detach() for f in feats]
        return pool_and_head(feats, self.head)

    @staticmethod
    def _residual(z: torch.Tensor, shortcut: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        """ReLU(z + S(x)) for residual "all" (w None), else P_res * that + P_plain * ReLU(z)."""
        res = torch.relu(z + shortcut)
        return res if w is None else res * w[0] + torch.relu(z) * w[1]

    def meta_sets(self) -> list[list[MetaConv]]:
        """Per layer and meta-kernel group, that group's MetaConv on every path (the feedback block mixes them)."""
        return [[blocks[p].metas[g] for p in range(len(blocks))]
                for blocks in self.blocks for g in range(len(blocks[0].metas))]

    def derive(self, meta: dict | None = None) -> Plan:
        """derive() of this net's decision variables."""
        def d(t):
            return t.detach() if t is not None else None
        return derive(self.space, d(self.op_logits), d(self.sync_logits), meta, d(self.res_logits),
                      d(self.width_logits))

    def _plan_skeleton(self) -> Plan:
        """A plan of the SuperNet's shapes (the largest widths): what the head is built from."""
        sp = self.space
        first = sp.candidates[0]
        return _make_plan(sp, [[first] * sp.layers for _ in range(sp.paths)], [])


def _make_plan(space: SearchSpace, choice, kept_syncs, meta=None, residual=None, width_idx=None) -> Plan:
    """choice[p][l]: (op, k); residual[p][l]: bool (None: the space's mode, False for "search");
    width_idx[l]: the width choice per layer (None: the largest width everywhere)."""
    stem = space.stem_block
    P, L = space.paths, space.layers
    if residual is None:
        residual = [[space.residual == "all"] * L for _ in range(P)]
    outs = (space.max_channels if width_idx is None
            else tuple(space.layer_widths(l)[int(i)] for l, i in enumerate(width_idx)))
    paths = tuple(tuple(Block(op, k, s, c, bool(r)) for (op, k), c, s, r in zip(path, outs, space.strides, res))
                  for path, res in zip(choice, residual))
    return Plan(tuple(space.input), space.classes, stem, paths,
                tuple(Sync(l, space.merge) for l in kept_syncs), tuple(space.hidden), meta or {})


def derive(space: SearchSpace, op_logits: torch.Tensor, sync_logits: torch.Tensor,
           meta: dict | None = None, res_logits: torch.Tensor | None = None,
           width_logits: torch.Tensor | None = None) -> Plan:
    """Argmax op per block; a sync point is kept where P_sync > P_direct; a block is
    residual where P_res > P_plain (residual "search"; "all": every block); the argmax
    width per layer (several widths).

    A pure function of the decision variables (DARTS' genotype step).
    """
    P, L, W = space.paths, space.layers, len(space.widths)
    if tuple(op_logits.shape) != (L, P, len(space.candidates)) or tuple(sync_logits.shape) != (L, 2):
        raise ValueError(f"decision variables have shapes {tuple(op_logits.shape)}, {tuple(sync_logits.shape)}; "
                         f"the space needs ({L}, {P}, {len(space.candidates)}) and ({L}, 2)")
    if space.searches_residual != (res_logits is not None) or (
            res_logits is not None and tuple(res_logits.shape) != (L, P, 2)):
        raise ValueError(f"res_logits: the space (residual {space.residual!r}) needs "
                         + (f"shape ({L}, {P}, 2)" if space.searches_residual else "none")
                         + (f", got {tuple(res_logits.shape)}" if res_logits is not None else ", got none"))
    if (W > 1) != (width_logits is not None) or (width_logits is not None and tuple(width_logits.shape) != (L, W)):
        raise ValueError(f"width_logits: the space ({W} widths) needs " + (f"shape ({L}, {W})" if W > 1 else "none")
                         + (f", got {tuple(width_logits.shape)}" if width_logits is not None else ", got none"))
    best = op_logits.argmax(-1)  # (L, P)
    choice = [[space.candidates[int(best[l, p])] for l in range(L)] for p in range(P)]
    probs = torch.softmax(sync_logits, -1)
    kept = [l for l in range(L) if probs[l, 0] > probs[l, 1]]
    residual = None
    if res_logits is not None:
        rp = torch.softmax(res_logits, -1)
        residual = [[bool(rp[l, p, 0] > rp[l, p, 1]) for l in range(L)] for p in range(P)]
    width_idx = [int(i) for i in width_logits.argmax(-1)] if width_logits is not None else None
    return _make_plan(space, choice, kept, meta, residual, width_idx)
