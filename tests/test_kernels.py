"""Every compiled kernel backend against the reference kernels and torch, on randomised shapes."""
import itertools
import random

import numpy as np
import pytest

from nasrt import _core


def torch_conv(x_hwc, w, b, stride, groups, relu):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(x_hwc).permute(2, 0, 1)[None]
    y = torch.nn.functional.conv2d(x, torch.from_numpy(w), torch.from_numpy(b), stride,
                                   w.shape[2] // 2, groups=groups)
    if relu:
        y = torch.relu(y)
    return y[0].permute(1, 2, 0).numpy()


CASES = list(itertools.islice(
    ((k, s, dw, relu) for k in (1, 3, 5, 7) for s in (1, 2) for dw in (False, True)
     for relu in (False, True)), None))


@pytest.mark.parametrize("kernel,stride,depthwise,relu", CASES)
def test_conv_backends_vs_reference_vs_torch(kernel, stride, depthwise, relu):
    rng = random.Random(hash((kernel, stride, depthwise, relu)) & 0xFFFF)
    npr = np.random.default_rng(rng.randint(0, 1 << 30))
    for _ in range(3):
        h, w = rng.randint(1, 17), rng.randint(1, 17)
        cin = rng.randint(1, 13)
        cout = cin if depthwise else rng.randint(1, 13)
        groups = cin if depthwise else 1
        x = npr.standard_normal((h, w, cin)).astype(np.float32)
        wt = npr.standard_normal((cout, cin // groups, kernel, kernel)).astype(np.float32)
        b = npr.standard_normal(cout).astype(np.float32)
        case = f"h={h} w={w} cin={cin} cout={cout} k={kernel} s={stride} groups={groups} relu={relu}"
        ref = _core.conv2d(x, wt, b, stride, groups, relu, "reference")
        expected = torch_conv(x, wt, b, stride, groups, relu)
        np.testing.assert_allclose(ref, expected, atol=1e-4, rtol=1e-4, err_msg=case)
        for backend in _core.compiled_backends():
            fast = _core.conv2d(x, wt, b, stride, groups, relu, backend)
            np.testing.assert_allclose(fast, ref, atol=1e-4, rtol=1e-4, err_msg=f"{backend}: {case}")


def test_bad_backend_name():
    x = np.zeros((4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="backend"):
        _core.conv2d(x, np.zeros((1, 1, 1, 1), np.float32), np.zeros(1, np.float32), 1, 1, False, "cuda")
