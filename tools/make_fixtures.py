"""Writes tests/data/: a tiny model (2 paths, conv1x1 and sum syncs, sepconv),
an input and its logits from the Python runtime (reference kernels), used by
the native tests, the examples and the aarch64 cross check.

    python tools/make_fixtures.py
"""
from pathlib import Path

import numpy as np

import nasrt
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.runtime.bench import write_random_model

OUT = Path(__file__).resolve().parent.parent / "tests" / "data"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    plan = Plan((3, 16, 16), 10, Block("conv", 3, 1, 8), (
        (Block("conv", 5, 1, 8), Block("sepconv", 3, 2, 16), Block("conv", 3, 2, 16)),
        (Block("conv", 3, 1, 8), Block("conv", 3, 2, 16), Block("sepconv", 5, 2, 16))),
        (Sync(0, "conv1x1"), Sync(2, "sum")), (32,))
    write_random_model(plan, OUT / "tiny.nasrt", seed=1)
    x = np.random.default_rng(1).standard_normal((1, *plan.input)).astype(np.float32)
    x.tofile(OUT / "tiny_input.bin")
    nasrt.Runtime(OUT / "tiny.nasrt", threads=1, backend="reference").run(x).tofile(OUT / "tiny_logits.bin")


if __name__ == "__main__":
    main()
