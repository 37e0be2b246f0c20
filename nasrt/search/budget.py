"""Latency budget repair for the search: make a derived plan fit the budget
under the latency model, by the cheapest single changes."""
from __future__ import annotations

from nasrt.contract.latency import op_latency, predict_latency
from nasrt.contract.lut import LatencyTable
from nasrt.contract.ops import candidate_name
from nasrt.contract.plan import Block, Plan


def fit_budget(plan: Plan, space, lut: LatencyTable, threads: int, budget_us: float) -> tuple[Plan, list[str]]:
    """Makes the plan meet the latency budget under the model: while over it,
    apply the single change (a cheaper op in one block, or dropping a sync)
    that saves the most. Raises ValueError if even the cheapest plan of the
    space is over the budget."""
    import dataclasses

    shapes = plan.layer_shapes()

    def fastest(l: int, b: Block) -> Block:
        op, k = min(space.candidates, key=lambda c: op_latency(lut, l, dataclasses.replace(b, op=c[0], kernel=c[1]),
                                                               shapes[l].in_c))
        return dataclasses.replace(b, op=op, kernel=k)

    cheapest_paths = tuple(tuple(fastest(l, b) for l, b in enumerate(path)) for path in plan.paths)
    floor = predict_latency(dataclasses.replace(plan, paths=cheapest_paths, syncs=()), lut, threads)
    if floor > budget_us:
        raise ValueError(f"budget {budget_us:g} us cannot be met with this space: its fastest plan is predicted "
                         f"at {floor:.1f} us on {threads} threads")
    changes = []
    current = predict_latency(plan, lut, threads)
    while current > budget_us:
        moves = []  # (plan, description): one block's op, one layer's op on every path, or a sync dropped
        for l in range(plan.num_layers):
            for op, k in space.candidates:
                for p in (*range(plan.num_paths), None):  # None: every path at once (breaks ties)
                    targets = range(plan.num_paths) if p is None else (p,)
                    if all((plan.paths[q][l].op, plan.paths[q][l].kernel) == (op, k) for q in targets):
                        continue
                    paths = tuple(path[:l] + (dataclasses.replace(path[l], op=op, kernel=k),) + path[l + 1:]
                                  if q in targets else path for q, path in enumerate(plan.paths))
                    where = f"paths[{p}][{l}]" if p is not None else f"layer {l} (all paths)"
                    moves.append((dataclasses.replace(plan, paths=paths), f"{where} -> {candidate_name(op, k)}"))
        for s_ in plan.syncs:
            moves.append((dataclasses.replace(plan, syncs=tuple(x for x in plan.syncs if x != s_)),
                          f"sync after layer {s_.after} dropped"))
        scored = [(predict_latency(m, lut, threads), m, d) for m, d in moves]
        scored = [x for x in scored if x[0] < current]
        if not scored:  # stuck on a plateau: the fastest plan is known to fit
            plan = dataclasses.replace(plan, paths=cheapest_paths, syncs=())
            current = floor
            changes.append(f"no single change helped: fastest plan of the space (predicted {floor:.1f} us)")
            break
        current, plan, what = min(scored, key=lambda x: x[0])
        changes.append(f"{what} (predicted {current:.1f} us)")
    return plan, changes
