"""lut.json, the latency table of a search space on one machine (docs/FORMATS.md):
a typed table with its one loader and validator. Written by `nasrt profile`
(nasrt/runtime/profile.py); read by the predictors, the search cost and the CLI."""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from nasrt._io import atomic_write_json, read_json
from nasrt.contract.ops import BLOCK_OPS, MERGES
from nasrt.contract.plan import MAX_CHANNELS, MAX_LAYERS, LayerShape
from nasrt.contract.space import SearchSpace, parse_candidate, width_channels
from nasrt.errors import LutError, ModelError, SpaceError

LUT_FORMAT, LUT_VERSION = "nasrt.lut", 1
PRECISIONS = ("fp32", "int8")
# ops_us[l] entries of residual blocks: "shortcut@<in>:<out>" (projection, if any, and add).
SHORTCUT = "shortcut"
_WIDTH = re.compile(r"([^@]+)@([1-9][0-9]{0,4}):([1-9][0-9]{0,4})")  # "<name>@<in>:<out>"
_SYNC_WIDTH = re.compile(r"([a-z0-9]+)@x([0-9.e+-]{1,24})")         # "<merge>@x<multiplier>", as f"{w:g}"


def _multiplier(text: str) -> float | None:
    try:
        w = float(text)
    except ValueError:
        return None
    return w if 0 < w <= 16 else None  # NaN fails too


def width_key(name: str, in_c: int, out_c: int) -> str:
    """An entry of a block (op or shortcut) at other channels than the table's layer: "conv3x3@4:8"."""
    return f"{name}@{in_c}:{out_c}"


@dataclass(frozen=True)
class LatencyTable:
    """Measured latencies (us, min over rounds of the round median) of every
    entry of a bound search space, at 1 and `threads` threads."""
    machine: dict
    backend: str
    settings: dict
    space: dict
    layers: tuple[LayerShape, ...]
    ops_us: tuple[dict[str, float], ...]              # [layer][op name]: one block, 1 thread
    units_us: tuple[dict[str, tuple[float, ...]], ...]  # [layer][op name]: each conv of a multi-conv block
    barrier_us: dict[int, float]                      # [threads]
    stem_us: dict[int, float]                         # [threads]: the stem, split over the threads
    head_us: float
    sync_us: dict[str, dict[int, tuple[float, ...]]]  # [merge][threads][layer]: merge + barrier
    overhead_us: dict[int, float]                     # [threads]: the fixed cost of a call from Python
    nasrt_version: str = ""
    # What the entries were measured in: "fp32", or "int8" (probes quantised as `nasrt quantize` does).
    precision: str = "fp32"

    @property
    def threads(self) -> int:
        """The thread count the multi-thread entries were measured with."""
        return int(self.settings["threads"])

    def check_threads(self, threads: int) -> None:
        if threads not in self.overhead_us:
            raise ModelError(f"latency table was measured for threads {sorted(self.overhead_us)}, not {threads}: "
                             f"profile again with --threads {threads}")

    def check_layers(self, shapes: list[LayerShape], what: str = "plan", widths: bool = False) -> None:
        """shapes: the layers of a plan or space; their inputs and outputs' channels must be the table's
        (widths: only their sizes, the channels being looked up in the width entries)."""
        if len(shapes) != len(self.layers):
            raise ModelError(f"{what} has {len(shapes)} layers, the latency table {len(self.layers)}: "
                             "profile this space (nasrt profile --space)")
        for l, (s, t) in enumerate(zip(shapes, self.layers)):
            if widths and (s.h, s.w, s.stride) == (t.h, t.w, t.stride):
                continue
            if (s.in_c, s.h, s.w, s.out_c) != (t.in_c, t.h, t.w, t.out_c):
                raise ModelError(f"layer {l}: {what} shape {s.in_c}x{s.h}x{s.w} -> {s.out_c} is not the table's "
                                 f"{t.in_c}x{t.h}x{t.w} -> {t.out_c}: profile this {what}'s space")

    @property
    def median_factor(self) -> float:
        """What a plain median of many calls is over the table's statistic (the fastest round):
        1 + the machine's round spread while profiling (settings.round_spread: how much slower
        an op's median round was than its fastest), 1 for a table without it (profiled before it was recorded)."""
        return 1.0 + float(self.settings.get("round_spread", 0.0))

    def op(self, layer: int, name: str) -> float:
        try:
            return self.ops_us[layer][name]
        except (KeyError, IndexError):
            raise ModelError(f"latency table has no {name} at layer {layer}: profile a space with that op") from None

    def units(self, layer: int, name: str) -> tuple[float, ...] | None:
        return self.units_us[layer].get(name) if layer < len(self.units_us) else None

    # -- width and residual entries (optional: tables of spaces without them have none) ------
    def op_at(self, layer: int, name: str, in_c: int, out_c: int) -> float:
        """One block at layer `layer`'s size and stride with in_c -> out_c channels: the plain
        entry at the table's own channels, else the width entry "<op>@<in>:<out>"."""
        t = self.layers[layer] if layer < len(self.layers) else None
        if t is not None and (in_c, out_c) == (t.in_c, t.out_c):
            return self.op(layer, name)
        return self._entry(layer, width_key(name, in_c, out_c), f"{name} at {in_c} -> {out_c} channels")

    def units_at(self, layer: int, name: str, in_c: int, out_c: int) -> tuple[float, ...] | None:
        t = self.layers[layer] if layer < len(self.layers) else None
        if t is not None and (in_c, out_c) == (t.in_c, t.out_c):
            return self.units(layer, name)
        return self.units(layer, width_key(name, in_c, out_c))

    def shortcut(self, layer: int, in_c: int, out_c: int) -> float:
        """What a residual block at layer `layer` (in_c -> out_c) adds: its projection (if any) and the add."""
        return self._entry(layer, width_key(SHORTCUT, in_c, out_c), f"residual shortcut at {in_c} -> {out_c} channels")

    def _entry(self, layer: int, key: str, what: str) -> float:
        try:
            return self.ops_us[layer][key]
        except (KeyError, IndexError):
            raise ModelError(f"latency table has no {what} at layer {layer}: profile a space with these residual "
                             "and width choices (nasrt profile --space)") from None

    def sync_at(self, merge: str, threads: int, layer: int, out_c: int) -> float:
        """A merge after layer `layer` at out_c channels: the plain entry at the table's own, else
        the width entry "<merge>@x<w>" whose multiplier gives out_c (the table's space's channels)."""
        if layer < len(self.layers) and out_c == self.layers[layer].out_c:
            return self.sync(merge, threads, layer)
        channels = self.space.get("channels") or []
        for key, per in self.sync_us.items():
            m, _, text = key.partition("@x")
            w = _multiplier(text) if text else None  # the reader checked it
            if m == merge and w is not None and layer < len(channels) and width_channels(w, channels[layer]) == out_c:
                try:
                    return per[threads][layer]
                except (KeyError, IndexError):
                    break
        raise ModelError(f"latency table has no {merge} sync at {out_c} channels at layer {layer} on {threads} "
                         "threads: profile a space with these width choices (nasrt profile --space)")

    def sync(self, merge: str, threads: int, layer: int) -> float:
        try:
            return self.sync_us[merge][threads][layer]
        except (KeyError, IndexError):
            raise ModelError(f"latency table has no {merge} sync at layer {layer} on {threads} threads") from None

    # -- file -----------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d = {"format": LUT_FORMAT, "version": LUT_VERSION, **d}
        for key in ("barrier_us", "stem_us", "overhead_us"):
            d[key] = {str(t): v for t, v in d[key].items()}
        d["sync_us"] = {m: {str(t): list(v) for t, v in per.items()} for m, per in d["sync_us"].items()}
        d["units_us"] = [{n: list(v) for n, v in row.items()} for row in d["units_us"]]
        d["layers"] = [e.to_dict() for e in self.layers]
        return d

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, source: str = "lut") -> LatencyTable:
        """Validates a lut.json document: every field's type and range (latencies finite,
        directly timed ones > 0, the differences of two runs >= 0; known ops and merges;
        integers where integers; the same thread counts in every per-thread entry).
        LutError (a ModelError) names the source and the field."""
        return _parse(d, source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        return cls.from_dict(read_json(path, LutError, "latency table"), str(path))


_TOP_KEYS = ("format", "version", "nasrt_version", "machine", "backend", "settings", "space", "layers", "ops_us",
             "units_us", "barrier_us", "stem_us", "head_us", "sync_us", "overhead_us", "precision")
_THREADS = re.compile(r"[1-9][0-9]{0,3}")  # ASCII: str.isdigit() takes "٣" and "0"
_MAX_UNITS = 8  # convs of one block (sepconv has 2)


def _brief(v: Any, n: int = 40) -> str:
    return repr(v)[:n]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse(d: Any, source: str) -> LatencyTable:

    def bad(field: str, msg: str) -> LutError:
        return LutError(f"{source}: {field}: {msg}")

    if not isinstance(d, dict) or d.get("format") != LUT_FORMAT or d.get("version") != LUT_VERSION \
            or not _is_int(d.get("version")):
        raise bad("format", f"not a nasrt latency table (expected {LUT_FORMAT!r} version {LUT_VERSION})")
    extra = sorted(set(d) - set(_TOP_KEYS))
    if extra:
        raise bad(_brief(extra[0])[1:-1], f"unknown field (known: {', '.join(_TOP_KEYS)})")
    for key in ("ops_us", "stem_us", "head_us", "sync_us", "overhead_us", "layers", "settings"):
        if key not in d:
            raise bad(key, "missing")

    def num(v, field, positive) -> float:
        """A latency: finite, > 0 when timed directly, >= 0 when a difference of two runs."""
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not (v > 0 if positive else v >= 0):
            raise bad(field, f"must be a finite number {'> 0' if positive else '>= 0'} (us), got {_brief(v)}")
        return float(v)

    def obj(v, field) -> dict:
        if not isinstance(v, dict):
            raise bad(field, f"must be an object, got {type(v).__name__}")
        return v

    def per_threads(v, field) -> dict[int, Any]:
        obj(v, field)
        for k in v:
            if not _THREADS.fullmatch(k):
                raise bad(f"{field}.{_brief(k)[1:-1]}", "must be a thread count in [1, 9999]")
        return {int(k): x for k, x in v.items()}

    def op_name(name, field, shortcut=False) -> str:
        """<op><k>x<k>, or at other channels <op><k>x<k>@<in>:<out> (and shortcut@<in>:<out>)."""
        base, m = name, _WIDTH.fullmatch(name) if isinstance(name, str) else None
        if m:
            base = m.group(1)
            if max(int(m.group(2)), int(m.group(3))) > MAX_CHANNELS:
                raise bad(f"{field}.{_brief(name)[1:-1]}", f"channels must be <= {MAX_CHANNELS}")
            if shortcut and base == SHORTCUT:
                return name
        try:
            op, _ = parse_candidate(base)
        except SpaceError:
            op = None
        if op not in BLOCK_OPS:
            raise bad(f"{field}.{_brief(name)[1:-1]}", f"unknown op (expected <op><k>x<k> with op in "
                                                       f"{', '.join(BLOCK_OPS)}, optionally @<in>:<out>"
                                                       + (", or shortcut@<in>:<out>)" if shortcut else ")"))
        return name

    layers_raw = d["layers"]
    if not isinstance(layers_raw, list) or not 1 <= len(layers_raw) <= MAX_LAYERS:
        raise bad("layers", f"must be a list of 1..{MAX_LAYERS} layers")
    layers: list[LayerShape] = []
    for l, e in enumerate(layers_raw):
        t = LayerShape.from_dict(e, f"{source}: layers[{l}]", LutError)
        if layers and (t.in_c, t.h, t.w) != (layers[-1].out_c, layers[-1].oh, layers[-1].ow):
            raise bad(f"layers[{l}]", f"input {t.in_c}x{t.h}x{t.w} is not layer {l - 1}'s output")
        layers.append(t)
    L = len(layers)

    ops_raw = d["ops_us"]
    if not isinstance(ops_raw, list) or len(ops_raw) != L:
        raise bad("ops_us", f"must be {L} objects (one per layer)")
    ops = []
    for l, r in enumerate(ops_raw):
        if not obj(r, f"ops_us[{l}]"):
            raise bad(f"ops_us[{l}]", "no ops")
        # a shortcut entry is a difference of two runs (>= 0), the ops are timed directly (> 0)
        ops.append({op_name(n, f"ops_us[{l}]", shortcut=True): num(v, f"ops_us[{l}].{n}", not n.startswith(SHORTCUT))
                    for n, v in r.items()})
    units_raw = d.get("units_us", [{}] * L)
    if not isinstance(units_raw, list) or len(units_raw) != L:
        raise bad("units_us", f"must be {L} objects (one per layer)")
    units = []
    for l, r in enumerate(units_raw):
        row = {}
        for n, v in obj(r, f"units_us[{l}]").items():
            field = f"units_us[{l}].{op_name(n, f'units_us[{l}]')}"
            if not isinstance(v, list) or not 1 <= len(v) <= _MAX_UNITS:
                raise bad(field, f"must be a list of 1..{_MAX_UNITS} latencies (one per conv of the block)")
            row[n] = tuple(num(x, field, True) for x in v)
        units.append(row)

    overhead = {t: num(v, f"overhead_us.{t}", True) for t, v in per_threads(d["overhead_us"], "overhead_us").items()}
    threads = set(overhead)
    if 1 not in threads:
        raise bad("overhead_us", "needs the 1-thread entry \"1\"")

    def same_threads(per: dict, field: str) -> dict:
        if set(per) != threads:
            raise bad(field, f"thread counts {sorted(per)} differ from overhead_us's {sorted(threads)}")
        return per

    stem = same_threads({t: num(v, f"stem_us.{t}", False) for t, v in per_threads(d["stem_us"], "stem_us").items()},
                        "stem_us")
    barrier = {t: num(v, f"barrier_us.{t}", False)
               for t, v in per_threads(d.get("barrier_us", {}), "barrier_us").items()}
    if barrier:
        same_threads(barrier, "barrier_us")
    sync: dict[str, dict[int, tuple[float, ...]]] = {}
    for m, per in obj(d["sync_us"], "sync_us").items():
        wm = _SYNC_WIDTH.fullmatch(m)  # a merge at a width multiplier: "sum@x0.5"
        if (wm.group(1) if wm else m) not in MERGES or (wm and _multiplier(wm.group(2)) is None):
            raise bad(f"sync_us.{_brief(m)[1:-1]}", f"unknown merge (known: {', '.join(MERGES)}, "
                                                    "optionally @x<width in (0, 16]>)")
        sync[m] = {}
        for t, v in same_threads(per_threads(per, f"sync_us.{m}"), f"sync_us.{m}").items():
            if not isinstance(v, list) or len(v) != L:
                raise bad(f"sync_us.{m}.{t}", f"must be {L} numbers")
            sync[m][t] = tuple(num(x, f"sync_us.{m}.{t}", False) for x in v)
    settings = obj(d["settings"], "settings")
    if not _is_int(settings.get("threads")) or settings["threads"] not in threads:
        raise bad("settings.threads", f"must be one of the measured thread counts {sorted(threads)}, "
                                      f"got {_brief(settings.get('threads'))}")
    # The machine's steadiness during profiling (median round over fastest round, minus 1): what
    # the predictors scale the table's statistic by to predict a plain median.
    v = settings.get("round_spread", 0.0)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 10:
        raise bad("settings.round_spread", f"must be a number in [0, 10) (a median round's excess over the "
                                           f"fastest), got {_brief(v)}")
    machine = obj(d.get("machine", {}), "machine")
    space = obj(d.get("space", {}), "space")
    if space:  # the profiled space (nasrt profile writes it): validated like a space.json
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its paths may exceed this machine's cores
                SearchSpace.from_dict(space)
        except SpaceError as e:
            raise LutError(f"{source}: space: {e}") from None
    for key in ("backend", "nasrt_version"):
        if not isinstance(d.get(key, ""), str):
            raise bad(key, f"must be a string, got {type(d[key]).__name__}")
    precision = d.get("precision", "fp32")  # tables before int8 were all fp32
    if precision not in PRECISIONS:
        raise bad("precision", f"must be one of {', '.join(PRECISIONS)}, got {_brief(precision)}")
    return LatencyTable(machine=dict(machine), backend=d.get("backend", ""), settings=dict(settings),
                        space=dict(space), layers=tuple(layers), ops_us=tuple(ops), units_us=tuple(units),
                        barrier_us=barrier, stem_us=stem, head_us=num(d["head_us"], "head_us", True), sync_us=sync,
                        overhead_us=overhead, nasrt_version=d.get("nasrt_version", ""), precision=precision)


def load_lut(path: str | os.PathLike) -> LatencyTable:
    """The latency table at `path`, validated."""
    return LatencyTable.load(path)

