"""Budget repair for the search: make a derived plan fit a latency budget (under the
latency model) or a MAC budget (exact), by the cheapest single changes."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from nasrt.contract.latency import predict_latency
from nasrt.contract.lut import LatencyTable
from nasrt.contract.ops import candidate_name
from nasrt.contract.plan import Block, Plan


def _with_block(plan: Plan, layer: int, paths, **change) -> Plan:
    return dataclasses.replace(plan, paths=tuple(
        p[:layer] + (dataclasses.replace(p[layer], **change),) + p[layer + 1:] if q in paths else p
        for q, p in enumerate(plan.paths)))


def _moves(plan: Plan, space) -> list[tuple[Plan, str]]:
    """Every single change toward a cheaper plan of the space: one block's (or one layer's,
    on every path) op, a residual shortcut dropped (where the space searches it), a layer
    one width choice narrower, a sync dropped."""
    moves = []
    all_paths = tuple(range(plan.num_paths))
    for l in range(plan.num_layers):
        for p in (*all_paths, None):  # None: every path at once (breaks ties)
            targets = all_paths if p is None else (p,)
            where = f"paths[{p}][{l}]" if p is not None else f"layer {l} (all paths)"
            for op, k in space.candidates:
                if all((plan.paths[q][l].op, plan.paths[q][l].kernel) == (op, k) for q in targets):
                    continue
                moves.append((_with_block(plan, l, targets, op=op, kernel=k), f"{where} -> {candidate_name(op, k)}"))
            if space.residual == "search" and any(plan.paths[q][l].residual for q in targets):
                moves.append((_with_block(plan, l, targets, residual=False), f"{where}: residual dropped"))
        narrower = sorted(c for c in set(space.layer_widths(l)) if c < plan.paths[0][l].out)
        if narrower:
            moves.append((_with_block(plan, l, all_paths, out=narrower[-1]),
                          f"layer {l}: width {plan.paths[0][l].out} -> {narrower[-1]} channels"))
    for s_ in plan.syncs:
        moves.append((dataclasses.replace(plan, syncs=tuple(x for x in plan.syncs if x != s_)),
                      f"sync after layer {s_.after} dropped"))
    return moves


def _cheapest(plan: Plan, space, cost: Callable[[Plan], float]) -> Plan:
    """The space's cheapest plan of this structure: narrowest widths, no syncs, no residual
    where it is a choice, then every block's cheapest op (costs add per block)."""
    def narrow(l: int, b: Block) -> Block:
        return dataclasses.replace(b, out=min(space.layer_widths(l)),
                                   residual=b.residual and space.residual == "all")

    best = dataclasses.replace(plan, syncs=(), paths=tuple(tuple(narrow(l, b) for l, b in enumerate(p))
                                                          for p in plan.paths))
    for l in range(plan.num_layers):
        for q in range(plan.num_paths):
            best = min((_with_block(best, l, (q,), op=op, kernel=k) for op, k in space.candidates), key=cost)
    return best


def check_macs(space, budget_macs: float) -> None:
    """Before any search: ValueError if even the cheapest plan of the bound space has more
    MACs than the budget (the one-line message fit_macs would give after the search)."""
    op, k = space.candidates[0]
    path = tuple(Block(op, k, s, c, space.residual == "all") for c, s in zip(space.channels, space.strides))
    any_plan = Plan(space.input, space.classes, space.stem_block, (path,) * space.paths, (), space.hidden)
    fit_macs(any_plan, space, budget_macs)


def fit_cost(plan: Plan, space, cost: Callable[[Plan], float], budget: float,
             show: Callable[[float], str]) -> tuple[Plan, list[str]]:
    """Makes cost(plan) <= budget: while over it, apply the single change that saves the
    most. Raises ValueError if even the cheapest plan of the space is over the budget.
    show: a cost as logs print it, e.g. "81.2 us predicted on 2 threads"."""
    cheapest = _cheapest(plan, space, cost)
    floor = cost(cheapest)
    if floor > budget:
        raise ValueError(f"budget {show(budget)} cannot be met with this space: its cheapest plan is {show(floor)}")
    changes = []
    current = cost(plan)
    while current > budget:
        scored = [(cost(m), m, d) for m, d in _moves(plan, space)]
        scored = [x for x in scored if x[0] < current]
        if not scored:  # stuck on a plateau: the cheapest plan is known to fit
            plan, current = cheapest, floor
            changes.append(f"no single change helped: cheapest plan of the space ({show(floor)})")
            break
        current, plan, change = min(scored, key=lambda x: x[0])
        changes.append(f"{change} ({show(current)})")
    return plan, changes


def fit_budget(plan: Plan, space, lut: LatencyTable, threads: int, budget_us: float) -> tuple[Plan, list[str]]:
    """fit_cost under the latency model with `threads` threads (--budget-us)."""
    return fit_cost(plan, space, lambda p: predict_latency(p, lut, threads), budget_us,
                    lambda v: f"{v:.1f} us predicted on {threads} threads")


def fit_macs(plan: Plan, space, budget_macs: float) -> tuple[Plan, list[str]]:
    """fit_cost on the plan's exact MACs (--budget-macs)."""
    return fit_cost(plan, space, lambda p: float(p.macs()), budget_macs, lambda v: f"{v:,.0f} MACs")
