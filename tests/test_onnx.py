"""The exported ONNX file under ONNX Runtime against torch, and its checks."""
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from _helpers import export_random, random_plan, sample_input  # noqa: E402


@pytest.mark.parametrize("seed", range(12))
def test_onnxruntime_matches_torch(seed, tmp_path):
    plan = random_plan(random.Random(2000 + seed), residual=True)
    net, _, onnx_path = export_random(plan, tmp_path, seed, onnx=True)
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model)
    x = sample_input(plan, n=2, seed=seed)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x})[0]
    assert np.abs(y - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1e-6)
