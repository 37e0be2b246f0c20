"""The latency model of a plan on 1 or N threads, from a measured table: the
critical path between sync points (what the search optimises) and the
runtime's own balanced schedule (what Runtime runs)."""
from __future__ import annotations

from nasrt.contract.lut import PRECISIONS, LatencyTable
from nasrt.contract.plan import Block, Plan


def check_plan(plan: Plan, lut: LatencyTable) -> None:
    # channels may be other widths of the table's space (its width entries, looked up per block)
    lut.check_layers(plan.layer_shapes(), widths=True)


def op_latency(lut: LatencyTable, layer: int, block: Block, in_c: int | None = None) -> float:
    """One block's single-thread latency (us) from the table: at in_c -> block.out channels
    (None: the table's own), with a residual block's shortcut and add."""
    if in_c is None:
        in_c = lut.layers[layer].in_c if layer < len(lut.layers) else 0
    us = lut.op_at(layer, block.candidate, in_c, block.out)
    return us + lut.shortcut(layer, in_c, block.out) if block.residual else us


def latency_parts(plan: Plan, lut: LatencyTable, threads: int) -> dict[str, float]:
    """predict_latency's terms (us, the table's statistic): `ops` (the critical path's ops),
    `syncs` (merges and their barriers), `stem`, `head`, `call` (the fixed cost of a call)."""
    check_plan(plan, lut)
    lut.check_threads(threads)
    P = plan.num_paths
    ops = syncs = 0.0
    seg = [0.0] * P
    shapes = plan.layer_shapes()
    for l in range(plan.num_layers):
        for p in range(P):
            seg[p] += op_latency(lut, l, plan.paths[p][l], shapes[l].in_c)
        sync = plan.sync_after(l)
        if sync:
            ops += _segment(seg, threads)
            syncs += lut.sync_at(sync.merge, threads, l, shapes[l].out_c)
            seg = [0.0] * P
    return {"ops": ops + _segment(seg, threads), "syncs": syncs,
            "stem": lut.stem_us[threads] if plan.stem else 0.0, "head": lut.head_us, "call": lut.overhead_us[threads]}


STATISTICS = ("median", "best")


def statistic_factor(lut: LatencyTable, statistic: str) -> float:
    """The factor from the table's statistic (each entry's fastest round) to `statistic`:
    "median", what a user measures (the plain median of many calls: lut.median_factor, the
    same on every thread count), or "best", the table's own."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic: must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    return lut.median_factor if statistic == "median" else 1.0


def predict_latency(plan: Plan, lut: LatencyTable, threads: int, statistic: str = "median") -> float:
    """Predicted Runtime.run latency (us, batch 1) of plan with `threads` threads: by
    default the plain median of many calls, as a user measures it; statistic="best" gives
    the table's statistic (the fastest round of interleaved rounds).

    threads = 1: the plain sum of every op, merge, stem and head. threads = T > 1:
    for every segment between kept sync points, the slowest thread's sum (thread t
    runs paths t, t+T, ...), plus each sync's cost (merge + barrier), the split
    stem, the head, and the call's fixed cost. (The runtime's balancing can beat
    the critical path on unbalanced segments; this models balance=False.) The sum
    is then scaled by statistic_factor.
    """
    factor = statistic_factor(lut, statistic)
    return factor * sum(latency_parts(plan, lut, threads).values())


def _segment(path_us: list[float], threads: int) -> float:
    per_thread = [sum(path_us[t::threads]) for t in range(threads)]
    return max(per_thread)


def table_record(lut: LatencyTable, source: str) -> dict:
    """What a plan searched with `lut` records of it (plan meta `search.latency`): the precision
    its latency was measured in, the table and where it was measured."""
    return {"precision": lut.precision, "table": source, "cpu": str(lut.machine.get("cpu", "")),
            "backend": lut.backend, "threads": lut.threads, "statistic": "median of many calls"}


def searched_precision(plan: Plan) -> str | None:
    """The precision of the latency table `plan` was searched with (meta `search.latency`), None
    for a plan searched without one or written by hand (meta is free-form: anything else is None)."""
    search = plan.meta.get("search")
    latency = search.get("latency") if isinstance(search, dict) else None
    precision = latency.get("precision") if isinstance(latency, dict) else None
    return precision if precision in PRECISIONS else None


def precision_note(searched: str | None, deployed: str, what: str) -> str | None:
    """A one-line note when `what` (a plan or model) searched for `searched` latency is deployed
    in the other precision (a mismatch, not an error: the net runs, at a speed the search did
    not optimise); None when they agree or the search had no latency table."""
    if searched is None or searched == deployed:
        return None
    if deployed == "int8":
        return (f"note: {what} was searched with an fp32 latency table: its ops and syncs were chosen for fp32 "
                "speed, not int8's; for int8 deployment profile in int8 (nasrt profile --precision int8) and "
                "search with that table")
    return (f"note: {what} was searched with an int8 latency table: deploy it in int8 (nasrt quantize, nasrt train "
            "--int8) for the latency it was searched for; in fp32 it runs at a speed the search did not optimise")
