"""Benchmark fixtures: the paper-sized net (random weights) as model + ONNX files."""
import pytest

from nasrt.runtime.bench import paper_sized_plan, write_random_model

VARIANTS = {
    "nosync": dict(syncs=False),
    "allsync": dict(syncs=True),
    "balanced": dict(syncs=False, balanced=True),
}


@pytest.fixture(scope="session", params=list(VARIANTS))
def paper_net(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    plan = paper_sized_plan(**VARIANTS[request.param])
    write_random_model(plan, d / "m.nasrt", seed=0, onnx=d / "m.onnx")
    return request.param, plan, d / "m.nasrt", d / "m.onnx"
