"""SearchSpace: what the search may choose from (serialisable to JSON)."""
from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import asdict, dataclass, field

from nasrt._io import atomic_write_json, read_json
from nasrt.contract.ops import BLOCK_OPS, MERGES, STEM_OPS, candidate_name
from nasrt.contract.plan import (
    MAX_CHANNELS,
    MAX_HIDDEN,
    MAX_KERNEL,
    MAX_LAYERS,
    MAX_PATHS,
    MAX_SIDE,
    Block,
    LayerShape,
    Plan,
)
from nasrt.errors import SpaceError

# Candidate names are "<op><k>x<k>", e.g. conv3x3, sepconv5x5, metaconv7x7.
CANDIDATES = ("conv3x3", "conv5x5", "conv7x7", "sepconv3x3", "sepconv5x5", "sepconv7x7", "metaconv7x7")
# E-DNAS meta-kernel: a search-only candidate. metaconvKxK offers plain convs of sizes 3, 5, ..., K
# (one decision variable each) that the SuperNet runs as one KxK conv of the merged kernel; derive
# emits the chosen plain conv, so plans and model files never contain it.
META_OP = "metaconv"
# ASCII digits and fullmatch: int() would take "٣" and "$" a trailing newline.
_CAND = re.compile(r"(" + "|".join(BLOCK_OPS + (META_OP,)) + r")([0-9]{1,3})x([0-9]{1,3})")
_STEM = re.compile(r"(" + "|".join(STEM_OPS) + r")([0-9]{1,3})x([0-9]{1,3})")


def parse_stem(name: str) -> tuple[str, int] | None:
    """'conv5x5' / 'dwconv11x11' -> (op, k); 'none' -> None."""
    if name == "none":
        return None
    m = _STEM.fullmatch(name) if isinstance(name, str) else None
    if not m or m.group(2) != m.group(3) or int(m.group(2)) % 2 == 0 or int(m.group(2)) > MAX_KERNEL:
        raise SpaceError(f"--stem: expected <op><k>x<k> with op in {', '.join(STEM_OPS)} and odd k "
                         f"(e.g. conv5x5, dwconv11x11) or none, got {name!r}")
    return m.group(1), int(m.group(2))


def parse_candidate(name: str) -> tuple[str, int]:
    """'sepconv5x5' -> ('sepconv', 5)."""
    m = _CAND.fullmatch(name) if isinstance(name, str) else None
    if not m or m.group(2) != m.group(3) or int(m.group(2)) % 2 == 0 or int(m.group(2)) > MAX_KERNEL:
        raise SpaceError(f"unknown candidate op {repr(name)[:40]}; use <op><k>x<k> with op in "
                         f"{', '.join(BLOCK_OPS + (META_OP,))} and odd k <= {MAX_KERNEL}, e.g. {', '.join(CANDIDATES)}")
    if m.group(1) == META_OP and int(m.group(2)) < 3:
        raise SpaceError(f"{name}: a meta-kernel needs k >= 3 (it offers the sizes 3, 5, ..., k)")
    return m.group(1), int(m.group(2))


def expand_candidate(name: str) -> tuple[tuple[str, int], ...]:
    """The plan ops a candidate offers: 'conv5x5' -> (conv, 5); 'metaconv7x7' -> (conv, 3), (conv, 5), (conv, 7)."""
    op, k = parse_candidate(name)
    if op == META_OP:
        return tuple(("conv", size) for size in range(3, k + 1, 2))
    return ((op, k),)


RESIDUAL_MODES = ("none", "search", "all")
MAX_WIDTHS, MAX_WIDTH = 8, 16.0


def width_channels(w: float, channels: int) -> int:
    """A layer's out at width multiplier w: max(1, round(w * channels)), Python's round (half to even)."""
    return max(1, round(w * channels))


def default_strides(layers: int) -> tuple[int, ...]:
    """Stride 1 in the first layer, 2 in every later one (the paper leaves downsampling open)."""
    return (1,) + (2,) * (layers - 1)


@dataclass
class SearchSpace:
    """The SuperNet's space. Defaults are the paper's Table 1 setting."""
    paths: int = 2                                  # paper: 2 parallel paths (P <= cores)
    channels: tuple[int, ...] = (8, 16, 32, 64)      # paper Table 1
    strides: tuple[int, ...] | None = None           # None: default_strides, (1, 2, 2, 2) for the paper's 4 layers
    ops: tuple[str, ...] = ("conv3x3", "conv5x5")    # the paper's experiments
    merge: str = "conv1x1"                          # the paper's experiments use concat + 1x1 conv
    stem_kernel: int | None = 5                      # stem conv 5x5 / 8 (None: no stem)
    stem_out: int = 8
    stem_op: str = "conv"                            # or "dwconv": depthwise, multiplier stem_out / C (E-DNAS)
    hidden: tuple[int, ...] = (64,)                  # head: avgpool, FC 64, FC classes
    input: tuple[int, int, int] | None = None        # from the dataset
    classes: int | None = None                       # from the dataset
    # Residual blocks: "none", "search" (a learned decision per block) or "all" (every block).
    residual: str = "none"
    # Width multipliers of every layer's channels, one decision per layer shared by its paths:
    # a block's out = max(1, round(w * channels[l])). (1.0,): the channels as given.
    widths: tuple[float, ...] = (1.0,)
    candidates: tuple[tuple[str, int], ...] = field(init=False, repr=False, compare=False)
    meta_groups: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.strides is None and isinstance(self.channels, (list, tuple)):
            self.strides = default_strides(len(self.channels))
        self.validate()  # before any conversion: tuple() of a number or a string would mislead
        self.channels, self.strides = tuple(self.channels), tuple(self.strides)
        self.ops, self.hidden = tuple(self.ops), tuple(self.hidden)
        self.widths = tuple(float(w) for w in self.widths)
        if self.input is not None:
            self.input = tuple(self.input)
        # The choices, one decision variable each, as plan ops: a meta-kernel contributes one
        # choice per size. meta_groups: the choice indices whose kernels one merged conv runs.
        self.candidates, groups = (), []
        for o in self.ops:
            choices = expand_candidate(o)
            if parse_candidate(o)[0] == META_OP:
                groups.append(tuple(range(len(self.candidates), len(self.candidates) + len(choices))))
            self.candidates += choices
        self.meta_groups = tuple(groups)

    def validate(self) -> None:
        """Types and ranges of every field (the plan-v1 limits); SpaceError names the field."""
        def bad(field_, msg):
            raise SpaceError(f"space.{field_}: {msg}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def ints(field_, v, lo, hi, min_len=0, max_len=MAX_LAYERS):
            flag = f" (--{field_})"  # the CLI flag of the same name
            if not isinstance(v, (list, tuple)) or not min_len <= len(v) <= max_len:
                bad(field_, f"must be a list of {min_len}..{max_len} integers in [{lo}, {hi}], got {repr(v)[:60]}{flag}")
            for i, x in enumerate(v):
                if not is_int(x) or not lo <= x <= hi:
                    bad(f"{field_}[{i}]", f"must be an integer in [{lo}, {hi}], got {repr(x)[:40]}{flag}")

        if not is_int(self.paths) or not 1 <= self.paths <= MAX_PATHS:
            bad("paths", f"must be an integer in [1, {MAX_PATHS}], got {repr(self.paths)[:40]} (--paths)")
        ints("channels", self.channels, 1, MAX_CHANNELS, min_len=1)
        ints("strides", self.strides, 1, MAX_KERNEL)
        assert self.strides is not None  # __post_init__ filled the default
        if len(self.strides) != len(self.channels):
            bad("strides", f"needs one positive stride per layer ({len(self.channels)})")
        if not isinstance(self.ops, (list, tuple)) or not self.ops:
            bad("ops", "needs at least one candidate op")
        for i, o in enumerate(self.ops):
            try:
                parse_candidate(o)
            except SpaceError as e:
                bad(f"ops[{i}]", str(e))
        if len(set(self.ops)) != len(self.ops):
            bad("ops", "candidates must be unique")
        if not isinstance(self.merge, str) or self.merge not in MERGES:
            bad("merge", f"must be one of {', '.join(MERGES)}, got {repr(self.merge)[:40]}")
        if not isinstance(self.stem_op, str) or self.stem_op not in STEM_OPS:
            bad("stem_op", f"must be one of {', '.join(STEM_OPS)}, got {repr(self.stem_op)[:40]}")
        if self.stem_kernel is not None and (not is_int(self.stem_kernel) or not 1 <= self.stem_kernel <= MAX_KERNEL
                                             or self.stem_kernel % 2 == 0):
            bad("stem_kernel", f"must be an odd integer in [1, {MAX_KERNEL}] or null, got {repr(self.stem_kernel)[:40]}")
        if not is_int(self.stem_out) or not 1 <= self.stem_out <= MAX_CHANNELS:
            bad("stem_out", f"must be an integer in [1, {MAX_CHANNELS}], got {repr(self.stem_out)[:40]} (--stem-out)")
        ints("hidden", self.hidden, 1, MAX_CHANNELS, max_len=MAX_HIDDEN)
        if self.input is not None:
            if (not isinstance(self.input, (list, tuple)) or len(self.input) != 3
                    or not all(is_int(v) and v >= 1 for v in self.input)):
                bad("input", f"must be [channels, height, width] of positive integers or null, got {repr(self.input)[:60]}")
            if self.input[0] > MAX_CHANNELS or max(self.input[1:]) > MAX_SIDE:
                bad("input", f"channels must be <= {MAX_CHANNELS} and sides <= {MAX_SIDE}, got {list(self.input)}")
        if self.classes is not None and (not is_int(self.classes) or not 1 <= self.classes <= MAX_CHANNELS):
            bad("classes", f"must be an integer in [1, {MAX_CHANNELS}] or null, got {repr(self.classes)[:40]}")
        if self.stem_op == "dwconv" and self.input is not None and self.stem_out % self.input[0]:
            bad("stem_out", f"a dwconv stem needs a multiple of the input's {self.input[0]} channels, "
                            f"got {self.stem_out} (--stem-out)")
        if not isinstance(self.residual, str) or self.residual not in RESIDUAL_MODES:
            bad("residual", f"must be one of {', '.join(RESIDUAL_MODES)}, got {repr(self.residual)[:40]} (--residual)")
        if not isinstance(self.widths, (list, tuple)) or not 1 <= len(self.widths) <= MAX_WIDTHS:
            bad("widths", f"must be a list of 1..{MAX_WIDTHS} width multipliers, got {repr(self.widths)[:60]} (--widths)")
        for i, w in enumerate(self.widths):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0 < w <= MAX_WIDTH:
                bad(f"widths[{i}]", f"must be a number in (0, {MAX_WIDTH}], got {repr(w)[:40]} (--widths)")
        if len(set(self.widths)) != len(self.widths):
            bad("widths", f"multipliers must be unique, got {list(self.widths)} (--widths)")
        for i, c in enumerate(self.channels):
            if width_channels(max(self.widths), c) > MAX_CHANNELS:
                bad("widths", f"{max(self.widths):g} x channels[{i}] = {c} exceeds {MAX_CHANNELS} channels (--widths)")
        cores = os.cpu_count() or 1
        if self.paths > cores:
            warnings.warn(f"space.paths = {self.paths} exceeds this machine's {cores} cores: "
                          "the paths cannot all run in parallel here", stacklevel=3)

    @property
    def layers(self) -> int:
        return len(self.channels)

    @property
    def searches_residual(self) -> bool:
        """A residual decision per block (res_logits) is learned."""
        return self.residual == "search"

    def layer_widths(self, layer: int) -> tuple[int, ...]:
        """Layer `layer`'s out at each width choice, in the order of `widths`."""
        return tuple(width_channels(w, self.channels[layer]) for w in self.widths)

    @property
    def max_channels(self) -> tuple[int, ...]:
        """Every layer's out at the largest width: what the SuperNet computes at."""
        return tuple(max(self.layer_widths(l)) for l in range(self.layers))

    def in_widths(self, layer: int) -> tuple[int, ...]:
        """Layer `layer`'s input channels at each width choice of the layer before (layer 0: the stem's, fixed)."""
        if layer > 0:
            return self.layer_widths(layer - 1)
        assert self.input is not None
        return (self.stem_out if self.stem_kernel is not None else self.input[0],)

    def identity_shortcut(self, layer: int) -> bool:
        """A residual block at `layer` has the identity shortcut whatever the widths: stride 1
        and one channel count in and out. Else the SuperNet trains a projection (at the largest
        widths); a derived plan gets the identity wherever its own in and out agree (plan-v1)."""
        ins, outs = set(self.in_widths(layer)), set(self.layer_widths(layer))
        assert self.strides is not None  # __post_init__ filled the default
        return self.strides[layer] == 1 and len(ins) == 1 and ins == outs

    @property
    def width_labels(self) -> tuple[str, ...]:
        """A name per width choice for logs and plots: 'x0.5', 'x1'."""
        return tuple(f"x{w:g}" for w in self.widths)

    @property
    def choice_labels(self) -> tuple[str, ...]:
        """A name per choice for logs and plots: 'conv3x3', 'metaconv7x7[5]'."""
        labels = [candidate_name(op, k) for op, k in self.candidates]
        for g, o in zip(self.meta_groups, (o for o in self.ops if parse_candidate(o)[0] == META_OP)):
            for i in g:
                labels[i] = f"{o}[{self.candidates[i][1]}]"
        return tuple(labels)

    @property
    def plan_ops(self) -> tuple[tuple[str, tuple[str, int]], ...]:
        """The distinct plan ops the choices can derive to, (name, (op, k)): what a latency table profiles."""
        return tuple({candidate_name(*c): c for c in self.candidates}.items())

    @property
    def stem_block(self):
        """The stem every plan of this space has (a conv, stride 1), or None."""
        return Block(self.stem_op, self.stem_kernel, 1, self.stem_out) if self.stem_kernel is not None else None

    def layer_shapes(self, width_idx: tuple[int, ...] | None = None) -> list[LayerShape]:
        """The layers of a bound space: those of any of its plans (every candidate
        keeps the layer's stride and out), inferred by Plan, their one owner.
        width_idx: the width choice per layer (default: the largest width everywhere,
        the SuperNet's shapes; the channels as given in a space of the one width 1)."""
        if self.input is None or self.strides is None:
            raise SpaceError("space: not bound to a dataset's input shape (SearchSpace.bind)")
        op, k = self.candidates[0]
        outs = (self.max_channels if width_idx is None
                else tuple(self.layer_widths(l)[i] for l, i in enumerate(width_idx)))
        path = tuple(Block(op, k, s, c) for c, s in zip(outs, self.strides))
        return Plan(self.input, self.classes or 2, self.stem_block, (path,)).layer_shapes()

    def override(self, **changes) -> SearchSpace:
        """This space with some fields changed, validated. New channels of another
        length without strides of their own take the default strides."""
        d = {**self.to_dict(), **changes}
        if ("strides" not in changes and isinstance(d["channels"], (list, tuple))
                and len(d["strides"]) != len(d["channels"])):
            d["strides"] = None
        return SearchSpace.from_dict(d)

    def bind(self, input_shape, classes: int) -> SearchSpace:
        """This space with the dataset's input shape and class count."""
        d = self.to_dict()
        d.update(input=list(input_shape), classes=int(classes))
        return SearchSpace.from_dict(d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("candidates")
        d.pop("meta_groups")
        # Omitted at their defaults: a space without residual or width choices writes the
        # space.json it always did (older readers, lut.json's space and checkpoints agree).
        if d["residual"] == "none":
            d.pop("residual")
        if tuple(d["widths"]) == (1.0,):
            d.pop("widths")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict, source: str | None = None) -> SearchSpace:
        """A space from its JSON object; SpaceError names `source` (the file) and the field."""
        where = f"{source}: " if source else ""
        if not isinstance(d, dict):
            raise SpaceError(f"{where}space: must be a JSON object, got {type(d).__name__}")
        known = {f for f in cls.__dataclass_fields__ if f not in ("candidates", "meta_groups")}
        extra = set(d) - known
        if extra:
            raise SpaceError(f"{where}space: unknown field {sorted(extra)[0][:40]!r} (known: {', '.join(sorted(known))})")
        try:
            return cls(**d)
        except SpaceError as e:
            if not source:
                raise
            raise SpaceError(f"{where}{e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> SearchSpace:
        return cls.from_dict(read_json(path, SpaceError, "a space.json"), str(path))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())
