"""Latency comparison in one process: nasrt single-core, nasrt path threads and
ONNX Runtime configurations, on the same net and the same input."""
from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable

import numpy as np

from nasrt.lowering import expected_tensors
from nasrt.modelfile import read_model, write_model
from nasrt.peers import Config, peer_configs
from nasrt.plan import Block, Plan, Sync


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
        from nasrt.onnx_export import write_onnx
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


def configurations(model_path: str | os.PathLike, onnx_path: str | os.PathLike | None,
                   threads: int | None = None, peers=("ort",), tflite_path=None,
                   say: Callable[[str], None] = print) -> list[Config]:
    """nasrt 1 thread, nasrt one thread per path, and the installed peers' configurations."""
    from nasrt.runtime import Runtime, available_cores

    cores = available_cores()
    single = Runtime(model_path, threads=1)
    n = threads or min(single.paths, len(cores))
    n = max(1, min(n, single.paths))
    configs = [Config("nasrt 1 thread", single.run, "nasrt", 1, single)]
    if n > 1:
        multi = Runtime(model_path, threads=n)
        configs.append(Config(f"nasrt {n} path threads", multi.run, "nasrt", n, multi))
    configs += peer_configs(peers, onnx_path, tflite_path, max(2, min(len(cores), n)), cores, say)
    return configs


def compare(model_path: str | os.PathLike, onnx_path: str | os.PathLike | None = None,
            threads: int | None = None, runs: int = 2000, warmup: int = 200, seed: int = 0,
            atol: float = 1e-4, peers=("ort",), tflite_path=None,
            say: Callable[[str], None] = print) -> dict:
    """Times every configuration on one random input and checks their logits agree.

    Timing: rounds interleaved over all configurations with an idle pause
    between them; median, p90, p99 and min over all calls."""
    from nasrt import _core
    from nasrt.profiling import machine_info

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
    # Interleave rounds so slow drift of the machine hits every config alike.
    rounds = 5
    lat = {c.name: [] for c in configs}
    for _ in range(rounds):
        for c in configs:
            # ORT's pool threads spin for a while after a run; let them go idle so
            # they do not compete with the next configuration's threads.
            time.sleep(0.05)
            lat[c.name].append(time_runs(lambda c=c: c.run(x), max(1, runs // rounds), warmup // rounds + 1))
    for c in configs:
        allv = np.concatenate(lat[c.name])
        results[c.name] = {"engine": c.engine, "threads": c.threads, **stats(allv),
                           "max_abs_diff_vs_nasrt_1": max_err[c.name], "latencies_us": allv.tolist()}
    nasrt1 = results[configs[0].name]["median"]
    multi = [c.name for c in configs if c.engine == "nasrt" and c.threads > 1]
    orts = [c.name for c in configs if c.engine == "onnxruntime"]
    others = [c.name for c in configs if c.engine != "nasrt"]
    ratios = {}
    if others:
        best = min(others, key=lambda n: results[n]["median"])
        mine = multi[0] if multi else configs[0].name
        ratios["best_peer"] = best
        ratios["nasrt_vs_best_peer"] = results[mine]["median"] / results[best]["median"]
    if multi:
        ratios["nasrt_multi_speedup_vs_single"] = nasrt1 / results[multi[0]]["median"]
    if orts:
        best = min(orts, key=lambda n: results[n]["median"])
        ratios["ort_best_config"] = best
        ratios["nasrt_best_vs_ort_best"] = min(results[n]["median"] for n in [configs[0].name, *multi]) / results[best]["median"]
        ort1 = next(n for n in orts if results[n]["threads"] == 1)
        ratios["nasrt_single_vs_ort_1thread"] = nasrt1 / results[ort1]["median"]
    return {"model": str(model_path), "onnx": str(onnx_path) if onnx_path else None,
            "consistent": consistent, "tolerance": atol * scale, "configs": results,
            "ratios": ratios, "plan": plan.to_dict(),
            "host": {**machine_info(), "isa": _core.host_isa(), "backends": _core.compiled_backends()},
            "kernels": configs[0].keep.kernels}


def format_table(report: dict) -> str:
    h = report.get("host", {})
    rows = [f"host: {h.get('cpu', h.get('machine', '?'))}, ISA {h.get('isa', '?')}, "
            f"{h.get('cores_available', '?')} cores; nasrt kernels: {', '.join(sorted(set(report.get('kernels', {}).values())))}",
            f"{'configuration':<24}{'median':>9}{'p90':>9}{'p99':>9}{'min':>9}   (us, batch 1)"]
    for name, r in report["configs"].items():
        rows.append(f"{name:<24}{r['median']:>9.1f}{r['p90']:>9.1f}{r['p99']:>9.1f}{r['min']:>9.1f}")
    rt = report["ratios"]
    if "nasrt_multi_speedup_vs_single" in rt:
        rows.append(f"nasrt multi-thread speedup vs single-core: {rt['nasrt_multi_speedup_vs_single']:.2f}x")
    if "nasrt_best_vs_ort_best" in rt:
        rows.append(f"nasrt best / ONNX Runtime best ({rt['ort_best_config']}): {rt['nasrt_best_vs_ort_best']:.2f}")
        rows.append(f"nasrt single-core / ORT 1 thread: {rt['nasrt_single_vs_ort_1thread']:.2f}")
    if "best_peer" in rt:
        r, mine = rt["nasrt_vs_best_peer"], [n for n in report["configs"] if n.startswith("nasrt")][-1]
        rows.append(f"verdict: {mine} = {r:.2f}x the best peer ({rt['best_peer']}): "
                    + ("faster" if r < 1 else "SLOWER"))
    rows.append("logits agree across configurations" if report["consistent"]
                else "WARNING: configurations DISAGREE: " + ", ".join(
                    f"{n}: {r['max_abs_diff_vs_nasrt_1']:.2e}" for n, r in report["configs"].items()))
    return "\n".join(rows)
