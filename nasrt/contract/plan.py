"""Plan: the plan-v1 architecture contract (plan.json), validated on load."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from nasrt._io import atomic_write_json, read_json
from nasrt.contract.ops import BLOCK_OPS, MERGES, STEM_OPS, block_cost, candidate_name, fc_cost, lower_block, merge_cost
from nasrt.errors import PlanError

FORMAT = "nasrt.plan"
VERSION = 1
# Sizes no real model reaches: larger values are refused before anything is allocated
# (the native loader has the same limits, csrc/runtime/model.h).
MAX_SIDE, MAX_CHANNELS, MAX_KERNEL, MAX_PATHS, MAX_LAYERS, MAX_HIDDEN = 8192, 65536, 63, 64, 4096, 16
MAX_ACTIVATION_FLOATS = 1 << 28  # 1 GiB of float32 over all layers of all paths
_TOP_KEYS = ("format", "version", "input", "classes", "stem", "paths", "syncs", "head", "meta")
_BLOCK_KEYS = ("op", "kernel", "stride", "out", "residual")
_LAYER_LIMITS = {"in_c": MAX_CHANNELS, "out_c": MAX_CHANNELS, "h": MAX_SIDE, "w": MAX_SIDE, "oh": MAX_SIDE,
                 "ow": MAX_SIDE, "stride": MAX_KERNEL}  # in the order error messages list them


@dataclass(frozen=True)
class Block:
    op: str
    kernel: int
    stride: int
    out: int
    residual: bool = False

    def to_dict(self) -> dict:
        d = {"op": self.op, "kernel": self.kernel, "stride": self.stride, "out": self.out}
        if self.residual:
            d["residual"] = True
        return d

    @property
    def candidate(self) -> str:
        """The op and kernel as a candidate name, e.g. "conv5x5"."""
        return candidate_name(self.op, self.kernel)

    def label(self) -> str:
        return self.candidate + (f"/s{self.stride}" if self.stride > 1 else "")


@dataclass(frozen=True)
class Sync:
    after: int
    merge: str


@dataclass(frozen=True)
class LayerShape:
    """Layer l's input (in_c, h, w) -> output (out_c, oh, ow) at its stride: the same
    for every path of a plan and every plan of a bound space. The one form of layer
    geometry; to_dict/from_dict are its serialisation (lut.json "layers")."""
    in_c: int
    h: int
    w: int
    out_c: int
    oh: int
    ow: int
    stride: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "layer", error: type[Exception] = PlanError) -> LayerShape:
        """Validates a layer object (fields, the plan-v1 limits, output = input at the stride);
        `error` names `where` and the field, e.g. "lut.json: layers[2].oh: ..."."""
        if not isinstance(d, dict):
            raise error(f"{where}: must be an object, got {type(d).__name__}")
        extra = sorted(set(d) - set(_LAYER_LIMITS), key=str)
        if extra:
            raise error(f"{where}.{repr(extra[0])[:40][1:-1]}: unknown field (known: {', '.join(_LAYER_LIMITS)})")
        for k, hi in _LAYER_LIMITS.items():
            if k not in d:
                raise error(f"{where}.{k}: missing")
            if not _is_int(d[k]) or not 1 <= d[k] <= hi:
                raise error(f"{where}.{k}: must be an integer in [1, {hi}], got {repr(d[k])[:40]}")
        s = cls(**{k: d[k] for k in cls.__dataclass_fields__})
        if (s.oh, s.ow) != (-(-s.h // s.stride), -(-s.w // s.stride)):
            raise error(f"{where}: output {s.oh}x{s.ow} is not the input {s.h}x{s.w} at stride {s.stride}")
        return s


@dataclass(frozen=True)
class Plan:
    """A derived (or hand-written) parallel-path network.

    Example:
        >>> plan = Plan.load("plan.json")
        >>> plan.num_paths, plan.num_layers, plan.macs()
    """

    input: tuple[int, int, int]
    classes: int
    stem: Block | None
    paths: tuple[tuple[Block, ...], ...]
    syncs: tuple[Sync, ...] = ()
    hidden: tuple[int, ...] = ()  # as a plan.json without head.hidden
    meta: dict = field(default_factory=dict, compare=False)

    # -- construction -------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, source: str = "plan") -> Plan:
        """Validates a plan-v1 dict; PlanError names ``source`` and the field."""
        return _parse(d, source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        return _parse(read_json(path, PlanError, "plan"), str(path))

    def to_dict(self) -> dict:
        d = {
            "format": FORMAT,
            "version": VERSION,
            "input": list(self.input),
            "classes": self.classes,
            "stem": self.stem.to_dict() if self.stem else None,
            "paths": [[b.to_dict() for b in p] for p in self.paths],
            "syncs": [{"after": s.after, "merge": s.merge} for s in self.syncs],
            "head": {"hidden": list(self.hidden)},
        }
        if self.meta:
            d["meta"] = self.meta
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    # -- structure ----------------------------------------------------------
    @property
    def num_paths(self) -> int:
        return len(self.paths)

    @property
    def num_layers(self) -> int:
        return len(self.paths[0])

    def sync_after(self, layer: int) -> Sync | None:
        return next((s for s in self.syncs if s.after == layer), None)

    def stem_shape(self) -> tuple[int, int, int]:
        """(C, H, W) fed to every path."""
        c, h, w = self.input
        if self.stem is None:
            return c, h, w
        for u in lower_block(self.stem.op, c, self.stem.out, self.stem.kernel, self.stem.stride):
            h, w = u.out_hw(h, w)
        return self.stem.out, h, w

    def layer_shapes(self) -> list[LayerShape]:
        return list(self._layer_shapes)

    @cached_property
    def _layer_shapes(self) -> tuple[LayerShape, ...]:
        # Cached: lowering asks per block, and recomputing made loading quadratic in L.
        c, h, w = self.stem_shape()
        shapes = []
        for b in self.paths[0]:
            oh, ow = h, w
            for u in lower_block(b.op, c, b.out, b.kernel, b.stride):
                oh, ow = u.out_hw(oh, ow)
            shapes.append(LayerShape(c, h, w, b.out, oh, ow, b.stride))
            c, h, w = b.out, oh, ow
        return tuple(shapes)

    def head_sizes(self) -> list[tuple[int, int]]:
        """(in, out) of every FC of the head, the final one last."""
        sizes, width = [], self.num_paths * self.paths[0][-1].out
        for n in (*self.hidden, self.classes):
            sizes.append((width, n))
            width = n
        return sizes

    # -- cost ---------------------------------------------------------------
    def cost(self) -> dict[str, int]:
        """Exact MACs, FLOPs (multiplies + adds) and parameters of the plan."""
        macs = flops = params = 0

        def add(c):
            nonlocal macs, flops, params
            macs, flops, params = macs + c[0], flops + c[1], params + c[2]

        c, h, w = self.input
        if self.stem:
            add(block_cost(self.stem.op, c, self.stem.out, self.stem.kernel, self.stem.stride, h, w))
        for l, s in enumerate(self.layer_shapes()):
            for p in self.paths:
                b = p[l]
                add(block_cost(b.op, s.in_c, s.out_c, b.kernel, b.stride, s.h, s.w, b.residual))
            sync = self.sync_after(l)
            if sync:
                add(merge_cost(sync.merge, self.num_paths, s.out_c, s.oh, s.ow))
        for i, o in self.head_sizes():
            add(fc_cost(i, o))
        return {"macs": macs, "flops": flops, "params": params}

    def macs(self) -> int:
        return self.cost()["macs"]

    def params(self) -> int:
        return self.cost()["params"]

    def summary(self) -> str:
        """A readable table: per layer the op of each path and whether a sync follows."""
        P = self.num_paths
        lines = [f"input {self.input}  classes {self.classes}  paths {P}  layers {self.num_layers}"]
        if self.stem:
            lines.append(f"stem      {self.stem.label()} -> {self.stem.out}")
        shapes = self.layer_shapes()
        header = "layer  " + "".join(f"path {p:<10}" for p in range(P)) + "out          sync"
        lines.append(header)
        for l, s in enumerate(shapes):
            cells = "".join(f"{self.paths[p][l].label():<15}" for p in range(P))
            sync = self.sync_after(l)
            out = f"{s.out_c}x{s.oh}x{s.ow}"
            lines.append(f"{l:<7}{cells}{out:<13}{sync.merge if sync else '-'}")
        lines.append(f"head      avgpool -> concat {P}x{shapes[-1].out_c} -> FC {list(self.hidden)} -> {self.classes}")
        c = self.cost()
        lines.append(f"MACs {c['macs']:,}  FLOPs {c['flops']:,}  params {c['params']:,}")
        return "\n".join(lines)


# -- validation ------------------------------------------------------------

def _err(source: str, field: str, msg: str) -> PlanError:
    return PlanError(f"{source}: {field}: {msg}" if source else f"{field}: {msg}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int(d: dict, key: str, where: str, source: str, lo: int = 1, odd: bool = False,
         hi: int = MAX_CHANNELS) -> int:
    if key not in d:
        raise _err(source, f"{where}.{key}", "missing")
    v = d[key]
    if not _is_int(v) or v < lo or (odd and v % 2 == 0):
        kind = "an odd integer" if odd else "an integer"
        raise _err(source, f"{where}.{key}", f"must be {kind} >= {lo}, got {repr(v)[:40]}")
    if v > hi:
        raise _err(source, f"{where}.{key}", f"must be <= {hi}, got {repr(v)[:40]}")
    return v


def _block(d: Any, where: str, source: str, ops: tuple[str, ...] = BLOCK_OPS) -> Block:
    if not isinstance(d, dict):
        raise _err(source, where, f"must be an object with {', '.join(_BLOCK_KEYS)}")
    extra = sorted(set(d) - set(_BLOCK_KEYS))
    if extra:
        raise _err(source, f"{where}.{extra[0]}", f"unknown field (known: {', '.join(_BLOCK_KEYS)})")
    op = d.get("op")
    if op not in ops:
        raise _err(source, f"{where}.op", f"unknown op {op!r} (known: {', '.join(ops)})")
    residual = d.get("residual", False)
    if not isinstance(residual, bool) or (residual and ops is STEM_OPS):
        raise _err(source, f"{where}.residual", f"must be true or false (the stem has none), got {residual!r}")
    return Block(op=op, kernel=_int(d, "kernel", where, source, odd=True, hi=MAX_KERNEL),
                 stride=_int(d, "stride", where, source, hi=MAX_KERNEL), out=_int(d, "out", where, source),
                 residual=residual)


def _parse(d: Any, source: str) -> Plan:
    if not isinstance(d, dict):
        raise _err(source, "plan", "must be a JSON object")
    extra = sorted(set(d) - set(_TOP_KEYS))
    if extra:
        raise _err(source, extra[0], f"unknown field (known: {', '.join(_TOP_KEYS)})")
    if d.get("format") != FORMAT:
        raise _err(source, "format", f"must be {FORMAT!r}, got {d.get('format')!r}")
    if d.get("version") != VERSION or not _is_int(d.get("version")):
        raise _err(source, "version", f"unsupported version {d.get('version')!r} (this reader knows {VERSION})")

    inp = d.get("input")
    if not isinstance(inp, list) or len(inp) != 3 or not all(_is_int(v) and v >= 1 for v in inp):
        raise _err(source, "input", f"must be [channels, height, width] of positive integers, got {repr(inp)[:60]}")
    if inp[0] > MAX_CHANNELS or max(inp[1:]) > MAX_SIDE:
        raise _err(source, "input", f"channels must be <= {MAX_CHANNELS} and sides <= {MAX_SIDE}, got {inp}")
    classes = _int(d, "classes", "plan", source) if "classes" in d else None
    if classes is None:
        raise _err(source, "classes", "missing")
    stem = None if d.get("stem") is None else _block(d["stem"], "stem", source, STEM_OPS)
    if stem is not None and stem.op == "dwconv" and stem.out % inp[0]:
        raise _err(source, "stem.out", f"a dwconv stem needs a multiple of the input channels ({inp[0]}), "
                                       f"got {stem.out}")

    paths = d.get("paths")
    if not isinstance(paths, list) or not paths:
        raise _err(source, "paths", "must be a non-empty list of paths")
    if len(paths) > MAX_PATHS:
        raise _err(source, "paths", f"at most {MAX_PATHS} paths, got {len(paths)}")
    parsed: list[tuple[Block, ...]] = []
    for p, path in enumerate(paths):
        if not isinstance(path, list) or not path:
            raise _err(source, f"paths[{p}]", "must be a non-empty list of blocks")
        if len(path) > MAX_LAYERS:
            raise _err(source, f"paths[{p}]", f"at most {MAX_LAYERS} blocks, got {len(path)}")
        if len(path) != len(paths[0]):
            raise _err(source, f"paths[{p}]", f"has {len(path)} blocks, paths[0] has {len(paths[0])}: all paths need the same length")
        parsed.append(tuple(_block(b, f"paths[{p}][{l}]", source) for l, b in enumerate(path)))
    L = len(parsed[0])
    for p in range(1, len(parsed)):
        for l in range(L):
            for key in ("stride", "out"):
                a, b = getattr(parsed[0][l], key), getattr(parsed[p][l], key)
                if a != b:
                    raise _err(source, f"paths[{p}][{l}].{key}",
                               f"is {b} but paths[0][{l}].{key} is {a}: all paths share stride and out at a layer")

    syncs_raw = d.get("syncs", [])
    if not isinstance(syncs_raw, list):
        raise _err(source, "syncs", "must be a list")
    syncs: list[Sync] = []
    for i, s in enumerate(syncs_raw):
        where = f"syncs[{i}]"
        if not isinstance(s, dict) or set(s) - {"after", "merge"}:
            raise _err(source, where, "must be an object with after and merge")
        after = _int(s, "after", where, source, lo=0)
        if after > L - 1:
            raise _err(source, f"{where}.after", f"must be in [0, {L - 1}], got {after}")
        if syncs and after <= syncs[-1].after:
            raise _err(source, f"{where}.after", "syncs must be sorted by after, without duplicates")
        merge = s.get("merge")
        if merge not in MERGES:
            raise _err(source, f"{where}.merge", f"unknown merge {merge!r} (known: {', '.join(MERGES)})")
        syncs.append(Sync(after, merge))

    head = d.get("head", {"hidden": []})
    if not isinstance(head, dict) or set(head) - {"hidden"}:
        raise _err(source, "head", "must be an object with hidden")
    hidden = head.get("hidden", [])
    if (not isinstance(hidden, list) or len(hidden) > MAX_HIDDEN
            or not all(_is_int(h) and 1 <= h <= MAX_CHANNELS for h in hidden)):
        raise _err(source, "head.hidden", f"must be a list of at most {MAX_HIDDEN} integers in [1, {MAX_CHANNELS}], "
                                          f"got {repr(hidden)[:60]}")
    meta = d.get("meta", {})
    if not isinstance(meta, dict):
        raise _err(source, "meta", "must be an object")

    # With odd kernels and padding k // 2 no output can be empty: no size check needed.
    plan = Plan(tuple(inp), classes, stem, tuple(parsed), tuple(syncs), tuple(hidden), meta)
    floats = sum(s.out_c * s.oh * s.ow for s in plan.layer_shapes()) * len(parsed)
    if floats > MAX_ACTIVATION_FLOATS:
        raise _err(source, "paths", f"activations of {floats * 4 / 2**30:.1f} GiB exceed the 1 GiB limit")
    return plan
