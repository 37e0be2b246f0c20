"""Test helpers: random plans, torch nets with random BN statistics, exported models."""
from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import numpy as np

from nasrt.contract.ops import BLOCK_OPS, MERGES, STEM_OPS
from nasrt.contract.plan import Block, Plan, Sync


def random_plan(rng: random.Random, max_paths: int = 4, max_layers: int = 5, residual: bool = True) -> Plan:
    """A random valid plan over the whole vocabulary (ops.BLOCK_OPS, STEM_OPS, MERGES, residual
    blocks): a new op is covered by every equivalence test by being added there. ``residual``:
    blocks are residual with probability 1/2 (per path; equal channels and stride 1 are
    frequent, so identity shortcuts are too)."""
    P, L = rng.randint(1, max_paths), rng.randint(1, max_layers)
    in_c, size = rng.choice([1, 3, 4]), rng.choice([7, 8, 12, 16])
    stem_op = rng.choice(STEM_OPS)
    stem_out = in_c * rng.choice([1, 2, 3]) if stem_op == "dwconv" else rng.choice([3, 8, 12])
    stem = Block(stem_op, rng.choice([1, 3, 5, 7, 11]), rng.choice([1, 2]), stem_out) if rng.random() < 0.6 else None
    chans = [rng.choice([2, 5, 8, 16, 24]) for _ in range(L)]
    strides = [rng.choice([1, 2]) for _ in range(L)]
    if residual:  # repeated widths and stride 1 give identity shortcuts
        chans = [c if l == 0 or rng.random() < 0.5 else chans[l - 1] for l, c in enumerate(chans)]
    paths = tuple(tuple(Block(rng.choice(BLOCK_OPS), rng.choice([1, 3, 5, 7]), s, c,
                              residual and rng.random() < 0.5)
                        for c, s in zip(chans, strides)) for _ in range(P))
    syncs = tuple(Sync(l, rng.choice(MERGES)) for l in range(L) if rng.random() < 0.4)
    hidden = rng.choice([(), (16,), (32, 12)])
    return Plan((in_c, size, size), rng.choice([2, 5, 10]), stem, paths, syncs, hidden)


def randomize_bn(net, seed: int) -> None:
    """Random BN statistics and affine parameters, so folding is really tested."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)


def export_random(plan: Plan, tmp_path, seed: int = 0, onnx: bool = False):
    """build_net(plan) with random weights and BN stats, exported; returns (net, path, onnx_path)."""
    import torch

    import nasrt.search

    torch.manual_seed(seed)
    net = nasrt.search.build_net(plan)
    randomize_bn(net, seed)
    net.eval()
    path = tmp_path / f"model{seed}.nasrt"
    onnx_path = tmp_path / f"model{seed}.onnx" if onnx else None
    nasrt.search.export_model(net, path, onnx=onnx_path)
    return net, path, onnx_path


def sample_input(plan: Plan, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *plan.input)).astype(np.float32)


def run_py(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Python code in a fresh interpreter, outside the checkout (its nasrt/ has no compiled core)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd="/")


def host_vnni() -> bool:
    """Whether this CPU has VNNI (avx512_vnni / avx_vnni): oneDNN's int8 convs take full 8-bit
    weights only there (else |w| <= 64, docs/DESIGN.md)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def ort_exact_weight_bits() -> int:
    """The weight bits at which ONNX Runtime's int8 convs compute exactly (the oracle's codes)
    on this host: 8, except on an x86 CPU without VNNI, where MLAS's u8s8 kernels add pairs of
    u8 x s8 products in int16 (vpmaddubsw), which saturates for 8-bit weights (measured on
    Zen 3, AVX2: up to 10% of the logits' scale off). 7-bit weights keep every pair sum within
    int16 (255 * 64 * 2 < 2^15): what ORT's own reduce_range is for."""
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return 8
    return 8 if host_vnni() else 7
