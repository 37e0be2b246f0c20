"""Measuring the latency table of a search space with the nasrt runtime itself
(`nasrt profile`). Python owns the space, the lowering and the quantisation: it writes
every probe as a model file plus the manifest of a profile kit (docs/FORMATS.md
section 7). One C++ routine (csrc/runtime/profile.cpp) times the kit and assembles the
table, here through the binding, on a board without Python through nasrt-profile."""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasrt import __version__, _core
from nasrt._io import atomic_write_bytes, atomic_write_json
from nasrt._progress import progress
from nasrt.contract.lowering import expected_tensors
from nasrt.contract.lut import PRECISIONS, SHORTCUT, LatencyTable, width_key
from nasrt.contract.modelfile import model_bytes
from nasrt.contract.ops import lower_block
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.runtime.bench import time_runs
from nasrt.runtime.runtime import Runtime, available_cores

KIT_FORMAT, KIT_VERSION = "nasrt.profile-kit", 1
KIT_MANIFEST = "kit.json"


@dataclass
class ProfileKit:
    """The probes of a latency table: kit.json's content and the model files by name."""
    manifest: dict
    models: dict[str, bytes]

    def write(self, out_dir: str | os.PathLike) -> None:
        """The kit as a directory: every model, then kit.json (each written atomically)."""
        d = Path(out_dir)
        if d.exists() and not d.is_dir():
            raise ValueError(f"{d}: not a directory (--kit needs a directory for the kit)")
        d.mkdir(parents=True, exist_ok=True)
        for name, data in self.models.items():
            atomic_write_bytes(d / name, data)
        atomic_write_json(d / KIT_MANIFEST, self.manifest)


def _probe_plan(in_shape, paths: int, stem: Block | None = None, sync: str | None = None) -> Plan:
    """P paths of one conv1x1 (C -> C) block, optional stem and sync after it, head FC -> 1."""
    c = stem.out if stem is not None else in_shape[0]
    return Plan(tuple(in_shape), 1, stem, tuple((Block("conv", 1, 1, c),) for _ in range(paths)),
                (Sync(0, sync),) if sync is not None else (), ())


# The int8 model of a probe: (plan, tensors, reads_net_input) -> model file bytes. The runtime does
# not import nasrt.quant (docs/DESIGN.md's layers): callers pass nasrt.quant.probe.probe_model_bytes.
Int8Model = Callable[[Plan, dict, bool], bytes]


def _model(plan: Plan, int8_model: Int8Model | None, reads_net_input: bool) -> bytes:
    """The probe's model file (weights 0.01, biases 0: latency does not depend on the values),
    fp32, or int8 by int8_model."""
    tensors = {k: np.full(shape, 0.01 if k.endswith("weight") else 0.0, np.float32)
               for k, shape in expected_tensors(plan).items()}
    return model_bytes(plan, tensors) if int8_model is None else int8_model(plan, tensors, reads_net_input)


def build_kit(space, precision: str = "fp32", threads: int = 1, runs: int = 1000, rounds: int = 10,
              warmup: int = 50, span_s: float = 20.0, core: int | None = None,
              int8_model: Int8Model | None = None) -> ProfileKit:
    """The profile kit of a bound search space: every op at every layer shape (and each conv of a
    multi-conv block) and the head, timed on one pinned thread; the stem, every sync merge at every
    layer and a barrier on 1 and `threads` threads as the difference of two executor runs (with and
    without it); the fixed cost of a call. The recipe says how each table entry follows from them.
    precision "int8" needs int8_model (nasrt.quant.probe.probe_model_bytes)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if (precision == "int8") != (int8_model is not None):
        raise ValueError("int8_model: an int8 kit needs it (nasrt.quant.probe.probe_model_bytes), an fp32 kit "
                         "takes none")
    models: dict[str, bytes] = {}
    names: dict[bytes, str] = {}
    probes: list[dict] = []

    def probe(key: str, plan: Plan, time: str, reads_net_input: bool = False, **what) -> str:
        data = _model(plan, int8_model, reads_net_input)
        if data not in names:  # one file per distinct model
            names[data] = key.replace("/", ".").replace("@", "_w").replace(":", "_") + ".nasrt"  # a plain file name
            models[names[data]] = data
        probes.append({"key": key, "model": names[data], "time": time, **what})
        return key

    def one_block(in_shape, op, k, stride, out, residual=False) -> Plan:
        return Plan(tuple(in_shape), 1, None, ((Block(op, k, stride, out, residual),),))

    shapes = space.layer_shapes()
    P, thread_counts = space.paths, sorted({1, threads})
    merges = sorted({space.merge, "sum", "conv1x1"})
    first_reads_input = space.stem_block is None
    ops_r: list[dict] = []
    units_r: list[dict] = []
    for l, s in enumerate(shapes):
        ops_r.append({})
        units_r.append({})
        for name, (op, k) in space.plan_ops:
            n = len(lower_block(op, s.in_c, s.out_c, k, s.stride))
            plan = one_block((s.in_c, s.h, s.w), op, k, s.stride, s.out_c)
            key = probe(f"op/{l}/{name}", plan, "convs", l == 0 and first_reads_input, convs=list(range(n)))
            ops_r[l][name] = {"probe": key}
            if n > 1:  # each conv alone too: the balanced schedule splits them one by one
                units_r[l][name] = [{"probe": probe(f"unit/{l}/{name}/{j}", plan, "convs",
                                                    l == 0 and first_reads_input, convs=[j])} for j in range(n)]
        # Width choices: every op again at every other (in, out) channel pair of the layer
        # (same size and stride), under "<op>@<in>:<out>" (docs/FORMATS.md section 4).
        pairs = [(i, o) for i in space.in_widths(l) for o in space.layer_widths(l)]
        for in_c, out_c in dict.fromkeys(pairs):
            key_c = f"{in_c}:{out_c}"
            if (in_c, out_c) != (s.in_c, s.out_c):
                for name, (op, k) in space.plan_ops:
                    n = len(lower_block(op, in_c, out_c, k, s.stride))
                    plan = one_block((in_c, s.h, s.w), op, k, s.stride, out_c)
                    wname = width_key(name, in_c, out_c)
                    key = probe(f"op/{l}/{name}@{key_c}", plan, "convs", l == 0 and first_reads_input,
                                convs=list(range(n)))
                    ops_r[l][wname] = {"probe": key}
                    if n > 1:
                        units_r[l][wname] = [{"probe": probe(f"unit/{l}/{name}@{key_c}/{j}", plan, "convs",
                                                             l == 0 and first_reads_input, convs=[j])}
                                             for j in range(n)]
            if space.residual != "none":
                # The shortcut (projection, if any) and the add: a residual 1x1 block minus the plain
                # one, whole nets on one thread (the add is not a conv the "convs" timing sees).
                shp = (in_c, s.h, s.w)
                with_ = probe(f"res/{l}/{key_c}/with", one_block(shp, "conv", 1, s.stride, out_c, True), "executor",
                              l == 0 and first_reads_input, threads=1)
                without = probe(f"res/{l}/{key_c}/without", one_block(shp, "conv", 1, s.stride, out_c), "executor",
                                l == 0 and first_reads_input, threads=1)
                ops_r[l][width_key(SHORTCUT, in_c, out_c)] = {"probe": with_, "minus": without}
    last = shapes[-1]
    head = Plan((last.out_c, last.oh, last.ow), space.classes, None,
                tuple((Block("conv", 1, 1, last.out_c),) for _ in range(P)), (), tuple(space.hidden))
    head_r = {"probe": probe("head", head, "head")}

    stem_r: dict[str, object] = {str(t): 0.0 for t in thread_counts}
    if space.stem_block is not None:
        stem = space.stem_block
        c, h, w = space.input
        # The 1x1 stem's own cost, added back to the difference (split over the threads).
        one = probe("stem1x1", one_block((c, h, w), "conv", 1, 1, stem.out), "convs", True, convs=[0])
        for t in thread_counts:
            with_ = probe(f"stem/{t}/with", _probe_plan((c, h, w), P, stem), "executor", True, threads=t)
            # Against a 1x1 stem, not none: same input copy and phases, only the stem conv differs.
            without = probe(f"stem/{t}/without", _probe_plan((c, h, w), P, Block("conv", 1, 1, stem.out)),
                            "executor", True, threads=t)
            stem_r[str(t)] = {"probe": with_, "minus": without, "plus": one, "coef": 1.0 / t}
    sync_r: dict[str, dict[str, list]] = {m: {str(t): [] for t in thread_counts} for m in merges}
    # Width choices: the merges at every other width of the layer, under "<merge>@x<w>".
    widest = max(space.widths)
    for w in (w for w in space.widths if w != widest):
        for m in merges:
            sync_r[f"{m}@x{w:g}"] = {str(t): [] for t in thread_counts}
    for l, s in enumerate(shapes):
        for w, c in zip(space.widths, space.layer_widths(l)):
            shp = (c, s.oh, s.ow)
            tag = "" if w == widest else f"@x{w:g}"
            for t in thread_counts:
                without = probe(f"sync/{t}/{l}/without{tag}", _probe_plan(shp, P), "executor", threads=t)
                for m in merges:
                    key = probe(f"sync/{t}/{l}/{m}{tag}", _probe_plan(shp, P, sync=m), "executor", threads=t)
                    sync_r[m + tag][str(t)].append({"probe": key, "minus": without})
    overhead_r, barrier_r = {}, {}
    for t in thread_counts:
        overhead_r[str(t)] = {"probe": probe(f"call/{t}", _probe_plan((1, 1, 1), t), "call", threads=t)}
        # One more phase (a barrier) around a merge of one element: the cost of a barrier.
        with_ = probe(f"barrier/{t}/with", _probe_plan((1, 1, 1), P, sync="sum"), "executor", threads=t)
        without = probe(f"barrier/{t}/without", _probe_plan((1, 1, 1), P), "executor", threads=t)
        barrier_r[str(t)] = {"probe": with_, "minus": without}
    manifest = {
        "format": KIT_FORMAT, "version": KIT_VERSION, "precision": precision,
        "settings": {"threads": threads, "runs": runs, "rounds": rounds, "warmup": warmup, "span_s": span_s,
                     "single_thread_core": core},
        "table": {"nasrt_version": __version__, "space": space.to_dict(), "layers": [s.to_dict() for s in shapes]},
        "probes": probes,
        "recipe": {"ops_us": ops_r, "units_us": units_r, "barrier_us": barrier_r, "stem_us": stem_r,
                   "head_us": head_r, "sync_us": sync_r, "overhead_us": overhead_r},
    }
    return ProfileKit(manifest, models)


def _check(space, runs: int, rounds: int) -> None:
    if space.input is None or space.classes is None:
        raise ValueError("space: no input shape / classes: use the space.json written by `nasrt search`, "
                         "or give --input and --classes")
    if rounds < 1 or runs < rounds:
        raise ValueError(f"runs ({runs}) and rounds ({rounds}): need 1 <= rounds <= runs")


def write_kit(space, out_dir: str | os.PathLike, precision: str = "fp32", threads: int | None = None,
              runs: int = 1000, rounds: int = 10, warmup: int = 50, span_s: float = 20.0,
              int8_model: Int8Model | None = None) -> ProfileKit:
    """Writes the profile kit of a bound space to `out_dir`, for `nasrt-profile DIR` on a board.
    threads: the board's (default: one per path); the single-thread probes use its first core."""
    _check(space, runs, rounds)
    kit = build_kit(space, precision, threads or space.paths, runs, rounds, warmup, span_s, None, int8_model)
    kit.write(out_dir)
    return kit


def profile(space, threads: int | None = None, runs: int = 1000, rounds: int = 10, warmup: int = 50,
            core: int | None = None, span_s: float = 20.0, show_progress: bool = True,
            precision: str = "fp32", int8_model: Int8Model | None = None) -> LatencyTable:
    """Measures the latency table of a bound search space on this machine, in `precision`.

    Ops, stem and head single-threaded on a thread pinned to `core`; stem and
    each sync merge also with `threads` threads, barrier waits included, as the
    difference of two executor runs (with and without it). Every entry is timed
    in `rounds` rounds of runs/rounds calls, interleaved over all entries, and
    keeps the smallest round median; the rounds are spread over at least
    `span_s` seconds. A disturbance of the machine (another process, a slower
    phase of a VM's host) then has to last through every round to shift an
    entry. int8 (int8_model=nasrt.quant.probe.probe_model_bytes): every probe
    quantised as `nasrt quantize` does and run on the int8 kernels the runtime picks.
    """

    _check(space, runs, rounds)
    cores = available_cores()
    load = os.getloadavg()[0]
    if load > 0.5:
        warnings.warn(f"the machine is busy (load average {load:.1f}): latencies, above all with several "
                      "threads, will be noisy; profile on a quiet machine", stacklevel=2)
    threads = threads or min(space.paths, len(cores))
    if not 1 <= threads <= len(cores):
        raise ValueError(f"threads: must be in 1..{len(cores)} (available cores), got {threads}")
    kit = build_kit(space, precision, threads, runs, rounds, warmup, span_s, core, int8_model)
    calls = {p["key"]: _call_timer(kit.models[p["model"]], p["key"], p["threads"])
             for p in kit.manifest["probes"] if p["time"] == "call"}
    bar = progress(None, rounds * len(kit.manifest["probes"]), "profile", show_progress)
    try:
        text = _core.profile_kit(json.dumps(kit.manifest), kit.models, calls, bar.update, "profile kit")
    finally:
        bar.close()
    lut = LatencyTable.from_dict(json.loads(text), "profile")
    spread = lut.settings["round_spread"]
    if spread > 0.05:
        warnings.warn(f"the machine's speed changed during profiling: the typical round of an op was "
                      f"{100 * spread:.0f}% slower than its fastest; the table keeps each entry's fastest round",
                      stacklevel=2)
    return lut


def _call_timer(data: bytes, name: str, threads: int):
    """Times Runtime.run of a near-empty net of `threads` paths: the fixed cost of a call from Python (us)."""

    rt = Runtime.from_bytes(data, f"<probe {name}>", threads=threads, balance=False, adapt=False)
    x = np.zeros((1, *rt.plan.input), np.float32)
    return lambda runs, warmup: float(np.median(time_runs(lambda: rt.run(x), runs, warmup)))
