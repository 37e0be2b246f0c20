"""The latency model of a plan on 1 or N threads, from a measured table: the
critical path between sync points (what the search optimises) and the
runtime's own balanced schedule (what Runtime runs)."""
from __future__ import annotations

import numpy as np

from nasrt.errors import ModelError
from nasrt.lut import LatencyTable
from nasrt.ops import lower_block
from nasrt.plan import Block, Plan


def _check_plan(plan: Plan, lut: LatencyTable) -> None:
    lut.check_layers([(s.in_c, s.h, s.w, s.out_c) for s in plan.layer_shapes()])


def op_latency(lut: LatencyTable, layer: int, block: Block) -> float:
    """One block's single-thread latency (us) from the table."""
    return lut.op(layer, block.candidate)


def predict_latency(plan: Plan, lut: LatencyTable, threads: int) -> float:
    """Predicted Runtime.run latency (us, batch 1) of plan with `threads` threads.

    threads = 1: the plain sum of every op, merge, stem and head. threads = T > 1:
    for every segment between kept sync points, the slowest thread's sum (thread t
    runs paths t, t+T, ...), plus each sync's cost (merge + barrier), the split
    stem, the head, and the call's fixed cost. (The runtime's balancing can beat
    the critical path on unbalanced segments; this models balance=False.)
    """
    _check_plan(plan, lut)
    lut.check_threads(threads)
    P = plan.num_paths
    total = lut.overhead_us[threads] + lut.head_us + (lut.stem_us[threads] if plan.stem else 0.0)
    seg = [0.0] * P
    for l in range(plan.num_layers):
        for p in range(P):
            seg[p] += op_latency(lut, l, plan.paths[p][l])
        sync = plan.sync_after(l)
        if sync:
            total += _segment(seg, threads) + lut.sync(sync.merge, threads, l)
            seg = [0.0] * P
    return total + _segment(seg, threads)


def predict_schedule_latency(plan: Plan, lut: LatencyTable, threads: int, balance: bool = True) -> float:
    """Predicted latency of the runtime's own compiled schedule (by default the
    balanced one that Runtime runs): per phase, the slowest thread's ops (a
    split op costs its share of rows), plus a barrier per phase beyond the
    first, the head and the call's fixed cost. Reads the schedule from the
    executor's own compile/balance step (no kernels, no threads)."""
    from nasrt import _core
    from nasrt.lowering import expected_tensors
    from nasrt.runtime import default_backend, lower_to_netspec

    _check_plan(plan, lut)
    lut.check_threads(threads)
    if threads not in lut.barrier_us:
        raise ModelError(f"latency table has no {threads}-thread barrier cost: profile again with this nasrt "
                         f"and --threads {threads}")
    tensors = {k: np.zeros(shape, np.float32) for k, shape in expected_tensors(plan).items()}
    ex = _core.Executor(lower_to_netspec(plan, tensors), threads, [], default_backend(), balance=balance,
                        schedule_only=True)
    n_stem = len(lower_block(plan.stem.op, plan.input[0], plan.stem.out, plan.stem.kernel,
                             plan.stem.stride)) if plan.stem else 1

    def cost(op: dict) -> float:
        frac = op["rows"] / op["total_rows"]
        if op["kind"] == "stem":
            return frac * lut.stem_us[1] / n_stem
        if op["kind"] == "merge":
            return frac * lut.sync(plan.sync_after(op["layer"]).merge, 1, op["layer"])
        block = plan.paths[op["path"]][op["layer"]]
        units = lut.units(op["layer"], block.candidate)
        return frac * (units[op["conv"]] if units else op_latency(lut, op["layer"], block))

    phases = ex.schedule()
    total = lut.overhead_us[threads] + lut.head_us + (len(phases) - 1) * lut.barrier_us[threads]
    for phase in phases:
        per_thread = [0.0] * threads
        for s, ops in enumerate(phase):
            per_thread[s % threads] += sum(cost(op) for op in ops)
        total += max(per_thread)
    return total


def _segment(path_us: list[float], threads: int) -> float:
    per_thread = [sum(path_us[t::threads]) for t in range(threads)]
    return max(per_thread)
