"""Measuring the latency table of a search space on this machine with the nasrt
runtime itself (`nasrt profile`): probes, interleaved timed rounds, the table."""
from __future__ import annotations

import functools
import os
import time

import numpy as np

from nasrt import __version__, _core
from nasrt._progress import progress
from nasrt.contract.lowering import expected_tensors
from nasrt.contract.lut import LUT_FORMAT, LUT_VERSION, LatencyTable
from nasrt.contract.ops import lower_block
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.runtime.bench import random_tensors, time_runs
from nasrt.runtime.host import host_info
from nasrt.runtime.runtime import Runtime, available_cores, default_backend, lower_to_netspec


def _spec(u):
    w = np.full(u.weight_shape, 0.01, np.float32)
    return _core.ConvSpec(u.in_c, u.out_c, u.kernel, u.stride, u.groups, u.relu, w, np.zeros(u.out_c, np.float32))


def _probe_plan(in_shape, paths: int, stem: Block | None = None, sync: str | None = None) -> Plan:
    """P paths of one conv1x1 (C -> C) block, optional stem and sync after it, head FC -> 1."""
    c = stem.out if stem is not None else in_shape[0]
    return Plan(tuple(in_shape), 1, stem, tuple((Block("conv", 1, 1, c),) for _ in range(paths)),
                (Sync(0, sync),) if sync is not None else (), ())


def _probe_net(plan: Plan) -> _core.NetSpec:
    """The probe as the executor runs it, lowered by the one lowering (weights 0.01, biases 0:
    latency does not depend on the values)."""
    tensors = {k: np.full(shape, 0.01 if k.endswith("weight") else 0.0, np.float32)
               for k, shape in expected_tensors(plan).items()}
    return lower_to_netspec(plan, tensors)


def profile(space, threads: int | None = None, runs: int = 1000, rounds: int = 10, warmup: int = 50,
            core: int | None = None, span_s: float = 20.0, show_progress: bool = True) -> LatencyTable:
    """Measures the latency table of a bound search space on this machine.

    Ops, stem and head single-threaded on a thread pinned to `core`; stem and
    each sync merge also with `threads` threads, barrier waits included, as the
    difference of two executor runs (with and without it). Every entry is timed
    in `rounds` rounds of runs/rounds calls, interleaved over all entries, and
    keeps the smallest round median; the rounds are spread over at least
    `span_s` seconds. A disturbance of the machine (another process, a slower
    phase of a VM's host) then has to last through every round to shift an
    entry.
    """

    if space.input is None or space.classes is None:
        raise ValueError("space: no input shape / classes: use the space.json written by `nasrt search`, "
                         "or give --input and --classes")
    if rounds < 1 or runs < rounds:
        raise ValueError(f"runs ({runs}) and rounds ({rounds}): need 1 <= rounds <= runs")
    cores = available_cores()
    load = os.getloadavg()[0]
    if load > 0.5:
        import warnings
        warnings.warn(f"the machine is busy (load average {load:.1f}): latencies, above all with several "
                      "threads, will be noisy; profile on a quiet machine", stacklevel=2)
    threads = threads or min(space.paths, len(cores))
    if not 1 <= threads <= len(cores):
        raise ValueError(f"threads: must be in 1..{len(cores)} (available cores), got {threads}")
    backend = default_backend()
    core = cores[0] if core is None else core
    thread_counts = sorted({1, threads})
    probes = _probes(space, thread_counts, cores, core, backend, runs // rounds, warmup)
    rounds_us = _timed_rounds(probes, rounds, span_s, show_progress)
    best = {key: min(v) for key, v in rounds_us.items()}
    # The machine's steadiness: how far a typical round of the directly timed entries is from the fastest.
    spread = float(np.median([np.median(v) / min(v) - 1 for k, v in rounds_us.items() if k[0] in ("op", "head")]))
    if spread > 0.05:
        import warnings
        warnings.warn(f"the machine's speed changed during profiling: the typical round of an op was "
                      f"{100 * spread:.0f}% slower than its fastest; the table keeps each entry's fastest round",
                      stacklevel=2)

    def diff(a, b):  # a part's cost: run with it minus run without it
        return max(0.0, best[a] - best[b])

    shapes = space.layer_shapes()
    return LatencyTable.from_dict({
        "format": LUT_FORMAT, "version": LUT_VERSION, "nasrt_version": __version__,
        # Every entry is timed on the built-in backend choice of this host (no tuning file is involved).
        "machine": host_info(),
        "backend": _core.builtin_backend(),
        "settings": {"threads": threads, "runs": runs, "rounds": rounds, "warmup": warmup,
                     "span_s": span_s, "statistic": "min over rounds of the round median",
                     "single_thread_core": core, "balance": False, "round_spread": spread},
        "space": space.to_dict(), "layers": [s.to_dict() for s in shapes],
        "ops_us": [{name: best[("op", l, name)] for name, _ in space.plan_ops} for l in range(len(shapes))],
        "units_us": [{name: [best[k] for k in sorted(k for k in best if k[:3] == ("unit", l, name))]
                      for name, _ in space.plan_ops if ("unit", l, name, 0) in best} for l in range(len(shapes))],
        "barrier_us": {str(t): diff(("barrier", t, "with"), ("barrier", t, "without")) for t in thread_counts},
        "stem_us": {str(t): diff(("stem", t, "with"), ("stem", t, "without")) + best[("stem1x1",)] / t
                    if ("stem1x1",) in best else 0.0 for t in thread_counts},
        "head_us": best[("head",)],
        "sync_us": {m: {str(t): [diff(("sync", t, l, m), ("sync", t, l, "without")) for l in range(len(shapes))]
                        for t in thread_counts} for m in _merges(space)},
        "overhead_us": {str(t): best[("call", t)] for t in thread_counts},
    }, "profile")


def _probes(space, thread_counts, cores, core, backend, per_round, warmup) -> dict:
    """Every measurement of the table, by key: a callable timing per_round calls, returning the median (us)."""

    probes: dict[tuple, functools.partial] = {}
    shapes = space.layer_shapes()
    for l, s in enumerate(shapes):
        for name, (op, k) in space.plan_ops:
            units = lower_block(op, s.in_c, s.out_c, k, s.stride)
            chain = [_spec(u) for u in units]
            probes[("op", l, name)] = functools.partial(_core.time_conv_chain, chain, s.h, s.w, per_round,
                                                        warmup, backend, core)
            if len(units) > 1:  # each conv alone too: the balanced schedule splits them one by one
                h, w = s.h, s.w
                for j, (u, spec) in enumerate(zip(units, chain)):
                    probes[("unit", l, name, j)] = functools.partial(_core.time_conv_chain, [spec], h, w,
                                                                     per_round, warmup, backend, core)
                    h, w = u.out_hw(h, w)
    last = shapes[-1]
    head_fcs, width = [], space.paths * last.out_c
    for j, n in enumerate((*space.hidden, space.classes)):
        head_fcs.append(_core.FcSpec(width, n, j < len(space.hidden), np.zeros((n, width), np.float32),
                                     np.zeros(n, np.float32)))
        width = n
    probes[("head",)] = functools.partial(_core.time_head, head_fcs, space.paths, last.oh * last.ow,
                                          last.out_c, per_round, warmup, backend, core)

    def executor_probe(net, t, in_size):
        ex = _core.Executor(net, t, cores, backend, balance=False, adapt=False)  # t threads, always
        return functools.partial(_core.time_executor, ex, in_size, per_round, warmup)

    P = space.paths
    if space.stem_block is not None:
        stem = space.stem_block
        c, h, w = space.input
        for t in thread_counts:
            probes[("stem", t, "with")] = executor_probe(_probe_net(_probe_plan((c, h, w), P, stem)), t, c * h * w)
            # Against a 1x1 stem, not none: same input copy and phases, only the stem conv differs.
            probes[("stem", t, "without")] = executor_probe(
                _probe_net(_probe_plan((c, h, w), P, Block("conv", 1, 1, stem.out))), t, c * h * w)
        # The 1x1 stem's own cost (1.5 us here), added back to the difference.
        chain = [_spec(u) for u in lower_block("conv", c, stem.out, 1, 1)]
        probes[("stem1x1",)] = functools.partial(_core.time_conv_chain, chain, h, w, per_round, warmup, backend,
                                                 core)
    for l, s in enumerate(shapes):
        shp = (s.out_c, s.oh, s.ow)
        for t in thread_counts:
            probes[("sync", t, l, "without")] = executor_probe(_probe_net(_probe_plan(shp, P)), t, int(np.prod(shp)))
            for merge in _merges(space):
                probes[("sync", t, l, merge)] = executor_probe(_probe_net(_probe_plan(shp, P, sync=merge)), t,
                                                                 int(np.prod(shp)))
    for t in thread_counts:
        probes[("call", t)] = _call_probe(t, per_round, warmup)
        # One more phase (a barrier) around a merge of one element: the cost of a barrier.
        probes[("barrier", t, "with")] = executor_probe(_probe_net(_probe_plan((1, 1, 1), P, sync="sum")), t, 1)
        probes[("barrier", t, "without")] = executor_probe(_probe_net(_probe_plan((1, 1, 1), P)), t, 1)
    return probes


def _merges(space) -> list[str]:
    return sorted({space.merge, "sum", "conv1x1"})


def _timed_rounds(probes: dict, rounds: int, span_s: float, show_progress: bool) -> dict:
    """Runs every probe once per round, rounds spread over span_s seconds (a VM's host can
    slow it for tens of seconds at a time); returns each probe's round medians."""

    rounds_us: dict[tuple, list[float]] = {key: [] for key in probes}
    bar = progress(None, rounds * len(probes), "profile", show_progress)
    start = time.monotonic()
    for r in range(rounds):
        for key, probe in probes.items():
            rounds_us[key].append(probe())
            bar.update()
        time.sleep(max(0.0, start + span_s * (r + 1) / rounds - time.monotonic()))
    bar.close()
    return rounds_us


def _call_probe(threads: int, runs: int, warmup: int):
    """Times Runtime.run of a near-empty net of `threads` paths: the fixed cost of a call from Python (us)."""

    plan = _probe_plan((1, 1, 1), threads)
    rt = Runtime.from_plan(plan, random_tensors(plan), threads=threads, balance=False, adapt=False)
    x = np.zeros((1, 1, 1, 1), np.float32)
    return lambda: float(np.median(time_runs(lambda: rt.run(x), runs, warmup)))
