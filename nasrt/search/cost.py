"""The search's cost terms (paper eq. 6-12): exact FLOPs of every candidate at its
real shape, expected under the decision variables' softmax, normalised to [0, 1]."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nasrt.contract.lut import LatencyTable
from nasrt.contract.ops import block_cost, candidate_name, merge_cost
from nasrt.contract.space import SearchSpace


@dataclass(frozen=True)
class CostTable:
    """op_flops (L, n_ops): FLOPs of each candidate at layer l (the same on every
    path); sync_flops (L,): FLOPs of the merge after layer l."""
    op_flops: torch.Tensor
    sync_flops: torch.Tensor
    paths: int

    @property
    def max_ops(self) -> float:
        """Norm of loss_ops: every block at its most expensive choice."""
        return float(self.op_flops.max(-1).values.sum()) * self.paths

    @property
    def max_sync(self) -> float:
        """Norm of loss_sync: every sync point kept."""
        return float(self.sync_flops.sum())


def flop_table(space: SearchSpace) -> CostTable:
    ops, syncs = [], []
    for s in space.layer_shapes():
        ops.append([block_cost(op, s.in_c, s.out_c, k, s.stride, s.h, s.w)[1] for op, k in space.candidates])
        syncs.append(merge_cost(space.merge, space.paths, s.out_c, s.oh, s.ow)[1])
    return CostTable(torch.tensor(ops, dtype=torch.float64), torch.tensor(syncs, dtype=torch.float64), space.paths)


def loss_ops(op_probs: torch.Tensor, table: CostTable) -> torch.Tensor:
    """Norm(sum_l sum_p sum_n P_op(l,p,n) * C(l,n)) (eq. 6)."""
    expected = (op_probs.double() * table.op_flops[:, None, :]).sum()
    return (expected / table.max_ops).float()


def loss_sync(sync_probs: torch.Tensor, table: CostTable) -> torch.Tensor:
    """Norm(sum_l P_sync(l) * C_sync(l)) (eq. 11); sync_probs (L, 2) = [sync, direct]."""
    if table.max_sync == 0:
        return sync_probs.new_zeros(())
    return ((sync_probs[:, 0].double() * table.sync_flops).sum() / table.max_sync).float()


def total_loss(ce: torch.Tensor, l_ops: torch.Tensor, l_sync: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """alpha * CE + beta * (loss_ops + loss_sync) (eq. 12)."""
    return alpha * ce + beta * (l_ops + l_sync)


# -- latency (issue: latency-aware search on the target) --------------------------

@dataclass(frozen=True)
class LatencyTerms:
    """A measured lookup table (nasrt profile) as tensors for one bound space, each entry
    scaled to a plain median of many calls (lut.median_factor).
    op_us (L, n_ops) single-thread op latency; sync_us (L,) merge + barrier with
    `threads` threads; fixed = stem + head + call overhead."""
    op_us: torch.Tensor
    sync_us: torch.Tensor
    fixed_us: float
    threads: int
    paths: int


def latency_table(space: SearchSpace, lut: LatencyTable) -> LatencyTerms:
    """The table's entries for this space as tensors (ModelError if the table is of another space)."""
    lut.check_layers(space.layer_shapes(), "space")
    t = lut.threads
    f = lut.median_factor  # in the plain median's units, as predict_latency and the budget
    ops = f * torch.tensor([[lut.op(l, candidate_name(*c)) for c in space.candidates]
                            for l in range(len(lut.layers))], dtype=torch.float64)
    sync = f * torch.tensor([lut.sync(space.merge, t, l) for l in range(len(lut.layers))], dtype=torch.float64)
    fixed = lut.overhead_us[t] + lut.head_us + (lut.stem_us[t] if space.stem_kernel else 0.0)
    return LatencyTerms(ops, sync, f * float(fixed), t, space.paths)


def smooth_max(x: torch.Tensor, tau: float) -> torch.Tensor:
    """tau * logsumexp(x / tau): >= max(x), and -> max(x) as tau -> 0."""
    return tau * torch.logsumexp(x / tau, dim=-1)


def expected_latency(op_probs: torch.Tensor, sync_probs: torch.Tensor, table: LatencyTerms,
                     tau: float = 2.0) -> torch.Tensor:
    """Differentiable latency (us) on table.threads threads: per layer each path
    adds its expected op latency; a sync point (with probability P_sync) closes
    the segment, costing the smooth max over threads plus the sync cost."""
    per_path = (op_probs.double() * table.op_us[:, None, :]).sum(-1)  # (L, P)
    T = table.threads
    acc = per_path.new_zeros(T)
    total = per_path.new_tensor(table.fixed_us)
    for l in range(per_path.shape[0]):
        # thread t runs paths t, t+T, ... (round-robin, as the runtime)
        acc = acc + torch.stack([per_path[l, t::T].sum() for t in range(T)])
        s = sync_probs[l, 0].double()
        total = total + s * (smooth_max(acc, tau) + table.sync_us[l])
        acc = (1 - s) * acc
    return total + smooth_max(acc, tau)


def max_latency(table: LatencyTerms) -> float:
    """Norm of the latency loss: every block at its slowest op, every sync kept."""
    L, n = table.op_us.shape
    worst = torch.zeros(L, table.paths, n, dtype=torch.float64)
    worst.scatter_(2, table.op_us.argmax(-1)[:, None, None].expand(L, table.paths, 1), 1.0)
    keep = torch.tensor([[1.0, 0.0]] * L, dtype=torch.float64)
    none = torch.tensor([[0.0, 1.0]] * L, dtype=torch.float64)
    return max(float(expected_latency(worst, keep, table, 1e-3)), float(expected_latency(worst, none, table, 1e-3)))


def loss_latency(op_probs: torch.Tensor, sync_probs: torch.Tensor, table: LatencyTerms, tau: float = 2.0) -> torch.Tensor:
    return (expected_latency(op_probs, sync_probs, table, tau) / max_latency(table)).float()


def budget_penalty(latency_us: torch.Tensor, budget_us: float) -> torch.Tensor:
    """Grows linearly (in units of the budget) once the expected latency exceeds it."""
    return torch.relu(latency_us - budget_us).float() / budget_us
