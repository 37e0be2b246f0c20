"""Search and training settings: plain dataclasses without torch, so the CLI
(and the runtime-side commands on a board without torch) can read their defaults."""
from __future__ import annotations

from dataclasses import dataclass

PRESETS = ("default", "paper")
# The search strategies, the names of nasrt.search.strategies.REGISTRY (which imports torch).
STRATEGIES = ("gradient", "flash")


@dataclass
class SearchConfig:
    epochs: int = 4              # measured: the choices settle in 3-4 epochs on Fashion-MNIST
    batch_size: int = 256
    alpha: float = 0.28          # paper eq. 12
    beta: float = 0.01           # paper eq. 12 (its middle setting)
    preset: str = "default"      # "paper": plain SGD, lr 1e-4 weights / 0.1 decision variables
    w_lr: float | None = None    # None: the preset's
    arch_lr: float | None = None
    seed: int = 0
    gumbel: bool = False         # Gumbel-softmax sampling (E-DNAS eq. 15) instead of softmax
    feedback: bool = False       # E-DNAS feedback block: mix the paths' meta-kernels after every step
    tau0: float = 5.0            # Gumbel temperature at epoch 0 ...
    tau_decay: float = 0.045     # ... times exp(-tau_decay * epoch)
    train_limit: int | None = None  # search on the first N training images only
    cost: str = "flops"          # "flops" (paper eq. 6-11) or "latency" (a measured table, --lut)
    lut: str | None = None       # latency table from `nasrt profile`
    budget_us: float | None = None  # the derived plan's predicted latency must not exceed this
    budget_macs: float | None = None  # the derived plan's MACs must not exceed this
    lse_tau: float = 2.0         # temperature (us) of the smooth max over paths
    budget_weight: float = 10.0  # weight of the over-budget penalty

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset: must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        if self.alpha < 0 or self.beta < 0:
            raise ValueError("alpha and beta must be >= 0")
        if self.cost not in ("flops", "latency"):
            raise ValueError(f"cost: must be flops or latency, got {self.cost!r}")
        if (self.cost == "latency" or self.budget_us is not None) and not self.lut:
            raise ValueError("lut: --cost latency and --budget-us need a latency table (nasrt profile --out lut.json)")
        if self.budget_us is not None and self.budget_us <= 0:
            raise ValueError("budget_us: must be > 0")
        if self.budget_macs is not None and self.budget_macs <= 0:
            raise ValueError("budget_macs: must be > 0")


PRECISIONS = ("fp32", "bf16", "auto")
# TrainConfig fields that change only the speed of retraining, never its result: a checkpoint
# written with other values of them resumes.
SPEED_ONLY = ("compile", "loader_thread")


@dataclass
class TrainConfig:
    epochs: int = 15          # measured: Fashion-MNIST test accuracy levels off by ~15 epochs of cosine SGD
    batch_size: int = 128
    lr: float = 0.05          # SGD momentum 0.9 (nesterov), cosine to 0
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    erasing: float = 0.0      # probability of random erasing per image
    seed: int = 0
    # Speed options, off by default until measured on a quiet machine (docs/EXPERIMENTS.md,
    # "Training throughput on 2 CPU cores"):
    precision: str = "fp32"   # "bf16": autocast, fp32 master weights; "auto": bf16 where the CPU has it natively
    compile: bool = False     # torch.compile the training forward/backward (compiles once per run)
    loader_thread: bool = False  # batches and augmentation in a background thread (bitwise the same result)

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
        if not 0 <= self.erasing <= 1:
            raise ValueError("erasing: must be a probability in [0, 1]")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
