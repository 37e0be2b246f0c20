"""The latency of the runtime's own compiled schedule, predicted from a
measured table (the schedule comes from the compiled core's compile/balance
step, _core.schedule: no buffers, no kernels)."""
from __future__ import annotations

import numpy as np

from nasrt import _core
from nasrt.contract.latency import check_plan, statistic_factor
from nasrt.contract.lowering import expected_tensors
from nasrt.contract.lut import LatencyTable
from nasrt.contract.ops import lower_block, shortcut_unit
from nasrt.contract.plan import Plan
from nasrt.errors import ModelError
from nasrt.runtime.runtime import lower_to_netspec


def predict_schedule_latency(plan: Plan, lut: LatencyTable, threads: int, balance: bool = True,
                             statistic: str = "median") -> float:
    """Predicted latency of the runtime's own compiled schedule (by default the
    balanced one that Runtime runs): per phase, the slowest thread's ops (a
    split op costs its share of rows), plus a barrier per phase beyond the
    first, the head and the call's fixed cost, scaled to `statistic` as
    predict_latency does (default: the plain median of many calls). Reads the
    schedule from the runtime's own compile/balance step (no buffers, no kernels)."""

    check_plan(plan, lut)
    lut.check_threads(threads)
    factor = statistic_factor(lut, statistic)
    if threads not in lut.barrier_us:
        raise ModelError(f"latency table has no {threads}-thread barrier cost: profile again with this nasrt "
                         f"and --threads {threads}")
    tensors = {k: np.zeros(shape, np.float32) for k, shape in expected_tensors(plan).items()}
    n_stem = len(lower_block(plan.stem.op, plan.input[0], plan.stem.out, plan.stem.kernel,
                             plan.stem.stride)) if plan.stem else 1

    shapes = plan.layer_shapes()  # a block's channels pick the table's width entries

    def cost(op: dict) -> float:
        frac = op["rows"] / op["total_rows"]
        if op["kind"] == "stem":
            return frac * lut.stem_us[1] / n_stem
        if op["kind"] == "merge":
            sync = plan.sync_after(op["layer"])
            assert sync is not None  # the schedule merges only at the plan's syncs
            return frac * lut.sync_at(sync.merge, 1, op["layer"], shapes[op["layer"]].out_c)
        block = plan.paths[op["path"]][op["layer"]]
        in_c = shapes[op["layer"]].in_c
        if op["kind"] in ("shortcut", "add"):
            # The table's shortcut entry is a residual block minus the plain one: projection and
            # add together. The projection's op carries it; an identity's add alone does.
            has_projection = shortcut_unit(in_c, block.out, block.stride) is not None
            if (op["kind"] == "shortcut") == has_projection:
                return frac * lut.shortcut(op["layer"], in_c, block.out)
            return 0.0
        units = lut.units_at(op["layer"], block.candidate, in_c, block.out)
        # The chain alone: a residual block's shortcut entry is its shortcut/add op's.
        return frac * (units[op["conv"]] if units else lut.op_at(op["layer"], block.candidate, in_c, block.out))

    phases = _core.schedule(lower_to_netspec(plan, tensors), threads, balance)
    total = lut.overhead_us[threads] + lut.head_us + (len(phases) - 1) * lut.barrier_us[threads]
    for phase in phases:
        per_thread = [0.0] * threads
        for s, ops in enumerate(phase):
            per_thread[s % threads] += sum(cost(op) for op in ops)
        total += max(per_thread)
    return factor * total
