"""Writes tests/data/: a tiny model (2 paths, conv1x1 and sum syncs, sepconv),
an input and its logits from the Python runtime (reference kernels), used by
the native tests, the examples and the aarch64 cross check; and its int8 model
(format 3, calibrated on random images), a seed of the model fuzzer and the int8
board check: INT8_INPUTS inputs and their logits from the Python runtime on the
reference kernels (the x86 logits the aarch64 build under qemu is compared with);
the manifest of a profile kit of a tiny space, the seed of the kit fuzzer.

    python tools/make_fixtures.py
"""
from dataclasses import replace
from pathlib import Path

import numpy as np

import nasrt
from nasrt._io import atomic_write_json
from nasrt.contract.modelfile import read_model
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.contract.space import SearchSpace
from nasrt.quant import calibrate, default_fp32, write_int8_model
from nasrt.runtime.bench import write_random_model
from nasrt.runtime.profile import build_kit

OUT = Path(__file__).resolve().parent.parent / "tests" / "data"
INT8_INPUTS = 8


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
    _, tensors, meta = read_model(OUT / "tiny.nasrt")
    calib = np.random.default_rng(2).standard_normal((32, *plan.input)).astype(np.float32)
    # fp32_choice recorded, as `nasrt quantize` does: the fuzzer mutates that field too.
    qp = replace(calibrate(plan, tensors, calib, "numpy-minmax", fp32=default_fp32(plan)), fp32_choice={"rule": "default"})
    write_int8_model(OUT / "fuzz" / "tiny.int8.nasrt", plan, tensors, qp, meta)
    xq = np.random.default_rng(3).standard_normal((INT8_INPUTS, *plan.input)).astype(np.float32)
    xq.tofile(OUT / "tiny_int8_inputs.bin")
    rt = nasrt.Runtime(OUT / "fuzz" / "tiny.int8.nasrt", threads=1, backend="reference")
    rt.run(xq).tofile(OUT / "tiny_int8_logits.bin")
    space = SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), ops=("conv3x3", "sepconv3x3"), merge="sum",
                        stem_kernel=3, stem_out=4, hidden=(8,)).bind((1, 8, 8), 3)
    atomic_write_json(OUT / "fuzz" / "kit.json", build_kit(space, "fp32", threads=2, runs=4, rounds=2, warmup=1,
                                                           span_s=0.0).manifest)


if __name__ == "__main__":
    main()
