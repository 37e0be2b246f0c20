"""The fp32 net and the bit-exact int8 reference (the oracle of the int8 kernels) in numpy."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nasrt.contract.lowering import walk
from nasrt.contract.ops import ConvUnit
from nasrt.contract.plan import Plan
from nasrt.errors import ModelError
from nasrt.quant.graph import FEATURES, INPUT
from nasrt.quant.params import QuantParams, validate

f32 = np.float32
BATCH = 256  # images per step: bounds the im2col buffers


def conv2d(x: np.ndarray, w: np.ndarray, u: ConvUnit) -> np.ndarray:
    """Cross-correlation of (N, C, H, W) with OIHW ``w``, zero padding k // 2, in float64.
    On integer-valued operands it is exact integer arithmetic: every product and partial
    sum of u8 x s8 values stays far below 2^53."""
    x, w = x.astype(np.float64, copy=False), w.astype(np.float64, copy=False)
    p, k, s, g = u.kernel // 2, u.kernel, u.stride, u.groups
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    oh, ow = u.out_hw(x.shape[2], x.shape[3])
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s][:, :, :oh, :ow]  # N, C, OH, OW, k, k
    n, cg, og = x.shape[0], u.in_c // g, u.out_c // g
    if cg == 1 and g > 1:  # depthwise (with a channel multiplier og)
        return np.einsum("nghwij,goij->ngohw", win, w.reshape(g, og, k, k)).reshape(n, u.out_c, oh, ow)
    out = np.empty((n, u.out_c, oh, ow))
    for j in range(g):
        cols = win[:, j * cg:(j + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, cg * k * k)
        res = cols @ w[j * og:(j + 1) * og].reshape(og, -1).T
        out[:, j * og:(j + 1) * og] = res.reshape(n, oh, ow, og).transpose(0, 3, 1, 2)
    return out


class FloatOps:
    """The fp32 net (float64 accumulation); ``acts`` collects every activation by name."""

    def __init__(self, tensors: dict[str, np.ndarray], collect: bool = False):
        self.t = tensors
        self.acts: dict[str, np.ndarray] | None = {} if collect else None

    def _keep(self, key, y):
        if self.acts is not None:
            self.acts[key] = y
        return y

    def conv(self, n, x):
        y = conv2d(x, self.t[n.prefix + ".weight"], n.unit) + self.t[n.prefix + ".bias"].astype(np.float64)[:, None, None]
        y = y.astype(f32)
        return self._keep(n.prefix, np.maximum(y, 0) if n.unit.relu else y)

    def sum(self, key, xs):
        return self._keep(key, np.sum(xs, axis=0, dtype=f32))

    def add(self, key, a, b):
        return self._keep(key, np.maximum(a + b, f32(0)))

    def concat(self, key, xs):
        return self._keep(key, np.concatenate(xs, axis=1))

    def features(self, xs):
        return self._keep(FEATURES, np.concatenate([x.mean(axis=(2, 3), dtype=np.float64).astype(f32) for x in xs], axis=1))

    def fc(self, fc, h, last):
        y = (h.astype(np.float64) @ self.t[fc.prefix + ".weight"].astype(np.float64).T + self.t[fc.prefix + ".bias"]).astype(f32)
        return self._keep("logits" if last else fc.prefix, np.maximum(y, 0) if fc.relu else y)


def fp32_forward(plan: Plan, tensors: dict[str, np.ndarray], x: np.ndarray, collect: bool = False):
    """Logits of the float net on (N, C, H, W) ``x``; with ``collect``, also every activation
    tensor by name (``nasrt.quant.graph.walk``'s names)."""
    outs: list[np.ndarray] = []
    acts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), BATCH):
        ops = FloatOps(tensors, collect)
        outs.append(walk(plan, ops, np.asarray(x[i:i + BATCH], f32)))
        for k, v in (ops.acts or {}).items():
            acts.setdefault(k, []).append(v)
    logits = np.concatenate(outs)
    return (logits, {k: np.concatenate(v) for k, v in acts.items()}) if collect else logits


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float32 -> u8 by ONNX QuantizeLinear: clamp(rne_f32(x / s) + zp, 0, 255)."""
    q = np.rint(np.asarray(x, f32) / f32(scale))
    return np.clip(q + zero_point, 0, 255).astype(np.uint8)


def _int32(acc: np.ndarray) -> np.ndarray:
    if acc.size and (acc.max() > 2 ** 31 - 1 or acc.min() < -(2 ** 31)):
        raise ModelError("int8 reference: an int32 accumulator overflows (bias or input out of range)")
    return acc.astype(np.int32)


def requantize(acc: np.ndarray, m: np.ndarray, zp: int, relu: bool) -> np.ndarray:
    """clamp(rne_f32(float32(acc) * M) + zp, relu ? zp : 0, 255): acc int32 (checked), M float32;
    the zero point is added after rounding (oneDNN adds it before: 1 LSB apart at ties)."""
    y = np.rint(_int32(acc).astype(f32) * m) + zp
    return np.clip(y, zp if relu else 0, 255).astype(np.uint8)


class _T:
    """A tensor of the int8 net: u8 codes ``q`` of activation ``key`` or, after an fp32 conv
    whose consumers have not quantised it yet, float values ``f``."""
    __slots__ = ("key", "q", "f")

    def __init__(self, key, q=None, f=None):
        self.key, self.q, self.f = key, q, f


class Int8Ops:
    """The int8 net by the rule in ``int8_reference``; ``acts`` collects every activation's
    u8 codes by name."""

    def __init__(self, qp: QuantParams, tensors: dict[str, np.ndarray] | None, collect: bool = False):
        self.qp, self.t = qp, tensors
        self.acts: dict[str, np.ndarray] | None = {} if collect else None

    def _a(self, key):
        a = self.qp.activations[key]
        return f32(a.scale), a.zero_point

    def _q(self, t: _T) -> np.ndarray:
        if t.q is None:
            t.q = quantize_input(t.f, *self._a(t.key))
        return t.q

    def _f(self, t: _T) -> np.ndarray:
        if t.f is None:
            s, z = self._a(t.key)
            t.f = (t.q.astype(f32) - f32(z)) * s
        return t.f

    def _out(self, key, q):
        if self.acts is not None:
            self.acts[key] = q
        return _T(key, q=q)

    def _layer(self, name, x: _T, compute, relu: bool, last: bool):
        lq = self.qp.layers[name]
        if name in self.qp.fp32:  # float op on the dequantised input; quantised by its consumer
            if self.t is None:
                raise ModelError(f"int8 reference: layer {name!r} is fp32: pass the float tensors")
            v = self._f(x)
            y = compute(v.astype(np.float64), self.t[name + ".weight"])
            y = (y + self.t[name + ".bias"].astype(np.float64).reshape(-1, *[1] * (v.ndim - 2))).astype(f32)
            y = np.maximum(y, 0) if relu else y
            if last:
                return y
            t = _T(name, f=y)
            if self.acts is not None:
                self.acts[name] = self._q(t)
            return t
        sx, zx = self._a(x.key)
        acc = compute(self._q(x).astype(np.float64) - zx, lq.weight).astype(np.int64)
        acc += lq.bias.astype(np.int64).reshape(-1, *[1] * (acc.ndim - 2))
        shape = (-1, *[1] * (acc.ndim - 2))
        if last:  # logits stay float: float32(acc) * float32(sx * sw[c])
            return _int32(acc).astype(f32) * (sx * lq.scale).reshape(shape)
        sy, zy = self._a(name)
        m = (sx * lq.scale / sy).reshape(shape)
        return self._out(name, requantize(acc, m, zy, relu))

    def conv(self, n, x):
        return self._layer(n.prefix, x, lambda v, w: conv2d(v, w, n.unit), n.unit.relu, last=False)

    def sum(self, key, xs):
        qs = [self._q(x) for x in xs]
        s, z = self._a(xs[0].key)  # one scale for all inputs (validated)
        sy, zy = self._a(key)
        acc = np.sum([q.astype(np.int64) - z for q in qs], axis=0)
        return self._out(key, requantize(acc, np.array(s / sy, f32), zy, relu=False))

    def add(self, key, a, b):
        """y = clamp(rne(float32(qa - za) * Ma + float32(qb - zb) * Mb) + zy, zy, 255): each
        product and the sum in float32 (no float64 promotion: every operand is float32)."""
        (sa, za), (sb, zb), (sy, zy) = self._a(a.key), self._a(b.key), self._a(key)
        ma, mb = sa / sy, sb / sy  # float32 / float32
        da = (self._q(a).astype(np.int32) - za).astype(f32)
        db = (self._q(b).astype(np.int32) - zb).astype(f32)
        y = np.rint(da * ma + db * mb) + f32(zy)
        return self._out(key, np.clip(y, zy, 255).astype(np.uint8))

    def concat(self, key, xs):  # the producers already share the concat's (scale, zp)
        return self._out(key, np.concatenate([self._q(x) for x in xs], axis=1))

    def features(self, xs):
        sy, zy = self._a(FEATURES)
        parts = []
        for x in xs:
            q = self._q(x)
            sx, zx = self._a(x.key)
            n = q.shape[2] * q.shape[3]
            acc = q.astype(np.int64).sum(axis=(2, 3)) - zx * n
            parts.append(requantize(acc, np.array(sx / (f32(n) * sy), f32), zy, relu=False))
        return self._out(FEATURES, np.concatenate(parts, axis=1))

    def fc(self, fc, h, last):
        return self._layer(fc.prefix, h, lambda v, w: v @ w.astype(np.float64).T, fc.relu, last)


def int8_reference(plan: Plan, qp: QuantParams, x: np.ndarray, tensors: dict[str, np.ndarray] | None = None,
                   collect: bool = False):
    """Float logits of the int8 net on float32 (N, C, H, W) ``x`` (normalised like the fp32
    net's input). ``tensors`` (the float model) is needed only for the layers in ``qp.fp32``.
    With ``collect``, also every activation's u8 codes by name.

    The rule (docs/FORMATS.md, "int8 arithmetic"; every rne is round half to even of a
    float32 value, every product and quotient is float32, no fused multiply-add):

    - real = s * (q - zp), q u8; weights real = sw[c] * w, w s8 symmetric per output channel.
    - input (and an fp32 layer's output): q = clamp(rne(x / s) + zp, 0, 255).
    - conv / hidden FC: acc[c] = b_q[c] + sum (x - zx) * w[c] in int32 (a padded tap adds
      0, i.e. it is the value zx), M[c] = (sx * sw[c]) / sy, y = clamp(rne(float32(acc) *
      M[c]) + zy, relu ? zy : 0, 255).
    - sum merge (one input scale s, zero point z): acc = sum_p (q_p - z),
      y = clamp(rne(float32(acc) * (s / sy)) + zy, 0, 255).
    - residual add (chain output a, shortcut b: the projection's output or the block input):
      y = clamp(rne(float32(qa - za) * (sa / sy) + float32(qb - zb) * (sb / sy)) + zy, zy, 255).
    - conv1x1 merge: the producers write the concat's (s, zp); the concat copies codes.
    - global average pool of path p (n pixels) into the features' (sy, zy):
      acc = sum (q - zx), y = clamp(rne(float32(acc) * (sx / (float32(n) * sy))) + zy, 0, 255).
    - last FC: logits = float32(acc) * (sx * sw[c]).
    - a layer in fp32: the float op on the dequantised input (s * (q - zp)).
    """
    validate(qp, plan)
    outs: list[np.ndarray] = []
    acts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), BATCH):
        ops = Int8Ops(qp, tensors, collect)
        xb = np.asarray(x[i:i + BATCH], f32)
        t = _T(INPUT, f=xb)
        if ops.acts is not None:
            ops.acts[INPUT] = ops._q(t)
        outs.append(walk(plan, ops, t))
        for k, v in (ops.acts or {}).items():
            acts.setdefault(k, []).append(v)
    logits = np.concatenate(outs)
    return (logits, {k: np.concatenate(v) for k, v in acts.items()}) if collect else logits
