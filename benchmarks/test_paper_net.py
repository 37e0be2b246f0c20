"""pytest-benchmark: every configuration on the paper-sized net, batch 1: nasrt on
each kernel backend, and every installed peer runtime.

Run: pytest benchmarks --benchmark-columns=median,min,max,stddev
For the ratios measured side by side in one run: python benchmarks/compare_paper_net.py
"""
import numpy as np
import pytest

import nasrt
from nasrt import _core
from nasrt.runtime.bench import configurations

PEERS = ["ORT seq 1 thread", "ORT seq 2 threads", "ORT parallel 2", "OpenVINO 1 thread", "OpenVINO 2 threads"]
BACKENDS = ["auto", *[b for b in _core.compiled_backends() if b != "reference"]]


def _input(plan):
    return np.random.default_rng(0).standard_normal((1, *plan.input)).astype(np.float32)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nasrt(benchmark, paper_net, backend, threads):
    variant, plan, model, _ = paper_net
    rt = nasrt.Runtime(model, threads=threads, backend=backend)
    benchmark.group = f"{variant}: nasrt"
    benchmark.pedantic(rt.run, args=(_input(plan),), rounds=2000, warmup_rounds=200, iterations=1)


@pytest.mark.parametrize("config", PEERS)
def test_peer(benchmark, paper_net, config):
    variant, plan, model, onnx = paper_net
    configs = {c.name: c for c in configurations(model, onnx, threads=2, peers=("ort", "openvino"),
                                                 say=lambda *_: None)}
    if config not in configs:
        pytest.skip(f"{config} not installed here")
    benchmark.group = f"{variant}: peers"
    benchmark.pedantic(configs[config].run, args=(_input(plan),), rounds=2000, warmup_rounds=200, iterations=1)
