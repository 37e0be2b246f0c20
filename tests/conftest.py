"""Shared fixtures (helpers live in _helpers.py)."""
import pytest


@pytest.fixture
def paper_model(tmp_path):
    """The paper-sized net with random weights, as model file + ONNX."""
    from nasrt.runtime.bench import paper_sized_plan, write_random_model

    plan = paper_sized_plan(syncs=True)
    path, onnx = tmp_path / "paper.nasrt", tmp_path / "paper.onnx"
    write_random_model(plan, path, seed=1, onnx=onnx)
    return plan, path, onnx
