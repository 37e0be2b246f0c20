"""Latency comparison in one process: nasrt single-core, nasrt path threads and
ONNX Runtime configurations, on the same net and the same input."""
from __future__ import annotations

import functools
import gc
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from nasrt._io import atomic_write_text, parse_json
from nasrt.contract.lowering import expected_tensors
from nasrt.contract.modelfile import KEY_VERSION, VERSION_INT8, read_model, read_model_file, write_model
from nasrt.contract.onnx_graph import write_onnx
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.errors import ModelError, NasrtError
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


def stats(lat_us: np.ndarray) -> dict[str, Any]:
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


# -- the report (bench.json) ---------------------------------------------------------

def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# (check, what it wants) per kind of field in bench.json
_NUM = (_number, "a number")
_INT = (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
_STR = (lambda v: isinstance(v, str), "a string")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
_OBJ = (lambda v: isinstance(v, dict), "a JSON object")
_OPT_STR = (lambda v: v is None or isinstance(v, str), "a string or null")
_NUMS = (lambda v: isinstance(v, list) and all(map(_number, v)), "a list of numbers")
_STRS_BY_NAME = (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                 "a JSON object of strings")
_NUMS_BY_NAME = (lambda v: isinstance(v, dict) and all(map(_number, v.values())), "a JSON object of numbers")


def _from_dict(cls, d: Any, kinds: dict, where: str, source: str, **done):
    """cls from a JSON object: every field present (or defaulted) and of its kind; the
    fields in `done` already converted. NasrtError names the source and the field."""
    if not isinstance(d, dict):
        raise NasrtError(f"{source}: {where or 'report'}: must be a JSON object, got {type(d).__name__}")

    def name(key: str) -> str:
        return f"{source}: {where}.{key}" if where else f"{source}: {key}"
    extra = sorted(set(d) - {f.name for f in fields(cls)})
    if extra:
        raise NasrtError(f"{name(extra[0][:40])}: unknown field")
    values = {}
    for f in fields(cls):
        if f.name in done:
            values[f.name] = done[f.name]
        elif f.name not in d:
            if f.default is MISSING:
                raise NasrtError(f"{name(f.name)}: missing")
        else:
            check, what = kinds[f.name]
            if not check(d[f.name]):
                raise NasrtError(f"{name(f.name)}: must be {what}, got {repr(d[f.name])[:40]}")
            values[f.name] = d[f.name]
    return cls(**values)


@dataclass(frozen=True)
class ConfigResult:
    """One configuration's timing (us, batch 1) and its agreement with nasrt 1 thread."""
    engine: str           # "nasrt", "onnxruntime", "openvino", "litert", "ncnn"
    threads: int
    precision: str        # the arithmetic it ran in
    median: float
    p90: float
    p99: float
    min: float
    mean: float
    runs: int
    max_abs_diff_vs_nasrt_1: float
    agrees: bool
    latencies_us: list[float]
    # Where either side is not fp32 (an int8 peer, or nasrt in int8), agreement is by top-1
    # on AGREE_IMAGES inputs instead (compare).
    top1_agreement: float | None = None

    KINDS = {"engine": _STR, "threads": _INT, "precision": _STR, "median": _NUM, "p90": _NUM, "p99": _NUM,
             "min": _NUM, "mean": _NUM, "runs": _INT, "max_abs_diff_vs_nasrt_1": _NUM, "agrees": _BOOL,
             "latencies_us": _NUMS, "top1_agreement": (lambda v: v is None or _number(v), "a number or null")}


@dataclass(frozen=True)
class Ratios:
    """The verdict's ratios of medians; a ratio without the configurations it needs is None
    (and absent from bench.json)."""
    best_peer: str | None = None
    nasrt_best_config: str | None = None            # nasrt 1 thread or path threads, whichever is faster
    nasrt_vs_best_peer: float | None = None
    nasrt_multi_speedup_vs_single: float | None = None
    ort_best_config: str | None = None
    nasrt_best_vs_ort_best: float | None = None
    nasrt_single_vs_ort_1thread: float | None = None
    int8_vs_fp32: float | None = None  # nasrt int8 / nasrt fp32 (the model it came from), most threads

    KINDS = {"int8_vs_fp32": _NUM, "best_peer": _STR, "nasrt_best_config": _STR, "nasrt_vs_best_peer": _NUM,
             "nasrt_multi_speedup_vs_single": _NUM, "ort_best_config": _STR, "nasrt_best_vs_ort_best": _NUM,
             "nasrt_single_vs_ort_1thread": _NUM}


@dataclass(frozen=True)
class BenchReport:
    """What `compare` measured; bench.json is its to_json()."""
    model: str
    onnx: str | None
    consistent: bool                  # every configuration's logits within tolerance of nasrt 1 thread
    tolerance: float
    configs: dict[str, ConfigResult]  # by name; the first is nasrt 1 thread
    busy_cores: dict[str, float]      # core -> fraction another process kept it busy
    ratios: Ratios
    plan: Plan
    host: dict
    kernels: dict[str, str]           # nasrt's backend per conv

    KINDS = {"model": _STR, "onnx": _OPT_STR, "consistent": _BOOL, "tolerance": _NUM, "host": _OBJ,
             "kernels": _STRS_BY_NAME, "busy_cores": _NUMS_BY_NAME}

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["configs"] = {n: asdict(r) for n, r in self.configs.items()}
        d["ratios"] = {k: v for k, v in asdict(self.ratios).items() if v is not None}
        d["plan"] = self.plan.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, d: Any, source: str = "bench.json") -> BenchReport:
        """A report from its JSON object; NasrtError names `source` and the field."""
        if not isinstance(d, dict):
            raise NasrtError(f"{source}: must be a JSON object, got {type(d).__name__}")
        configs = d.get("configs")
        if not isinstance(configs, dict):
            raise NasrtError(f"{source}: configs: must be a JSON object of configurations")
        return _from_dict(
            cls, d, cls.KINDS, "", source, plan=Plan.from_dict(d.get("plan"), f"{source}: plan"),
            configs={n: _from_dict(ConfigResult, r, ConfigResult.KINDS, f"configs[{n[:40]!r}]", source)
                     for n, r in configs.items()},
            ratios=_from_dict(Ratios, d.get("ratios"), Ratios.KINDS, "ratios", source))

    @classmethod
    def from_json(cls, text: str, source: str = "bench.json") -> BenchReport:
        return cls.from_dict(parse_json(text, source, NasrtError), source)


@contextmanager
def onnx_for(model: str | os.PathLike, onnx: str | os.PathLike | None, peers=("ort",),
             say: Callable[[str], None] = print) -> Iterator[Path | None]:
    """The ONNX file of `model` for the ORT and OpenVINO peers: `onnx` if given, else
    MODEL with .onnx beside it, else one built from the model file for the duration
    (None without the onnx package, or when no peer reads ONNX)."""
    sibling = Path(model).with_suffix(".onnx")
    if onnx is None and sibling.exists():
        onnx = sibling
    if onnx is not None:
        if not Path(onnx).is_file():
            raise ModelError(f"{onnx}: no such ONNX file")
        yield Path(onnx)
        return
    if not set(peers) & {"ort", "openvino", "ort-static"}:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            plan, tensors, _ = read_model(model)
            path = Path(tmp) / "model.onnx"
            write_onnx(path, plan, tensors)
            say("no ONNX file given or found beside the model: built one from the model file")
        except ImportError:
            say("no ONNX file and no onnx package to build one (pip install 'nasrt[peers]'): nasrt only")
            path = None
        yield path


def model_precision(model_path: str | os.PathLike) -> str:
    """"int8" for an int8 model file (format 3: its int8 layers run in int8), else "fp32"."""
    return "int8" if read_model_file(model_path, lambda *_: None)[2].get(KEY_VERSION) == VERSION_INT8 else "fp32"


def _nasrt_configs(model_path, threads: int | None, cores, label: str = "") -> list[Config]:
    """nasrt 1 thread and one thread per path of a model file (``label`` before "1 thread")."""
    precision = model_precision(model_path)
    single = Runtime(model_path, threads=1)
    n = threads or min(single.paths, len(cores))
    n = max(1, min(n, single.paths))
    configs = [Config(f"nasrt {label}1 thread", single.run, "nasrt", 1, single, precision)]
    if n > 1:
        multi = Runtime(model_path, threads=n, adapt=False)  # timed as configured: n threads, always
        configs.append(Config(f"nasrt {label}{n} path threads", multi.run, "nasrt", n, multi, precision))
    return configs


def configurations(model_path: str | os.PathLike, onnx_path: str | os.PathLike | None,
                   threads: int | None = None, peers=("ort",), tflite_path=None,
                   say: Callable[[str], None] = print, qdq_path=None,
                   calib_images: np.ndarray | None = None, more: list[Config] | None = None,
                   fp32_model: str | os.PathLike | None = None,
                   int8_model: str | os.PathLike | None = None) -> list[Config]:
    """nasrt 1 thread, nasrt one thread per path, nasrt fp32 the same on ``fp32_model`` (the
    float model an int8 one was quantised from: int8 vs fp32 in one process), nasrt int8 the
    same on ``int8_model`` (the quantised form of a float model, `nasrt pipeline --int8`), and the
    installed peers' configurations (``qdq_path``, ``calib_images``: for the int8 peers,
    nasrt.runtime.peers.peer_configs), then ``more`` (peers built outside the runtime side:
    ExecuTorch needs torch)."""

    cores = available_cores()
    configs = _nasrt_configs(model_path, threads, cores)
    n = configs[-1].threads
    if fp32_model is not None:
        configs += _nasrt_configs(fp32_model, threads, cores, "fp32 ")
    if int8_model is not None:
        configs += _nasrt_configs(int8_model, threads, cores, "int8 ")
    configs += peer_configs(peers, onnx_path, tflite_path, max(2, min(len(cores), n)), cores, say, qdq_path,
                            calib_images)
    return configs + list(more or [])


def verdict_ratios(configs: dict[str, ConfigResult]) -> Ratios:
    """The ratios of a bench: configurations by name, the first nasrt 1 thread (nasrt configs
    of another precision, the float model of an int8 one, give int8_vs_fp32 only)."""
    names = list(configs)
    nasrt1 = configs[names[0]].median
    prec = configs[names[0]].precision
    own = [n for n in names if configs[n].engine == "nasrt" and configs[n].precision == prec]
    multi = [n for n in own if configs[n].threads > 1]
    orts = [n for n in names if configs[n].engine == "onnxruntime"]
    others = [n for n in names if configs[n].engine != "nasrt"]
    ratios: dict[str, Any] = {}
    if others:
        best = min(others, key=lambda n: configs[n].median)
        # nasrt's best configuration, 1 or P threads: on a board where another process
        # holds a core, P path threads can be the slower one.
        mine = min([names[0], *multi], key=lambda n: configs[n].median)
        ratios["best_peer"] = best
        ratios["nasrt_best_config"] = mine
        ratios["nasrt_vs_best_peer"] = configs[mine].median / configs[best].median
    if multi:
        ratios["nasrt_multi_speedup_vs_single"] = nasrt1 / configs[multi[0]].median
    fp32 = [n for n in names if configs[n].engine == "nasrt" and configs[n].precision == "fp32"]
    if prec != "fp32" and fp32:  # int8 vs fp32 at nasrt's most threads, same thread count
        mine = (multi or [names[0]])[0]
        same = [n for n in fp32 if configs[n].threads == configs[mine].threads]
        if same:
            ratios["int8_vs_fp32"] = configs[mine].median / configs[same[0]].median
    if orts:
        best = min(orts, key=lambda n: configs[n].median)
        ratios["ort_best_config"] = best
        ratios["nasrt_best_vs_ort_best"] = min(configs[n].median for n in [names[0], *multi]) / configs[best].median
        ort1 = next(n for n in orts if configs[n].threads == 1)
        ratios["nasrt_single_vs_ort_1thread"] = nasrt1 / configs[ort1].median
    return Ratios(**ratios)


AGREE_IMAGES, MIN_TOP1 = 64, 0.9


def compare(model_path: str | os.PathLike, onnx_path: str | os.PathLike | None = None,
            threads: int | None = None, runs: int = 2000, warmup: int = 200, seed: int = 0,
            atol: float = 1e-4, peers=("ort",), tflite_path=None,
            say: Callable[[str], None] = print, qdq_path=None, calib_images: np.ndarray | None = None,
            agree_images: np.ndarray | None = None, more: list[Config] | None = None,
            fp32_model: str | os.PathLike | None = None, int8_model: str | os.PathLike | None = None) -> BenchReport:
    """Times every configuration on one random input and checks their logits agree: fp32 ones
    with an fp32 nasrt 1 thread within ``atol``, the others (int8 on either side: each
    runtime requantises its own way) by top-1 with nasrt 1 thread on ``agree_images``
    (default: AGREE_IMAGES random inputs), at least MIN_TOP1.

    Timing: rounds interleaved over all configurations with an idle pause
    between them; median, p90, p99 and min over all calls."""

    plan = read_model_file(model_path, lambda *_: None)[0]
    x = np.random.default_rng(seed).standard_normal((1, *plan.input)).astype(np.float32)
    configs = configurations(model_path, onnx_path, threads, peers, tflite_path, say, qdq_path, calib_images, more,
                             fp32_model, int8_model)
    ref = configs[0].run(x)
    scale = max(1.0, float(np.abs(ref).max()))
    consistent, max_err, top1, agrees = True, {}, {}, {}
    exact = {c.name: c.precision == configs[0].precision == "fp32" for c in configs}
    if not all(exact.values()):
        xs = (np.random.default_rng(seed + 1).standard_normal((AGREE_IMAGES, *plan.input)).astype(np.float32)
              if agree_images is None else np.asarray(agree_images, np.float32))
        ref_top = np.array([configs[0].run(xi[None]).argmax() for xi in xs])  # batch 1, as timed
    for c in configs:
        err = float(np.abs(c.run(x) - ref).max())
        max_err[c.name] = err
        if exact[c.name]:
            agrees[c.name] = err <= atol * scale
        else:
            top1[c.name] = float(np.mean([c.run(xi[None]).argmax() == r for xi, r in zip(xs, ref_top)]))
            agrees[c.name] = top1[c.name] >= MIN_TOP1
        consistent &= agrees[c.name]
    results = {}
    busy = busy_cores()  # another process holding a core: sampled before and after the timing
    # Interleave rounds so slow drift of the machine hits every config alike.
    rounds = 5
    lat: dict[str, list[np.ndarray]] = {c.name: [] for c in configs}
    for _ in range(rounds):
        for c in configs:
            # ORT's pool threads spin for a while after a run; let them go idle so
            # they do not compete with the next configuration's threads.
            time.sleep(0.05)
            lat[c.name].append(time_runs(functools.partial(c.run, x), max(1, runs // rounds), warmup // rounds + 1))
    for core, frac in busy_cores().items():
        busy[core] = max(frac, busy.get(core, 0.0))
    for c in configs:
        allv = np.concatenate(lat[c.name])
        results[c.name] = ConfigResult(c.engine, c.threads, c.precision, **stats(allv),
                                       max_abs_diff_vs_nasrt_1=max_err[c.name], agrees=agrees[c.name],
                                       latencies_us=allv.tolist(), top1_agreement=top1.get(c.name))
    return BenchReport(str(model_path), str(onnx_path) if onnx_path else None, consistent, atol * scale, results,
                       {str(c): f for c, f in sorted(busy.items())}, verdict_ratios(results), plan, host_info(),
                       configs[0].keep.kernels)


def format_table(report: BenchReport) -> str:
    h = report.host
    rows = [f"host: {h.get('cpu', h.get('machine', '?'))}, ISA {h.get('isa', '?')}, "
            f"{h.get('cores_available', '?')} cores; nasrt kernels: {', '.join(sorted(set(report.kernels.values())))}",
            f"{'configuration':<24}{'precision':>10}{'median':>9}{'p90':>9}{'p99':>9}{'min':>9}   (us, batch 1)"]
    for name, r in report.configs.items():
        rows.append(f"{name:<24}{r.precision:>10}{r.median:>9.1f}{r.p90:>9.1f}{r.p99:>9.1f}{r.min:>9.1f}")
    warning = busy_warning(report.busy_cores)
    if warning:
        rows.append(warning)
    rt = report.ratios
    if rt.nasrt_multi_speedup_vs_single is not None:
        rows.append(f"nasrt multi-thread speedup vs single-core: {rt.nasrt_multi_speedup_vs_single:.2f}x")
    if rt.nasrt_best_vs_ort_best is not None:
        rows.append(f"nasrt best / ONNX Runtime best ({rt.ort_best_config}): {rt.nasrt_best_vs_ort_best:.2f}")
        rows.append(f"nasrt single-core / ORT 1 thread: {rt.nasrt_single_vs_ort_1thread:.2f}")
    if rt.int8_vs_fp32 is not None:
        rows.append(f"nasrt int8 / nasrt fp32 (the model it was quantised from), same threads: {rt.int8_vs_fp32:.2f}")
    if rt.best_peer is not None and rt.nasrt_vs_best_peer is not None:
        ratio = rt.nasrt_vs_best_peer
        rows.append(f"verdict: nasrt's best ({rt.nasrt_best_config}) = {ratio:.2f}x the best peer ({rt.best_peer}): "
                    + ("faster" if ratio < 1 else "SLOWER"))
    rows.append("logits agree across configurations" if report.consistent
                else f"WARNING: configurations DISAGREE with nasrt 1 thread (max abs diff, tolerance {report.tolerance:.1e}; "
                f"top-1 agreement, at least {MIN_TOP1:.0%}, where the precision differs): "
                + ", ".join(f"{n} ({r.precision}): "
                            + (f"{r.max_abs_diff_vs_nasrt_1:.2e}" if r.top1_agreement is None else f"top-1 {r.top1_agreement:.0%}")
                            for n, r in report.configs.items() if not r.agrees))
    return "\n".join(rows)
