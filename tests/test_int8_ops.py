"""The int8 executor's non-conv ops (quantise, dequantise, sum merge, residual add, global
average pool, FC), vectorised for the host ISA, bitwise against the numpy oracle
nasrt.quant.reference (the residual add: against the rule written out here) (docs/FORMATS.md
section 6): channel counts and lengths that are not a multiple of any vector width, pixel
strides wider than the channels, ties, and values at and beyond saturation."""
import numpy as np
import pytest

from nasrt import _core
from nasrt.quant.reference import quantize_input, requantize

f32 = np.float32
CHANNELS = [1, 3, 8, 13, 16, 17, 33, 64, 67]


def rng(seed):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("pad_in,pad_out", [(0, 0), (5, 3)])
def test_quantize_is_the_oracle(c, pad_in, pad_out):
    r = rng(c * 7 + pad_in)
    for pixels, s, zp in ((1, 0.05, 0), (29, 0.125, 74), (101, 0.0109, 255)):
        x = (r.standard_normal((pixels, c + pad_in)) * 80 * s).astype(f32)
        flat = x.reshape(-1)
        k = len(flat)
        # exact ties (x / s = n + 0.5), the edges of the code range, far beyond it
        flat[: k // 4] = ((r.integers(-300, 300, k // 4) + 0.5) * s).astype(f32)
        edges = [1e6, -1e6, 255 * s, -zp * s, (256 - zp) * s, (255.5 - zp) * s]
        for j, v in enumerate(edges[: pixels * c]):
            x[-1 - j // c, j % c] = v
        got = _core.quantize_op(x, c, s, zp, c + pad_out)
        want = quantize_input(x[:, :c], s, zp)
        np.testing.assert_array_equal(got[:, :c], want, err_msg=f"c={c} pixels={pixels} zp={zp}")
        assert (got[:, c:] == 0xab).all()  # nothing written past a pixel's channels
        assert {0, 255} <= set(np.unique(got[:, :c])) or pixels * c < 2


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("pad_in,pad_out", [(0, 0), (3, 5)])
def test_dequantize_is_the_oracle(c, pad_in, pad_out):
    r = rng(c + pad_in)
    for pixels, s, zp in ((1, 0.05, 0), (37, 0.0312, 131), (64, 1e-3, 255)):
        q = r.integers(0, 256, (pixels, c + pad_in), dtype=np.uint8)
        q[0, 0], q[-1, c - 1] = 0, 255
        got = _core.dequantize_op(q, c, s, zp, c + pad_out)
        want = (q[:, :c].astype(f32) - f32(zp)) * f32(s)
        assert np.array_equal(got[:, :c], want), f"c={c} pixels={pixels}"
        assert (got[:, c:] == f32(-7)).all()


@pytest.mark.parametrize("paths", [1, 2, 3, 4])
def test_sum_merge_is_the_oracle(paths):
    r = rng(paths)
    for n, begin, zx, m, zy in ((1, 0, 0, 0.7, 0), (131, 0, 37, 0.5, 0), (1000, 61, 200, 0.31, 17),
                                (515, 3, 0, 3.9, 250)):
        xs = [r.integers(0, 256, n, dtype=np.uint8) for _ in range(paths)]
        xs[0][:4] = 255  # saturation at the top and (zx > 0) at the bottom
        for x in xs:
            x[4:8] = 0
        got = _core.sum_int8_op(xs, zx, m, zy, begin, n)
        acc = sum(x.astype(np.int64) - zx for x in xs)
        want = requantize(acc[begin:], f32(m), zy, False)
        np.testing.assert_array_equal(got[begin:], want, err_msg=f"n={n} m={m}")
        assert (got[:begin] == 0xab).all()


@pytest.mark.parametrize("c", CHANNELS)
def test_global_avg_pool_is_the_oracle(c):
    r = rng(c)
    for hw, pad, zx, sy_over_sx, zy in ((1, 0, 0, 1.0, 0), (7, 3, 93, 0.5, 11), (49, 16, 0, 0.9, 0),
                                        (200, 1, 255, 0.3, 128)):
        q = r.integers(0, 256, (hw, c + pad), dtype=np.uint8)
        q[:, 0] = 255
        m = f32(1.0) / (f32(hw) * f32(sy_over_sx))  # sx / (float(n) * sy), as the executor has it
        got = _core.gap_int8_op(q, c, zx, float(m), zy)
        acc = (q[:, :c].astype(np.int64) - zx).sum(axis=0)
        np.testing.assert_array_equal(got, requantize(acc, m, zy, False), err_msg=f"hw={hw}")


@pytest.mark.parametrize("n_in", [1, 7, 64, 129])
@pytest.mark.parametrize("n_out", [1, 10, 13])
def test_fc_is_the_oracle(n_in, n_out):
    r = rng(n_in * 31 + n_out)
    for zx, relu, zy in ((0, True, 0), (93, False, 40), (255, False, 0)):
        x = r.integers(0, 256, n_in, dtype=np.uint8)
        w = r.integers(-127, 128, (n_out, n_in), dtype=np.int8)
        x[0], w[0, :] = 255, 127  # one output at the accumulator's extreme
        b = r.integers(-5000, 5000, n_out).astype(np.int32)
        sd = np.sqrt(n_in) * 127 * 128
        m = (48 / sd * (1 + np.arange(n_out) % 5 / 8)).astype(f32)
        acc = b.astype(np.int64) + (x.astype(np.int64) - zx) @ w.astype(np.int64).T
        got = _core.fc_int8_op(x, w, b.tolist(), zx, m.tolist(), zy, relu, False)
        np.testing.assert_array_equal(got, requantize(acc, m, zy, relu), err_msg=f"zx={zx}")
        logits = _core.fc_int8_op(x, w, b.tolist(), zx, m.tolist(), 0, False, True)
        assert logits.dtype == f32 and np.array_equal(logits, acc.astype(np.int32).astype(f32) * m)


def test_fc_refuses_an_accumulator_that_can_overflow():
    w = np.full((2, 70000), 127, np.int8)
    with pytest.raises(RuntimeError, match="int8 fc: an int32 accumulator can overflow"):
        _core.fc_int8_op(np.zeros(70000, np.uint8), w, [0, 0], 0, [1e-3, 1e-3], 0, False, False)


def residual_add_rule(qa, za, ma, qb, zb, mb, zy):
    """The residual add of docs/FORMATS.md section 6, written out: the two float32 products,
    their float32 sum, one round half to even, zy added after, clamped to [zy, 255]."""
    va = (qa.astype(f32) - f32(za)) * f32(ma)
    vb = (qb.astype(f32) - f32(zb)) * f32(mb)
    s = va + vb
    assert s.dtype == f32
    return np.clip(np.rint(s).astype(np.int64) + zy, zy, 255).astype(np.uint8)


@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("pad_a,pad_b,pad_out", [(0, 0, 0), (3, 0, 5), (0, 7, 2)])
def test_residual_add_is_the_rule(c, pad_a, pad_b, pad_out):
    r = rng(c * 13 + pad_a + 2 * pad_b)
    # (za, ma, zb, mb, zy): ties of one product and of the sum (ma, mb powers of 2), saturation
    # at both ends, a wider input scale than the output's (m > 1), an asymmetric output.
    for pixels, za, ma, zb, mb, zy in ((1, 0, 0.5, 0, 0.5, 0), (29, 117, 0.5, 3, 0.25, 0),
                                       (64, 128, 0.731, 125, 1.37, 0), (101, 255, 2.0, 0, 0.0625, 0),
                                       (37, 9, 0.0312, 200, 3.9, 17)):
        a = r.integers(0, 256, (pixels, c + pad_a), dtype=np.uint8)
        b = r.integers(0, 256, (pixels, c + pad_b), dtype=np.uint8)
        a[0, 0], b[0, 0] = 255, 255
        a[-1, c - 1], b[-1, c - 1] = 0, 0
        got = _core.residual_add_int8_op(a, za, ma, b, zb, mb, zy, c, c + pad_out)
        want = residual_add_rule(a[:, :c], za, ma, b[:, :c], zb, mb, zy)
        np.testing.assert_array_equal(got[:, :c], want, err_msg=f"c={c} pixels={pixels} ma={ma} mb={mb}")
        assert (got[:, c:] == 0xab).all()  # nothing written past a pixel's channels


def test_residual_add_ties_and_clamps():
    # za 10, ma 0.5, zb 3, mb 0.25, zy 4: each value hand-computed from the rule.
    a = np.array([[10, 13, 15, 11, 14, 0, 9, 255]], np.uint8).T
    b = np.array([[3, 3, 3, 5, 5, 3, 0, 255]], np.uint8).T
    want = [4,    # 0 + zy
            6,    # 1.5: a tie, to 2
            6,    # 2.5: a tie, to 2
            5,    # 0.5 + 0.5 = 1: one rounding of the sum (rounding each product gives 0)
            6,    # 2.0 + 0.5 = 2.5, a tie of the sum, to 2
            4,    # -5 + zy clamps to zy, not 0
            4,    # -1.25 -> -1, + zy = 3 clamps to zy
            190]  # 122.5 + 63 = 185.5 -> 186, + zy
    got = _core.residual_add_int8_op(a, 10, 0.5, b, 3, 0.25, 4, 1, 1)
    assert got[:, 0].tolist() == want
    assert _core.residual_add_int8_op(np.array([[200]], np.uint8), 0, 2.0, np.array([[0]], np.uint8), 0, 1.0,
                                      0, 1, 1)[0, 0] == 255  # 400 saturates
