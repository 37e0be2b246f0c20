"""Latency on the target: a lookup table measured with the nasrt runtime itself
(`nasrt profile`), and the latency model of a plan on 1 or N threads."""
from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

from nasrt._io import atomic_write_json
from nasrt.errors import ModelError
from nasrt.ops import lower_block, merge_unit
from nasrt.plan import Block, Plan

LUT_FORMAT, LUT_VERSION = "nasrt.lut", 1


def machine_info() -> dict:
    """CPU model, cores and frequency, as far as the OS tells."""
    info = {"machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
            "cores": os.cpu_count(), "cores_available": len(os.sched_getaffinity(0))}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key == "model name" and "cpu" not in info:
                info["cpu"] = val.strip()
            elif key == "cpu MHz" and "mhz" not in info:
                info["mhz"] = float(val)
    except OSError:
        pass
    return info


def _spec(u, rng=None):
    from nasrt import _core
    w = np.full(u.weight_shape, 0.01, np.float32)
    return _core.ConvSpec(u.in_c, u.out_c, u.kernel, u.stride, u.groups, u.relu, w, np.zeros(u.out_c, np.float32))


def _layer_shapes(space) -> list[dict]:
    from nasrt.cost import layer_shapes
    return [dict(in_c=a, h=b, w=c, out_c=d, oh=e, ow=f, stride=s)
            for (a, b, c, d, e, f), s in zip(layer_shapes(space), space.strides)]


def _exec_time(net, threads, cores, backend, runs, warmup, in_size) -> float:
    from nasrt import _core
    ex = _core.Executor(net, threads, cores, backend, balance=False)
    return _core.time_executor(ex, in_size, runs, warmup)


def _probe_net(in_shape, paths, stem=None, sync=None):
    """P paths of one conv1x1 (C -> C) block, optional stem and sync, head FC -> 1."""
    from nasrt import _core
    from nasrt.ops import ConvUnit
    c, h, w = in_shape
    stem_specs = []
    if stem is not None:
        stem_specs = [_spec(u) for u in lower_block(stem.op, c, stem.out, stem.kernel, stem.stride)]
        c = stem.out
        for u in lower_block(stem.op, in_shape[0], stem.out, stem.kernel, stem.stride):
            h, w = u.out_hw(h, w)
    block = ConvUnit("", c, c, 1, 1)
    paths_specs = [[[_spec(block)]] for _ in range(paths)]
    syncs = []
    if sync is not None:
        mu = merge_unit(sync, paths, c)
        syncs = [_core.SyncSpec(0, _spec(mu) if mu else None)]
    head = [_core.FcSpec(paths * c, 1, False, np.zeros((1, paths * c), np.float32), np.zeros(1, np.float32))]
    return _core.NetSpec(list(in_shape), stem_specs, paths_specs, syncs, head)


def profile(space, threads: int | None = None, runs: int = 300, warmup: int = 50, core: int | None = None,
            show_progress: bool = True) -> dict:
    """Measures the latency table of a bound search space on this machine.

    Ops, stem and head single-threaded on one pinned core (median of `runs`);
    stem and each sync merge also with `threads` threads, barrier waits included,
    as the difference of two executor runs (with and without it).
    """
    from nasrt import _core, __version__
    from nasrt.runtime import available_cores, default_backend
    from nasrt._training import progress

    if space.input is None or space.classes is None:
        raise ValueError("space: no input shape / classes: use the space.json written by `nasrt search`, "
                         "or give --input and --classes")
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
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})  # single-thread probes: pinned (restored below)
    try:
        shapes = _layer_shapes(space)
        ops_us = []
        steps = progress(range(len(shapes)), len(shapes), "profile ops", show_progress)
        for l in steps:
            s = shapes[l]
            row = {}
            for name, (op, k) in zip(space.ops, space.candidates):
                chain = [_spec(u) for u in lower_block(op, s["in_c"], s["out_c"], k, s["stride"])]
                row[name] = _core.time_conv_chain(chain, s["h"], s["w"], runs, warmup, backend)
            ops_us.append(row)
        c, h, w = space.input
        stem = Block("conv", space.stem_kernel, 1, space.stem_out) if space.stem_kernel is not None else None
        last = shapes[-1]
        head_fcs = []
        width = space.paths * last["out_c"]
        for j, n in enumerate((*space.hidden, space.classes)):
            head_fcs.append(_core.FcSpec(width, n, j < len(space.hidden), np.zeros((n, width), np.float32),
                                         np.zeros(n, np.float32)))
            width = n
        head_us = _core.time_head(head_fcs, space.paths, last["oh"] * last["ow"], last["out_c"], runs, warmup, backend)
    finally:
        os.sched_setaffinity(0, old)

    def both(make_with, make_without, in_size_with, in_size_without):
        out = {}
        for t in sorted({1, threads}):
            tw = _exec_time(make_with(t), t, cores, backend, runs, warmup, in_size_with)
            to = _exec_time(make_without(t), t, cores, backend, runs, warmup, in_size_without)
            out[str(t)] = max(0.0, tw - to)
        return out

    P = space.paths
    stem_us = {"1": 0.0, str(threads): 0.0}
    if stem is not None:
        stem_in = tuple(space.input)
        after = (stem.out, stem_in[1], stem_in[2])
        stem_us = both(lambda t: _probe_net(stem_in, P, stem=stem), lambda t: _probe_net(after, P),
                       int(np.prod(stem_in)), int(np.prod(after)))
    sync_us = {}
    for merge in sorted({space.merge, "sum", "conv1x1"}):
        per = {"1": [], str(threads): []}
        for s in progress(shapes, len(shapes), f"profile {merge} syncs", show_progress):
            shp = (s["out_c"], s["oh"], s["ow"])
            r = both(lambda t: _probe_net(shp, P, sync=merge), lambda t: _probe_net(shp, P),
                     int(np.prod(shp)), int(np.prod(shp)))
            for k, v in r.items():
                per[k].append(v)
        sync_us[merge] = per
    overhead_us = {str(t): _call_overhead(t, runs, warmup) for t in sorted({1, threads})}
    return {
        "format": LUT_FORMAT, "version": LUT_VERSION, "nasrt_version": __version__,
        "machine": machine_info(), "backend": backend,
        "settings": {"threads": threads, "runs": runs, "warmup": warmup, "statistic": "median",
                     "single_thread_core": core, "balance": False},
        "space": space.to_dict(), "layers": shapes,
        "ops_us": ops_us, "stem_us": stem_us, "head_us": head_us, "sync_us": sync_us, "overhead_us": overhead_us,
    }


def _call_overhead(threads: int, runs: int, warmup: int) -> float:
    """Runtime.run of a near-empty net of `threads` paths: the fixed cost of a call from Python."""
    from nasrt.bench import time_runs, write_random_model
    from nasrt.runtime import Runtime

    plan = Plan((1, 1, 1), 1, None, tuple((Block("conv", 1, 1, 1),) for _ in range(threads)), (), ())
    with tempfile.TemporaryDirectory() as d:
        write_random_model(plan, Path(d) / "probe.nasrt")
        rt = Runtime(Path(d) / "probe.nasrt", threads=threads, balance=False)
    x = np.zeros((1, 1, 1, 1), np.float32)
    return float(np.median(time_runs(lambda: rt.run(x), runs, warmup)))


def load_lut(path: str | os.PathLike) -> dict:
    try:
        lut = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: cannot read latency table ({e})") from None
    if not isinstance(lut, dict) or lut.get("format") != LUT_FORMAT or lut.get("version") != LUT_VERSION:
        raise ModelError(f"{path}: format: not a nasrt latency table (expected {LUT_FORMAT!r} version {LUT_VERSION})")
    for key in ("ops_us", "stem_us", "head_us", "sync_us", "overhead_us", "layers", "settings"):
        if key not in lut:
            raise ModelError(f"{path}: {key}: missing")
    return lut


def save_lut(lut: dict, path: str | os.PathLike) -> None:
    atomic_write_json(path, lut)


def _check_plan(plan: Plan, lut: dict) -> None:
    shapes = plan.layer_shapes()
    if len(shapes) != len(lut["layers"]):
        raise ModelError(f"plan has {len(shapes)} layers, the latency table {len(lut['layers'])}")
    for l, (s, t) in enumerate(zip(shapes, lut["layers"])):
        if (s.in_c, s.h, s.w, s.out_c) != (t["in_c"], t["h"], t["w"], t["out_c"]):
            raise ModelError(f"layer {l}: plan shape {s.in_c}x{s.h}x{s.w} -> {s.out_c} is not the table's "
                             f"{t['in_c']}x{t['h']}x{t['w']} -> {t['out_c']}: profile this plan's space")


def op_latency(lut: dict, layer: int, block: Block) -> float:
    name = f"{block.op}{block.kernel}x{block.kernel}"
    try:
        return float(lut["ops_us"][layer][name])
    except KeyError:
        raise ModelError(f"latency table has no {name} at layer {layer}: profile a space with that op") from None


def predict_latency(plan: Plan, lut: dict, threads: int) -> float:
    """Predicted Runtime.run latency (us, batch 1) of plan with `threads` threads.

    threads = 1: the plain sum of every op, merge, stem and head. threads = T > 1:
    for every segment between kept sync points, the slowest thread's sum (thread t
    runs paths t, t+T, ...), plus each sync's cost (merge + barrier), the split
    stem, the head, and the call's fixed cost. (The runtime's balancing can beat
    the critical path on unbalanced segments; this models balance=False.)
    """
    _check_plan(plan, lut)
    key = str(threads)
    if key not in lut["overhead_us"]:
        raise ModelError(f"latency table was measured for threads {sorted(lut['overhead_us'])}, not {threads}")
    P = plan.num_paths
    total = lut["overhead_us"][key] + lut["head_us"] + (lut["stem_us"][key] if plan.stem else 0.0)
    seg = [0.0] * P
    for l in range(plan.num_layers):
        for p in range(P):
            seg[p] += op_latency(lut, l, plan.paths[p][l])
        sync = plan.sync_after(l)
        if sync:
            total += _segment(seg, threads) + lut["sync_us"][sync.merge][key][l]
            seg = [0.0] * P
    return total + _segment(seg, threads)


def _segment(path_us: list[float], threads: int) -> float:
    per_thread = [sum(path_us[t::threads]) for t in range(threads)]
    return max(per_thread)


def fit_budget(plan: Plan, space, lut: dict, threads: int, budget_us: float) -> tuple[Plan, list[str]]:
    """Makes the plan meet the latency budget under the model: while over it,
    apply the single change (a cheaper op in one block, or dropping a sync)
    that saves the most. Raises ValueError if even the cheapest plan of the
    space is over the budget."""
    import dataclasses

    def fastest(l: int, b: Block) -> Block:
        op, k = min(space.candidates, key=lambda c: op_latency(lut, l, Block(c[0], c[1], b.stride, b.out)))
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
                    moves.append((dataclasses.replace(plan, paths=paths), f"{where} -> {op}{k}x{k}"))
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
