"""The search's cost terms (paper eq. 6-12): exact FLOPs of every candidate at its
real shape, expected under the decision variables' softmax, normalised to [0, 1]."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nasrt.contract.lut import LatencyTable
from nasrt.contract.ops import block_cost, candidate_name, fc_cost, merge_cost
from nasrt.contract.space import SearchSpace


@dataclass(frozen=True)
class CostTable:
    """FLOPs of every choice at its real shape, by the width choices of the layer's input
    (i, the layer before's width; layer 0 reads the stem's fixed map: every i is the same)
    and output (o): op_flops (L, W, W, n_ops) of each candidate at layer l (the same on
    every path); res_flops (L, W, W) of a residual block's projection (where it has one)
    and add; sync_flops (L, W) of the merge after layer l. W = 1 without width choices."""
    op_flops: torch.Tensor
    sync_flops: torch.Tensor
    paths: int
    res_flops: torch.Tensor | None = None  # None: the space offers no residual blocks

    @property
    def max_ops(self) -> float:
        """Norm of loss_ops: every block at its most expensive choice (op, widths, residual)."""
        worst = self.op_flops.flatten(1).max(-1).values.sum()
        if self.res_flops is not None:
            worst = worst + self.res_flops.flatten(1).max(-1).values.sum()
        return float(worst) * self.paths

    @property
    def max_sync(self) -> float:
        """Norm of loss_sync: every sync point kept, at its widest."""
        return float(self.sync_flops.max(-1).values.sum())


def flop_table(space: SearchSpace, measure: str = "flops") -> CostTable:
    """The cost of every choice in FLOPs (the paper's eq. 6-11) or, measure="macs", in MACs
    (what --budget-macs bounds)."""
    m = ("macs", "flops").index(measure)
    W = len(space.widths)
    shapes = space.layer_shapes()  # (h, w) and strides do not depend on the widths
    ops = torch.zeros(space.layers, W, W, len(space.candidates), dtype=torch.float64)
    res = torch.zeros(space.layers, W, W, dtype=torch.float64)
    syncs = torch.zeros(space.layers, W, dtype=torch.float64)
    for l, s in enumerate(shapes):
        ins = space.in_widths(l)
        for i in range(W):
            in_c = ins[i if len(ins) > 1 else 0]
            for o, out_c in enumerate(space.layer_widths(l)):
                for n, (op, k) in enumerate(space.candidates):
                    ops[l, i, o, n] = block_cost(op, in_c, out_c, k, s.stride, s.h, s.w)[m]
                # What residual adds to a block (its projection, if any, and the add): the same for
                # every op, and block_cost's, the cost's one owner.
                op, k = space.candidates[0]
                res[l, i, o] = (block_cost(op, in_c, out_c, k, s.stride, s.h, s.w, residual=True)[m]
                                - block_cost(op, in_c, out_c, k, s.stride, s.h, s.w)[m])
        for o, out_c in enumerate(space.layer_widths(l)):
            syncs[l, o] = merge_cost(space.merge, space.paths, out_c, s.oh, s.ow)[m]
    return CostTable(ops, syncs, space.paths, res if space.residual != "none" else None)


def _width_pairs(table: CostTable, width_probs: torch.Tensor | None) -> torch.Tensor:
    """(L, W, W): P(in width i) * P(out width o) per layer; layer 0's input is the stem's."""
    return _pairs(*table.sync_flops.shape, width_probs, "cost table")


def loss_ops(op_probs: torch.Tensor, table: CostTable, res_probs: torch.Tensor | None = None,
             width_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Norm(sum_l sum_p [sum_n P_op(l,p,n) E_w[C(l,n)] + P_res(l,p) E_w[C_res(l)]]) (eq. 6,
    with the residual projection/add and widths): E_w the expectation over (in, out) width
    pairs, P(w_in) P(w_out). res_probs (L, P), needed when the table has residual costs."""
    pair = _width_pairs(table, width_probs)  # (L, W, W)
    per_op = (pair[..., None] * table.op_flops).sum((1, 2))  # (L, n)
    expected = (op_probs.double() * per_op[:, None, :]).sum()
    if table.res_flops is not None:
        if res_probs is None:
            raise ValueError("res_probs: the cost table has residual costs; pass the (L, P) P_res")
        expected = expected + (res_probs.double() * (pair * table.res_flops).sum((1, 2))[:, None]).sum()
    return (expected / table.max_ops).float()


def loss_sync(sync_probs: torch.Tensor, table: CostTable, width_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Norm(sum_l P_sync(l) * E_w[C_sync(l)]) (eq. 11); sync_probs (L, 2) = [sync, direct]."""
    if table.max_sync == 0:
        return sync_probs.new_zeros(())
    out = _width_pairs(table, width_probs).sum(1)  # (L, W): P(out width)
    expected = (out * table.sync_flops).sum(-1)
    return ((sync_probs[:, 0].double() * expected).sum() / table.max_sync).float()


def fixed_macs(space: SearchSpace) -> int:
    """MACs every plan of the bound space has whatever its choices: the stem, and the head
    (at the last layer's widest width: an upper bound where widths are searched)."""
    assert space.input is not None and space.classes is not None
    c, h, w = space.input
    stem = space.stem_block
    macs = block_cost(stem.op, c, stem.out, stem.kernel, 1, h, w)[0] if stem else 0
    width = space.paths * space.max_channels[-1]
    for n in (*space.hidden, space.classes):
        macs, width = macs + fc_cost(width, n)[0], n
    return macs


def expected_macs(op_probs: torch.Tensor, sync_probs: torch.Tensor, table: CostTable, fixed: float,
                  res_probs: torch.Tensor | None = None, width_probs: torch.Tensor | None = None) -> torch.Tensor:
    """The plan's expected MACs under the choices' probabilities (table: flop_table(space,
    "macs"), fixed: fixed_macs(space)): what the MAC budget penalty reads."""
    return (fixed + loss_ops(op_probs, table, res_probs, width_probs).double() * table.max_ops
            + loss_sync(sync_probs, table, width_probs).double() * table.max_sync)


def total_loss(ce: torch.Tensor, l_ops: torch.Tensor, l_sync: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """alpha * CE + beta * (loss_ops + loss_sync) (eq. 12)."""
    return alpha * ce + beta * (l_ops + l_sync)


# -- latency (issue: latency-aware search on the target) --------------------------

@dataclass(frozen=True)
class LatencyTerms:
    """A measured lookup table (nasrt profile) as tensors for one bound space, each entry
    scaled to a plain median of many calls (lut.median_factor), by the (input, output)
    width pair as CostTable (W = 1 without width choices).
    op_us (L, W, W, n_ops) single-thread op latency; sync_us (L, W) merge + barrier with
    `threads` threads; res_us (L, W, W) a residual block's shortcut and add (None: the
    space has no residual blocks); fixed = stem + head + call overhead."""
    op_us: torch.Tensor
    sync_us: torch.Tensor
    fixed_us: float
    threads: int
    paths: int
    res_us: torch.Tensor | None = None
    residual: str = "none"  # the space's mode: "all" needs no res_probs
    widest: int = 0         # the index of the largest width


def latency_table(space: SearchSpace, lut: LatencyTable) -> LatencyTerms:
    """The table's entries for this space as tensors (ModelError if the table is of another
    space, or lacks the width or residual entries the space needs)."""
    lut.check_layers(space.layer_shapes(), "space")
    t = lut.threads
    f = lut.median_factor  # in the plain median's units, as predict_latency and the budget
    L, W = space.layers, len(space.widths)
    ops = torch.zeros(L, W, W, len(space.candidates), dtype=torch.float64)
    res = torch.zeros(L, W, W, dtype=torch.float64)
    sync = torch.zeros(L, W, dtype=torch.float64)
    for l in range(L):
        ins, outs = space.in_widths(l), space.layer_widths(l)
        for i in range(W):
            in_c = ins[i if len(ins) > 1 else 0]
            for o, out_c in enumerate(outs):
                for n, c in enumerate(space.candidates):
                    ops[l, i, o, n] = lut.op_at(l, candidate_name(*c), in_c, out_c)
                if space.residual != "none":
                    res[l, i, o] = lut.shortcut(l, in_c, out_c)
        for o, out_c in enumerate(outs):
            sync[l, o] = lut.sync_at(space.merge, t, l, out_c)
    fixed = lut.overhead_us[t] + lut.head_us + (lut.stem_us[t] if space.stem_kernel else 0.0)
    return LatencyTerms(f * ops, f * sync, f * float(fixed), t, space.paths,
                        f * res if space.residual != "none" else None, space.residual,
                        space.widths.index(max(space.widths)))


def smooth_max(x: torch.Tensor, tau: float) -> torch.Tensor:
    """tau * logsumexp(x / tau): >= max(x), and -> max(x) as tau -> 0."""
    return tau * torch.logsumexp(x / tau, dim=-1)


def _pairs(L: int, W: int, width_probs: torch.Tensor | None, what: str = "latency table") -> torch.Tensor:
    """(L, W, W): P(in width i) * P(out width o) per layer of a table of W widths; layer 0's
    input is the stem's (every input width of layer 0 costs the same: any distribution)."""
    if width_probs is None:
        if W != 1:
            raise ValueError(f"width_probs: the {what} has {W} widths; pass the (L, {W}) width probabilities")
        width_probs = torch.ones(L, 1, dtype=torch.float64)
    out = width_probs.double()
    first = torch.zeros(1, W, dtype=torch.float64)
    first[0, 0] = 1.0
    return torch.cat([first, out[:-1]], 0)[:, :, None] * out[:, None, :]


def expected_latency(op_probs: torch.Tensor, sync_probs: torch.Tensor, table: LatencyTerms,
                     tau: float = 2.0, res_probs: torch.Tensor | None = None,
                     width_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable latency (us) on table.threads threads: per layer each path
    adds its expected op latency (and P_res times its shortcut's, over the width
    pairs); a sync point (with probability P_sync) closes the segment, costing the
    smooth max over threads plus the expected sync cost at the layer's width."""
    L, W = table.sync_us.shape
    pair = _pairs(L, W, width_probs)
    per_path = (op_probs.double() * (pair[..., None] * table.op_us).sum((1, 2))[:, None, :]).sum(-1)  # (L, P)
    if table.res_us is not None:
        if res_probs is None:
            if table.residual != "all":
                raise ValueError("res_probs: the latency table has residual costs; pass the (L, P) P_res")
            res_probs = torch.ones_like(per_path)
        per_path = per_path + res_probs.double() * (pair * table.res_us).sum((1, 2))[:, None]
    sync_us = (pair.sum(1) * table.sync_us).sum(-1)  # (L,)
    T = table.threads
    acc = per_path.new_zeros(T)
    total = per_path.new_tensor(table.fixed_us)
    for l in range(per_path.shape[0]):
        # thread t runs paths t, t+T, ... (round-robin, as the runtime)
        acc = acc + torch.stack([per_path[l, t::T].sum() for t in range(T)])
        s = sync_probs[l, 0].double()
        total = total + s * (smooth_max(acc, tau) + sync_us[l])
        acc = (1 - s) * acc
    return total + smooth_max(acc, tau)


def max_latency(table: LatencyTerms) -> float:
    """Norm of the latency loss: every block at its slowest op at the widest widths (and
    residual where the space offers it), every sync kept."""
    L, W = table.sync_us.shape
    n = table.op_us.shape[-1]
    widths = torch.zeros(L, W, dtype=torch.float64)
    widths[:, table.widest] = 1.0
    slow = (_pairs(L, W, widths)[..., None] * table.op_us).sum((1, 2))  # (L, n)
    worst = torch.zeros(L, table.paths, n, dtype=torch.float64)
    worst.scatter_(2, slow.argmax(-1)[:, None, None].expand(L, table.paths, 1), 1.0)
    res = torch.ones(L, table.paths, dtype=torch.float64) if table.res_us is not None else None
    keep = torch.tensor([[1.0, 0.0]] * L, dtype=torch.float64)
    none = torch.tensor([[0.0, 1.0]] * L, dtype=torch.float64)
    return max(float(expected_latency(worst, keep, table, 1e-3, res, widths)),
               float(expected_latency(worst, none, table, 1e-3, res, widths)))


def loss_latency(op_probs: torch.Tensor, sync_probs: torch.Tensor, table: LatencyTerms, tau: float = 2.0,
                 res_probs: torch.Tensor | None = None, width_probs: torch.Tensor | None = None) -> torch.Tensor:
    return (expected_latency(op_probs, sync_probs, table, tau, res_probs, width_probs) / max_latency(table)).float()


def budget_penalty(expected: torch.Tensor, budget: float) -> torch.Tensor:
    """Grows linearly (in units of the budget) once the expected latency (or MACs) exceeds it."""
    return torch.relu(expected - budget).float() / budget
