"""E-DNAS meta-kernels (eq. 1-2, 7-13) and its feedback block (section III-A2).

A meta-kernel candidate offers plain convs of sizes 3, 5, ..., K. Convolution is
linear in its kernel, so the size mixture sum_i p_i * conv(x, K_i) equals one
conv with the merged kernel K = sum_i p_i * pad(K_i), each K_i centred in K x K:
the SuperNet runs one conv where listing the sizes as separate candidates runs
all of them. The sizes share the BN and ReLU that follow (which is what makes
the merge possible). Search-only: derive emits the chosen size as a plain conv.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from nasrt.search.net import head_logits


class MetaConv(nn.Module):
    """Kernels of several odd sizes, run as one conv of their merged kernel, then BN + ReLU."""

    def __init__(self, sizes: tuple[int, ...], in_c: int, out_c: int, stride: int):
        super().__init__()
        self.sizes, self.stride = tuple(sizes), stride
        self.kernels = nn.ParameterList()
        for k in self.sizes:
            w = torch.empty(out_c, in_c, k, k)
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Conv2d's default init, per size
            self.kernels.append(nn.Parameter(w))
        self.bn = nn.BatchNorm2d(out_c)

    def merged_kernel(self, p: torch.Tensor) -> torch.Tensor:
        """sum_i p_i * pad(K_i): every kernel zero-padded to the largest size, centred."""
        big = max(self.sizes)
        out = None
        for w, k, pi in zip(self.kernels, self.sizes, p):
            term = F.pad(w, [(big - k) // 2] * 4) * pi
            out = term if out is None else out + term
        return out

    def conv(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """The merged conv alone (no BN/ReLU): equals sum_i p_i * conv(x, K_i)."""
        return F.conv2d(x, self.merged_kernel(p), stride=self.stride, padding=max(self.sizes) // 2)

    def preact(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """BN of the merged conv, before the ReLU (what a residual block adds its shortcut to)."""
        return self.bn(self.conv(x, p))

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.preact(x, p))


# -- feedback block -------------------------------------------------------------------

def feedback_coefficients(path_losses: torch.Tensor) -> torch.Tensor:
    """b_i = tanh(1 / L_i) / sum_j tanh(1 / L_j): a lower loss gets a larger share."""
    t = torch.tanh(1.0 / path_losses.clamp_min(1e-6))
    return t / t.sum()


def path_losses(pooled: list[torch.Tensor], head: nn.ModuleList, y: torch.Tensor) -> torch.Tensor:
    """The loss of each path in the joint net: the cross-entropy of the head when it
    sees that path's pooled features alone (every other path's slot zeroed)."""

    losses = []
    for p in range(len(pooled)):
        alone = [f if q == p else torch.zeros_like(f) for q, f in enumerate(pooled)]
        losses.append(F.cross_entropy(head_logits(torch.cat(alone, dim=1), head), y))
    return torch.stack(losses)


@torch.no_grad()
def feedback_mix(metas_per_path: list[list[MetaConv]], b: torch.Tensor) -> None:
    """K_p' = sum_q b_q * K_q for every path p, size by size, for each layer's meta-kernels
    (metas_per_path[layer][path]): afterwards the paths hold the same kernels."""
    for metas in metas_per_path:
        for size_idx in range(len(metas[0].sizes)):
            mixed = sum(bq * m.kernels[size_idx] for bq, m in zip(b, metas))
            for m in metas:
                m.kernels[size_idx].copy_(mixed)
