"""The int8 executor's non-conv ops (quantise, dequantise, sum merge, global average pool,
FC), vectorised for the host ISA, bitwise against the numpy oracle nasrt.quant.reference
(docs/FORMATS.md section 6): channel counts and lengths that are not a multiple of any vector
width, pixel strides wider than the channels, ties, and values at and beyond saturation."""
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
