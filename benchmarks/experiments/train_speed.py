"""Retraining throughput of the speed options (TrainConfig.precision / compile / loader_thread), in one process.

    python benchmarks/experiments/train_speed.py docs/default_plan.json --dataset fashion-mnist \
        --steps 20 --rounds 5 --out runs/train_speed
    python benchmarks/experiments/train_speed.py docs/results/int8_runtime/cifar10_12m_plan.json \
        --steps 10 --rounds 5 --out runs/train_speed_cifar        # synthetic data of the plan's shape

Every configuration gets its own net and optimizer (the same seed) and trains `--steps` steps per
round on the retraining step (training.TrainStep) and batches (training.batches, optionally through
training.prefetched); the configurations take turns in every round, so a load that comes and goes
hits them alike. Prints images/s per configuration (min and median over rounds) and the ratio of
medians to the baseline (fp32), and writes OUT/train_speed.json with the host's CPU, its ISA flags,
torch's view of them and the load average before and after (a loaded machine contaminates the numbers).

Before timing, a correctness check: the same net and seed trained `--check-steps` steps per fp32
option must give the baseline's loss trajectory (the loader thread bitwise, compile within float
tolerance); bf16 changes the numerics and is reported, not checked. Configuration "nchw" trains in
the contiguous memory format instead of channels_last (a profile finding: BatchNorm over few
channels is slower channels_last on CPU).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nasrt._io import atomic_write_json
from nasrt.contract.plan import Plan
from nasrt.data.builtin import DATASETS, load_dataset
from nasrt.data.dataset import Dataset
from nasrt.search.net import build_net
from nasrt.search.training import TrainStep, batches, bf16_hardware, prefetched, seed_epoch, set_threads

# name -> (precision, compile, loader thread, channels_last)
CONFIGS = {
    "fp32": ("fp32", False, False, True),
    "fp32+loader": ("fp32", False, True, True),
    "fp32+compile": ("fp32", True, False, True),
    "bf16": ("bf16", False, False, True),
    "bf16+loader": ("bf16", False, True, True),
    "bf16+compile": ("bf16", True, False, True),
    "nchw": ("fp32", False, False, False),
}
ISA_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def host_info() -> dict:
    model, flags = platform.processor(), set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key.strip() == "model name":
                model = val.strip()
            elif key.strip() == "flags":
                flags = set(val.split())
    return {"cpu": model, "isa": [f for f in ISA_FLAGS if f in flags], "cores": len(os.sched_getaffinity(0)),
            "torch": torch.__version__, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_hardware": bf16_hardware(), "threads": torch.get_num_threads(),
            "loadavg": os.getloadavg()}


def synthetic_like(plan: Plan, n: int) -> Dataset:
    """Random data of the plan's input shape (throughput does not depend on the pixels)."""
    rng = np.random.default_rng(0)
    c, h, w = plan.input
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    y = rng.integers(0, plan.classes, n).astype(np.int64)
    return Dataset("random", x, y, x[:256], y[:256], plan.classes, flip=c == 3)


class Run:
    """One configuration: its net, optimizer, step and an endless supply of batches."""

    def __init__(self, name: str, plan: Plan, ds: Dataset, batch_size: int, seed: int):
        precision, compile, self.loader, self.channels_last = CONFIGS[name]
        self.name, self.ds, self.batch_size, self.seed, self.epoch = name, ds, batch_size, seed, 0
        torch.manual_seed(seed)
        self.net = build_net(plan)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(self.net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10_000)
        self.step = TrainStep(self.net, opt, sched, 0.1, precision=precision, compile=compile)
        self.data = self._epochs()

    def _epochs(self):
        while True:
            it = batches(self.ds, self.batch_size, seed_epoch(self.seed, self.epoch))
            with contextlib.closing(prefetched(it) if self.loader else it) as items:
                for x, y in items:
                    if len(y) == self.batch_size:  # equal work per step
                        yield (x if self.channels_last else x.contiguous()), y
            self.epoch += 1

    def train(self, steps: int) -> tuple[float, list[float]]:
        """Seconds for `steps` steps (the batches included) and their losses."""
        losses = []
        t0 = time.perf_counter()
        for _ in range(steps):
            x, y = next(self.data)
            loss, _ = self.step(x, y)
            losses.append(float(loss))
        return time.perf_counter() - t0, losses

    def close(self):
        self.data.close()


def check(plan, ds, names, batch_size, steps) -> dict:
    """Loss trajectories of `steps` steps from the same init and seed, per configuration, and the
    time of the first step (a compile's cost: on a cold inductor cache, the first compile of the run)."""
    out, first = {}, {}
    for name in names:
        r = Run(name, plan, ds, batch_size, seed=0)
        first[name], out[name] = r.train(1)
        _, more = r.train(steps - 1)
        out[name] += more
        r.close()
    base = np.array(out["fp32"])
    report = {}
    for name, losses in out.items():
        d = float(np.max(np.abs(np.array(losses) - base)))
        report[name] = {"losses": losses, "max_abs_diff": d, "first_step_s": first[name]}
        print(f"check {name:14s} max |loss - fp32| over {steps} steps: {d:.3g} (first step {first[name]:.1f} s)")
    if "fp32+loader" in out and out["fp32+loader"] != out["fp32"]:
        sys.exit("FAIL: the loader thread changed the loss trajectory (it must be bitwise the same)")
    if "fp32+compile" in out and not np.allclose(out["fp32+compile"], base, rtol=1e-3, atol=1e-4):
        sys.exit("FAIL: compile changed the loss trajectory beyond float tolerance")
    return report


def accuracy(plan, ds, seeds: int, epochs: int, out: Path) -> list[dict]:
    """Test accuracy of retrain() in fp32 and bf16 per seed: bf16 changes the numerics."""
    from nasrt.search.config import TrainConfig
    from nasrt.search.train import retrain
    rows = []
    for seed in range(seeds):
        for precision in ("fp32", "bf16"):
            m = retrain(plan, ds, TrainConfig(epochs=epochs, seed=seed, precision=precision),
                        out / f"acc_{precision}_seed{seed}", show_progress=False, log=lambda *a: None)
            rows.append({"seed": seed, "precision": precision, "test_accuracy": m["test_accuracy"],
                         "loss": m["history"][-1]["loss"]})
            print(f"accuracy seed {seed} {precision}: test {m['test_accuracy']:.4f}, "
                  f"last epoch loss {rows[-1]['loss']:.4f}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("plan", type=Path)
    ap.add_argument("--dataset", choices=DATASETS, help="real data (default: random data of the plan's shape)")
    ap.add_argument("--data-dir")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="steps per configuration per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile happens here)")
    ap.add_argument("--check-steps", type=int, default=8, help="steps of the correctness check (0: none)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: the cores we may run on)")
    ap.add_argument("--train-limit", type=int, help="--dataset: the first N training images only")
    ap.add_argument("--accuracy-seeds", type=int, default=0,
                    help="instead of timing: retrain fp32 and bf16 for seeds 0..N-1 (--accuracy-epochs) and "
                         "compare test accuracy (needs --dataset)")
    ap.add_argument("--accuracy-epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    names = args.configs.split(",")
    bad = [n for n in names if n not in CONFIGS]
    if bad or "fp32" not in names:
        sys.exit(f"--configs: unknown {bad[0]!r}" if bad else "--configs: must include the baseline fp32")
    if any(CONFIGS[n][0] == "bf16" for n in names) and not bf16_hardware():
        print("note: this CPU has no native bf16 (AMX / AVX512-BF16): bf16 runs emulated")
    set_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = Plan.load(args.plan)
    ds = (load_dataset(args.dataset, args.data_dir, limit=args.train_limit) if args.dataset
          else synthetic_like(plan, 4096))
    if tuple(plan.input) != ds.input_shape:
        sys.exit(f"plan input {list(plan.input)} does not match the data {list(ds.input_shape)}")
    info = host_info()
    print(f"{info['cpu']}, {info['cores']} cores, ISA {' '.join(info['isa'])}, torch {info['torch']} "
          f"({info['torch_cpu_capability']}), {info['threads']} threads, load {info['loadavg']}")
    if args.accuracy_seeds:
        if not args.dataset:
            sys.exit("--accuracy-seeds: needs --dataset (random data has no accuracy to compare)")
        rows = accuracy(plan, ds, args.accuracy_seeds, args.accuracy_epochs, args.out)
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "train_accuracy.json", {
            "plan": str(args.plan), "dataset": ds.name, "train_images": len(ds.x_train),
            "epochs": args.accuracy_epochs, "host": info, "results": rows})
        print(f"wrote {args.out / 'train_accuracy.json'}")
        return

    checked = {}
    if args.check_steps:
        fp32_like = [n for n in names if CONFIGS[n][0] == "fp32" and CONFIGS[n][3]] + \
                    [n for n in names if CONFIGS[n][0] == "bf16" and not CONFIGS[n][1]]
        checked = check(plan, ds, fp32_like, args.batch_size, args.check_steps)

    runs = {n: Run(n, plan, ds, args.batch_size, seed=0) for n in names}
    warm = {}
    for n, r in runs.items():  # the first steps pay one-time costs: compile, oneDNN primitive creation
        warm[n], _ = r.train(args.warmup)
        print(f"warm-up {n:14s} {warm[n]:.1f} s for {args.warmup} steps")
    ips = {n: [] for n in names}
    for k in range(args.rounds):
        for n, r in runs.items():
            secs, losses = r.train(args.steps)
            if not all(map(math.isfinite, losses)):
                sys.exit(f"FAIL: {n} gave a non-finite loss")
            ips[n].append(args.steps * args.batch_size / secs)
        print(f"round {k + 1}/{args.rounds}: " + ", ".join(f"{n} {ips[n][-1]:.0f}" for n in names), flush=True)
    for r in runs.values():
        r.close()

    base = statistics.median(ips["fp32"])
    rows = []
    print(f"\n{'config':14s} {'img/s min':>10s} {'median':>8s} {'max':>8s} {'ratio':>6s} {'warm-up s':>10s}")
    for n in names:
        med = statistics.median(ips[n])
        rows.append({"config": n, "precision": CONFIGS[n][0], "compile": CONFIGS[n][1], "loader_thread": CONFIGS[n][2],
                     "channels_last": CONFIGS[n][3], "images_per_s": ips[n], "min": min(ips[n]), "median": med,
                     "max": max(ips[n]), "ratio_vs_fp32": med / base, "warmup_s": warm[n]})
        print(f"{n:14s} {min(ips[n]):10.0f} {med:8.0f} {max(ips[n]):8.0f} {med / base:6.2f} {warm[n]:10.1f}")
    info["loadavg_after"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "train_speed.json", {
        "plan": str(args.plan), "dataset": ds.name, "batch_size": args.batch_size, "steps": args.steps,
        "rounds": args.rounds, "warmup": args.warmup, "host": info, "check": checked, "results": rows})
    print(f"wrote {args.out / 'train_speed.json'}")


if __name__ == "__main__":
    main()
