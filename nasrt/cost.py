"""The search's cost terms (paper eq. 6-12): exact FLOPs of every candidate at its
real shape, expected under the decision variables' softmax, normalised to [0, 1]."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nasrt.ops import block_cost, merge_cost
from nasrt.space import SearchSpace


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


def layer_shapes(space: SearchSpace) -> list[tuple[int, int, int, int, int, int]]:
    """(in_c, h, w, out_c, oh, ow) per layer."""
    c, h, w = space.input
    if space.stem_kernel is not None:
        c = space.stem_out  # stride-1 'same' stem keeps h, w
    shapes = []
    for out, s in zip(space.channels, space.strides):
        oh, ow = (h - 1) // s + 1, (w - 1) // s + 1  # odd k, padding k // 2
        shapes.append((c, h, w, out, oh, ow))
        c, h, w = out, oh, ow
    return shapes


def flop_table(space: SearchSpace) -> CostTable:
    ops, syncs = [], []
    for (in_c, h, w, out, oh, ow), stride in zip(layer_shapes(space), space.strides):
        ops.append([block_cost(op, in_c, out, k, stride, h, w)[1] for op, k in space.candidates])
        syncs.append(merge_cost(space.merge, space.paths, out, oh, ow)[1])
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
