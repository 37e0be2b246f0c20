"""Latency comparison in one process: nasrt single-core, nasrt path threads and
ONNX Runtime configurations, on the same net and the same input."""
from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nasrt.contract.lowering import expected_tensors
from nasrt.contract.modelfile import read_model, write_model
from nasrt.contract.onnx_graph import write_onnx
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.runtime.host import host_info
from nasrt.runtime.peers import Config, peer_configs
from nasrt.runtime.runtime import Runtime, available_cores


def paper_sized_plan(syncs: bool = False, balanced: bool = False, merge: str = "conv1x1",
                     paths: int = 2) -> Plan:
    """The paper-sized net: 3x32x32, stem conv 5x5/8, 8-16-32-64 with strides
    1-2-2-2; path A conv 5x5, path B conv 3x3 (both 5x5 if balanced; further
    paths alternate), head [64], 10 classes; syncs after every layer or none."""
    chans, strides = (8, 16, 32, 64), (1, 2, 2, 2)
    kernels = [5 if balanced or p % 2 == 0 else 3 for p in range(paths)]
    return Plan(
        input=(3, 32, 32), classes=10, stem=Block("conv", 5, 1, 8),
        paths=tuple(tuple(Block("conv", k, s, c) for c, s in zip(chans, strides)) for k in kernels),
        syncs=tuple(Sync(l, merge) for l in range(4)) if syncs else (), hidden=(64,))


def random_tensors(plan: Plan, seed: int = 0) -> dict[str, np.ndarray]:
    """He-scaled random folded weights for every tensor of the plan."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_tensors(plan).items():
        if name.endswith(".bias"):
            out[name] = rng.uniform(-0.1, 0.1, shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            out[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return out


def write_random_model(plan: Plan, path: str | os.PathLike, seed: int = 0,
                       onnx: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """A model file (and optionally ONNX) of ``plan`` with random weights."""
    tensors = random_tensors(plan, seed)
    write_model(path, plan, tensors)
    if onnx is not None:
        write_onnx(onnx, plan, tensors)
    return tensors


def time_runs(fn: Callable[[], object], runs: int, warmup: int) -> np.ndarray:
    """Per-call latencies in microseconds after warm-up (GC off while timing)."""
    for _ in range(warmup):
        fn()
    lat = np.empty(runs)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(runs):
            t0 = time.perf_counter_ns()
            fn()
            lat[i] = (time.perf_counter_ns() - t0) / 1e3
    finally:
        if gc_was:
            gc.enable()
    return lat


def stats(lat_us: np.ndarray) -> dict[str, float]:
    return {"median": float(np.median(lat_us)), "p90": float(np.percentile(lat_us, 90)),
            "p99": float(np.percentile(lat_us, 99)), "min": float(lat_us.min()),
            "mean": float(lat_us.mean()), "runs": int(lat_us.size)}


def _core_busy_ticks() -> dict[int, int]:
    """Busy clock ticks per core since boot: /proc/stat's user, nice, system, irq,
    softirq and steal (idle and iowait are not busy)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *v = line.split()
            user, nice, system, _idle, _iowait, irq, softirq, steal = (list(map(int, v)) + [0] * 8)[:8]
            out[int(name[3:])] = user + nice + system + irq + softirq + steal
    return out


def _own_ticks() -> dict[int, int]:
    """This process's CPU ticks (utime + stime of every thread) by the core each
    thread last ran on: /proc/self/task/*/stat, fields 14, 15 and 39."""
    out: dict[int, int] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            f = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # a thread that ended meanwhile
            continue
        cpu = int(f[36])
        out[cpu] = out.get(cpu, 0) + int(f[11]) + int(f[12])
    return out


def busy_cores(window_s: float = 0.3, threshold: float = 0.3, cores=None) -> dict[int, float]:
    """Cores of this process's affinity mask that other processes kept busy during
    a window of `window_s` seconds: {core: busy fraction}, those >= threshold.

    Another process on a core changes every runtime's latencies (nasrt adapts to it,
    peers may not); the bench says so. This process's own threads are not counted
    ({} where /proc is missing)."""
    cores = sorted(os.sched_getaffinity(0)) if cores is None else list(cores)
    try:
        b0, o0, t0 = _core_busy_ticks(), _own_ticks(), time.monotonic()
        time.sleep(window_s)
        b1, o1, t1 = _core_busy_ticks(), _own_ticks(), time.monotonic()
    except (OSError, ValueError, IndexError):
        return {}
    ticks = (t1 - t0) * os.sysconf("SC_CLK_TCK")
    out = {}
    for c in cores:
        if c in b0 and c in b1:
            other = (b1[c] - b0[c]) - max(0, o1.get(c, 0) - o0.get(c, 0))
            if other / ticks >= threshold:
                out[c] = min(1.0, other / ticks)
    return out


def busy_warning(busy: dict) -> str | None:
    """The one-line warning for busy_cores' result (keys may be str, as in bench.json)."""
    if not busy:
        return None
    items = sorted((int(c), f) for c, f in busy.items())
    names = ", ".join(f"{c} ({100 * f:.0f}% busy)" for c, f in items)
    return (f"WARNING: another process held core{'s' if len(items) > 1 else ''} {names} around the timing: "
            "latencies are not those of a quiet board (nasrt takes over a late thread's work or runs on one thread; "
            "peers may not)")


def configurations(model_path: str | os.PathLike, onnx_path: str | os.PathLike | None,
                   threads: int | None = None, peers=("ort",), tflite_path=None,
                   say: Callable[[str], None] = print) -> list[Config]:
    """nasrt 1 thread, nasrt one thread per path, and the installed peers' configurations."""

    cores = available_cores()
    single = Runtime(model_path, threads=1)
    n = threads or min(single.paths, len(cores))
    n = max(1, min(n, single.paths))
    configs = [Config("nasrt 1 thread", single.run, "nasrt", 1, single)]
    if n > 1:
        multi = Runtime(model_path, threads=n, adapt=False)  # timed as configured: n threads, always
        configs.append(Config(f"nasrt {n} path threads", multi.run, "nasrt", n, multi))
    configs += peer_configs(peers, onnx_path, tflite_path, max(2, min(len(cores), n)), cores, say)
    return configs


def verdict_ratios(results: dict) -> dict:
    """The ratios of a bench: results by configuration name (the first is nasrt 1 thread),
    each with engine, threads and median."""
    names = list(results)
    nasrt1 = results[names[0]]["median"]
    multi = [n for n in names if results[n]["engine"] == "nasrt" and results[n]["threads"] > 1]
    orts = [n for n in names if results[n]["engine"] == "onnxruntime"]
    others = [n for n in names if results[n]["engine"] != "nasrt"]
    ratios = {}
    if others:
        best = min(others, key=lambda n: results[n]["median"])
        # nasrt's best configuration, 1 or P threads: on a board where another process
        # holds a core, P path threads can be the slower one.
        mine = min([names[0], *multi], key=lambda n: results[n]["median"])
        ratios["best_peer"] = best
        ratios["nasrt_best_config"] = mine
        ratios["nasrt_vs_best_peer"] = results[mine]["median"] / results[best]["median"]
    if multi:
        ratios["nasrt_multi_speedup_vs_single"] = nasrt1 / results[multi[0]]["median"]
    if orts:
        best = min(orts, key=lambda n: results[n]["median"])
        ratios["ort_best_config"] = best
        ratios["nasrt_best_vs_ort_best"] = min(results[n]["median"] for n in [names[0], *multi]) / results[best]["median"]
        ort1 = next(n for n in orts if results[n]["threads"] == 1)
        ratios["nasrt_single_vs_ort_1thread"] = nasrt1 / results[ort1]["median"]
    return ratios


def compare(model_path: str | os.PathLike, onnx_path: str | os.PathLike | None = None,
            threads: int | None = None, runs: int = 2000, warmup: int = 200, seed: int = 0,
            atol: float = 1e-4, peers=("ort",), tflite_path=None,
            say: Callable[[str], None] = print) -> dict:
    """Times every configuration on one random input and checks their logits agree.

    Timing: rounds interleaved over all configurations with an idle pause
    between them; median, p90, p99 and min over all calls."""

    plan, _, _ = read_model(model_path)
    x = np.random.default_rng(seed).standard_normal((1, *plan.input)).astype(np.float32)
    configs = configurations(model_path, onnx_path, threads, peers, tflite_path, say)
    ref = configs[0].run(x)
    scale = max(1.0, float(np.abs(ref).max()))
    consistent, max_err = True, {}
    for c in configs:
        err = float(np.abs(c.run(x) - ref).max())
        max_err[c.name] = err
        consistent &= err <= atol * scale
    results = {}
    busy = busy_cores()  # another process holding a core: sampled before and after the timing
    # Interleave rounds so slow drift of the machine hits every config alike.
    rounds = 5
    lat = {c.name: [] for c in configs}
    for _ in range(rounds):
        for c in configs:
            # ORT's pool threads spin for a while after a run; let them go idle so
            # they do not compete with the next configuration's threads.
            time.sleep(0.05)
            lat[c.name].append(time_runs(lambda c=c: c.run(x), max(1, runs // rounds), warmup // rounds + 1))
    for c, f in busy_cores().items():
        busy[c] = max(f, busy.get(c, 0.0))
    for c in configs:
        allv = np.concatenate(lat[c.name])
        results[c.name] = {"engine": c.engine, "threads": c.threads, "precision": c.precision, **stats(allv),
                           "max_abs_diff_vs_nasrt_1": max_err[c.name],
                           "agrees": max_err[c.name] <= atol * scale, "latencies_us": allv.tolist()}
    ratios = verdict_ratios(results)
    return {"model": str(model_path), "onnx": str(onnx_path) if onnx_path else None,
            "consistent": consistent, "tolerance": atol * scale, "configs": results,
            "busy_cores": {str(c): f for c, f in sorted(busy.items())},
            "ratios": ratios, "plan": plan.to_dict(),
            "host": host_info(),
            "kernels": configs[0].keep.kernels}


def format_table(report: dict) -> str:
    h = report.get("host", {})
    rows = [f"host: {h.get('cpu', h.get('machine', '?'))}, ISA {h.get('isa', '?')}, "
            f"{h.get('cores_available', '?')} cores; nasrt kernels: {', '.join(sorted(set(report.get('kernels', {}).values())))}",
            f"{'configuration':<24}{'precision':>10}{'median':>9}{'p90':>9}{'p99':>9}{'min':>9}   (us, batch 1)"]
    for name, r in report["configs"].items():
        rows.append(f"{name:<24}{r.get('precision', 'fp32'):>10}{r['median']:>9.1f}{r['p90']:>9.1f}{r['p99']:>9.1f}"
                    f"{r['min']:>9.1f}")
    warning = busy_warning(report.get("busy_cores", {}))
    if warning:
        rows.append(warning)
    rt = report["ratios"]
    if "nasrt_multi_speedup_vs_single" in rt:
        rows.append(f"nasrt multi-thread speedup vs single-core: {rt['nasrt_multi_speedup_vs_single']:.2f}x")
    if "nasrt_best_vs_ort_best" in rt:
        rows.append(f"nasrt best / ONNX Runtime best ({rt['ort_best_config']}): {rt['nasrt_best_vs_ort_best']:.2f}")
        rows.append(f"nasrt single-core / ORT 1 thread: {rt['nasrt_single_vs_ort_1thread']:.2f}")
    if "best_peer" in rt:
        r = rt["nasrt_vs_best_peer"]
        mine = rt.get("nasrt_best_config", [n for n in report["configs"] if n.startswith("nasrt")][-1])
        rows.append(f"verdict: nasrt's best ({mine}) = {r:.2f}x the best peer ({rt['best_peer']}): "
                    + ("faster" if r < 1 else "SLOWER"))
    tol = report.get("tolerance", 0.0)
    rows.append("logits agree across configurations" if report["consistent"]
                else f"WARNING: configurations DISAGREE with nasrt 1 thread (max abs diff, tolerance {tol:.1e}): "
                + ", ".join(f"{n} ({r.get('precision', 'fp32')}): {r['max_abs_diff_vs_nasrt_1']:.2e}"
                            for n, r in report["configs"].items()
                            if not r.get("agrees", r["max_abs_diff_vs_nasrt_1"] <= tol)))
    return "\n".join(rows)
