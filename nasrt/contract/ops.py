"""The op vocabulary: each block op lowered to a chain of convs, and its exact cost.

The same names appear in plan.json, in the torch net, the ONNX graph and the
runtime's lowering; a new op is added here once.
"""
from __future__ import annotations

from dataclasses import dataclass

BLOCK_OPS = ("conv", "sepconv")
# The stem may also be a depthwise conv with a channel multiplier (E-DNAS's high-resolution
# stem, e.g. dwconv11x11): cheap at full resolution, so only the stem offers it.
STEM_OPS = BLOCK_OPS + ("dwconv",)
MERGES = ("sum", "conv1x1")


def candidate_name(op: str, kernel: int) -> str:
    """A candidate's name in spaces, latency tables and logs: "conv5x5", "sepconv3x3"."""
    return f"{op}{kernel}x{kernel}"


@dataclass(frozen=True)
class ConvUnit:
    """One conv + BN (+ ReLU): the unit every block lowers to.

    ``name`` is the tensor-name suffix inside the block ("" for a plain conv,
    "dw"/"pw" for the halves of a sepconv).
    """

    name: str
    in_c: int
    out_c: int
    kernel: int
    stride: int
    groups: int = 1
    relu: bool = True

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        pad = self.kernel // 2
        return ((h + 2 * pad - self.kernel) // self.stride + 1,
                (w + 2 * pad - self.kernel) // self.stride + 1)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:  # OIHW
        return (self.out_c, self.in_c // self.groups, self.kernel, self.kernel)

    def macs(self, h: int, w: int) -> int:
        """Multiply-accumulates at input size (h, w)."""
        oh, ow = self.out_hw(h, w)
        return self.kernel ** 2 * (self.in_c // self.groups) * oh * ow * self.out_c

    def flops(self, h: int, w: int) -> int:
        """Multiplies plus adds, paper eq. 7-8: k^2*Di*Wo*Ho*Do + (k^2*Di - 1)*Wo*Ho*Do."""
        oh, ow = self.out_hw(h, w)
        k2d = self.kernel ** 2 * (self.in_c // self.groups)
        return k2d * oh * ow * self.out_c + (k2d - 1) * oh * ow * self.out_c

    def params(self) -> int:  # folded weight + bias
        return self.out_c * (self.in_c // self.groups) * self.kernel ** 2 + self.out_c


def lower_block(op: str, in_c: int, out_c: int, kernel: int, stride: int, residual: bool = False) -> list[ConvUnit]:
    """The conv chain a block op runs as (residual: the last unit without its ReLU, which follows the add)."""
    units = _chain(op, in_c, out_c, kernel, stride)
    if residual:
        last = units[-1]
        units[-1] = ConvUnit(last.name, last.in_c, last.out_c, last.kernel, last.stride, last.groups, relu=False)
    return units


def shortcut_unit(in_c: int, out_c: int, stride: int) -> ConvUnit | None:
    """A residual block's projection: None (the identity) when stride 1 keeps the channels."""
    if stride == 1 and in_c == out_c:
        return None
    return ConvUnit("shortcut", in_c, out_c, 1, stride, relu=False)


def _chain(op: str, in_c: int, out_c: int, kernel: int, stride: int) -> list[ConvUnit]:
    if op == "conv":
        return [ConvUnit("", in_c, out_c, kernel, stride)]
    if op == "sepconv":  # depthwise k x k (stride s) then pointwise 1x1
        return [ConvUnit("dw", in_c, in_c, kernel, stride, groups=in_c),
                ConvUnit("pw", in_c, out_c, 1, 1)]
    if op == "dwconv":  # depthwise k x k with channel multiplier out_c / in_c
        if out_c % in_c:
            raise ValueError(f"dwconv: out ({out_c}) must be a multiple of the input channels ({in_c})")
        return [ConvUnit("", in_c, out_c, kernel, stride, groups=in_c)]
    raise ValueError(f"unknown op {op!r}; known: {', '.join(STEM_OPS)}")


def merge_unit(merge: str, paths: int, channels: int) -> ConvUnit | None:
    """The conv a sync merge runs (None for sum)."""
    if merge == "conv1x1":
        return ConvUnit("", paths * channels, channels, 1, 1)
    if merge == "sum":
        return None
    raise ValueError(f"unknown merge {merge!r}; known: {', '.join(MERGES)}")


def block_cost(op: str, in_c: int, out_c: int, kernel: int, stride: int, h: int, w: int,
               residual: bool = False) -> tuple[int, int, int]:
    """(MACs, FLOPs, params) of a block at input size (h, w); residual adds the
    projection (if any) and the add (out * oh * ow FLOPs)."""
    macs = flops = params = 0
    h0, w0 = h, w
    for u in lower_block(op, in_c, out_c, kernel, stride, residual):
        macs += u.macs(h, w)
        flops += u.flops(h, w)
        params += u.params()
        h, w = u.out_hw(h, w)
    if residual:
        sc = shortcut_unit(in_c, out_c, stride)
        if sc is not None:
            macs, flops, params = macs + sc.macs(h0, w0), flops + sc.flops(h0, w0), params + sc.params()
        flops += out_c * h * w
    return macs, flops, params


def merge_cost(merge: str, paths: int, channels: int, h: int, w: int) -> tuple[int, int, int]:
    """(MACs, FLOPs, params) of a sync merge on P maps of (channels, h, w)."""
    u = merge_unit(merge, paths, channels)
    if u is None:  # (P - 1) adds per element
        return 0, (paths - 1) * channels * h * w, 0
    return u.macs(h, w), u.flops(h, w), u.params()


def fc_cost(in_f: int, out_f: int) -> tuple[int, int, int]:
    """(MACs, FLOPs, params) of an FC layer: O*I multiplies + O*(I-1) adds (eq. 9-10)."""
    return out_f * in_f, out_f * in_f + out_f * (in_f - 1), out_f * in_f + out_f
