"""lut.json, the latency table of a search space on one machine (docs/FORMATS.md):
a typed table with its one loader and validator. Written by `nasrt profile`
(nasrt/profiling.py); read by the predictors, the search cost and the CLI."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nasrt._io import atomic_write_json
from nasrt.errors import ModelError

LUT_FORMAT, LUT_VERSION = "nasrt.lut", 1


@dataclass(frozen=True)
class LayerEntry:
    """One layer of the profiled space: input (in_c, h, w) -> output (out_c, oh, ow)."""
    in_c: int
    h: int
    w: int
    out_c: int
    oh: int
    ow: int
    stride: int


@dataclass(frozen=True)
class LatencyTable:
    """Measured latencies (us, min over rounds of the round median) of every
    entry of a bound search space, at 1 and `threads` threads."""
    machine: dict
    backend: str
    settings: dict
    space: dict
    layers: tuple[LayerEntry, ...]
    ops_us: tuple[dict[str, float], ...]              # [layer][op name]: one block, 1 thread
    units_us: tuple[dict[str, tuple[float, ...]], ...]  # [layer][op name]: each conv of a multi-conv block
    barrier_us: dict[int, float]                      # [threads]
    stem_us: dict[int, float]                         # [threads]: the stem, split over the threads
    head_us: float
    sync_us: dict[str, dict[int, tuple[float, ...]]]  # [merge][threads][layer]: merge + barrier
    overhead_us: dict[int, float]                     # [threads]: the fixed cost of a call from Python
    nasrt_version: str = ""

    @property
    def threads(self) -> int:
        """The thread count the multi-thread entries were measured with."""
        return int(self.settings["threads"])

    def check_threads(self, threads: int) -> None:
        if threads not in self.overhead_us:
            raise ModelError(f"latency table was measured for threads {sorted(self.overhead_us)}, not {threads}: "
                             f"profile again with --threads {threads}")

    def check_layers(self, shapes: list[tuple[int, int, int, int]], what: str = "plan") -> None:
        """shapes: (in_c, h, w, out_c) per layer of a plan or space."""
        if len(shapes) != len(self.layers):
            raise ModelError(f"{what} has {len(shapes)} layers, the latency table {len(self.layers)}: "
                             "profile this space (nasrt profile --space)")
        for l, (s, t) in enumerate(zip(shapes, self.layers)):
            if tuple(s) != (t.in_c, t.h, t.w, t.out_c):
                raise ModelError(f"layer {l}: {what} shape {s[0]}x{s[1]}x{s[2]} -> {s[3]} is not the table's "
                                 f"{t.in_c}x{t.h}x{t.w} -> {t.out_c}: profile this {what}'s space")

    def op(self, layer: int, name: str) -> float:
        try:
            return self.ops_us[layer][name]
        except (KeyError, IndexError):
            raise ModelError(f"latency table has no {name} at layer {layer}: profile a space with that op") from None

    def units(self, layer: int, name: str) -> tuple[float, ...] | None:
        return self.units_us[layer].get(name) if layer < len(self.units_us) else None

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
        d["layers"] = [asdict(e) for e in self.layers]
        return d

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, source: str = "lut") -> LatencyTable:
        """Validates a lut.json document; ModelError names the source and the field."""
        def bad(field: str, msg: str) -> ModelError:
            return ModelError(f"{source}: {field}: {msg}")

        if not isinstance(d, dict) or d.get("format") != LUT_FORMAT or d.get("version") != LUT_VERSION:
            raise bad("format", f"not a nasrt latency table (expected {LUT_FORMAT!r} version {LUT_VERSION})")
        for key in ("ops_us", "stem_us", "head_us", "sync_us", "overhead_us", "layers", "settings"):
            if key not in d:
                raise bad(key, "missing")

        def num(v, field) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise bad(field, f"must be a number >= 0, got {str(v)[:40]}")
            return float(v)

        def per_threads(v, field) -> dict[int, Any]:
            if not isinstance(v, dict) or not all(isinstance(k, str) and k.isdigit() for k in v):
                raise bad(field, "must map thread counts to values")
            return {int(k): x for k, x in v.items()}

        try:
            layers = tuple(LayerEntry(**{k: int(e[k]) for k in ("in_c", "h", "w", "out_c", "oh", "ow", "stride")})
                           for e in d["layers"])
        except (TypeError, KeyError, ValueError):
            raise bad("layers", "each layer needs integer in_c, h, w, out_c, oh, ow, stride") from None
        L = len(layers)
        if not isinstance(d["ops_us"], list) or len(d["ops_us"]) != L or not all(isinstance(r, dict) for r in d["ops_us"]):
            raise bad("ops_us", f"must be {L} objects (one per layer)")
        ops = tuple({n: num(v, f"ops_us[{l}].{n}") for n, v in r.items()} for l, r in enumerate(d["ops_us"]))
        units_raw = d.get("units_us", [{}] * L)
        if not isinstance(units_raw, list) or len(units_raw) != L:
            raise bad("units_us", f"must be {L} objects (one per layer)")
        units = tuple({n: tuple(num(x, f"units_us[{l}].{n}") for x in v) for n, v in r.items()}
                      for l, r in enumerate(units_raw))
        sync = {}
        if not isinstance(d["sync_us"], dict):
            raise bad("sync_us", "must map merges to thread counts")
        for m, per in d["sync_us"].items():
            sync[m] = {}
            for t, v in per_threads(per, f"sync_us.{m}").items():
                if not isinstance(v, list) or len(v) != L:
                    raise bad(f"sync_us.{m}.{t}", f"must be {L} numbers")
                sync[m][t] = tuple(num(x, f"sync_us.{m}.{t}") for x in v)
        overhead = {t: num(v, f"overhead_us.{t}") for t, v in per_threads(d["overhead_us"], "overhead_us").items()}
        stem = {t: num(v, f"stem_us.{t}") for t, v in per_threads(d["stem_us"], "stem_us").items()}
        barrier = {t: num(v, f"barrier_us.{t}") for t, v in per_threads(d.get("barrier_us", {}), "barrier_us").items()}
        if not isinstance(d["settings"], dict) or not isinstance(d["settings"].get("threads"), int):
            raise bad("settings.threads", "missing")
        return cls(machine=dict(d.get("machine", {})), backend=str(d.get("backend", "")), settings=dict(d["settings"]),
                   space=dict(d.get("space", {})), layers=layers, ops_us=ops, units_us=units, barrier_us=barrier,
                   stem_us=stem, head_us=num(d["head_us"], "head_us"), sync_us=sync, overhead_us=overhead,
                   nasrt_version=str(d.get("nasrt_version", "")))

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ModelError(f"{path}: cannot read latency table ({e})") from None
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise ModelError(f"{path}: cannot read latency table (not valid JSON: {str(e)[:80]})") from None
        return cls.from_dict(d, str(path))


def load_lut(path: str | os.PathLike) -> LatencyTable:
    """The latency table at `path`, validated."""
    return LatencyTable.load(path)


def save_lut(lut: LatencyTable, path: str | os.PathLike) -> None:
    lut.save(path)
