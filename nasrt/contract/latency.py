"""The latency model of a plan on 1 or N threads, from a measured table: the
critical path between sync points (what the search optimises) and the
runtime's own balanced schedule (what Runtime runs)."""
from __future__ import annotations

from nasrt.contract.lut import LatencyTable
from nasrt.contract.plan import Block, Plan


def check_plan(plan: Plan, lut: LatencyTable) -> None:
    lut.check_layers(plan.layer_shapes())


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
    check_plan(plan, lut)
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


def _segment(path_us: list[float], threads: int) -> float:
    per_thread = [sum(path_us[t::threads]) for t in range(threads)]
    return max(per_thread)
