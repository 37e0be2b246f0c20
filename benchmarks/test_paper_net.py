"""pytest-benchmark: every configuration on the paper-sized net, batch 1.

Run: pytest benchmarks --benchmark-columns=median,min,max,stddev
For the ratios measured side by side in one run: python benchmarks/compare_paper_net.py
"""
import numpy as np
import pytest

from nasrt.bench import configurations

NAMES = ["nasrt 1 thread", "nasrt 2 path threads", "ORT seq 1 thread", "ORT seq 2 threads", "ORT parallel 2"]


@pytest.mark.parametrize("config", NAMES)
def test_latency(benchmark, paper_net, config):
    variant, plan, model, onnx = paper_net
    configs = {c.name: c for c in configurations(model, onnx, threads=2)}
    if config not in configs:
        pytest.skip(f"{config} not available on this machine")
    x = np.random.default_rng(0).standard_normal((1, *plan.input)).astype(np.float32)
    run = configs[config].run
    benchmark.group = variant
    benchmark.pedantic(run, args=(x,), rounds=2000, warmup_rounds=200, iterations=1)
