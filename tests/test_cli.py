"""The nasrt command end to end on synthetic data, and its errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from nasrt.cli import main  # noqa: E402


def nasrt(*args, check=True, cwd=None):
    # cwd away from the source tree, so the installed nasrt (with _core) is imported.
    r = subprocess.run([sys.executable, "-m", "nasrt.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=600, cwd=cwd or "/")
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_search_then_train_smoke(tmp_path):
    out = tmp_path / "run"
    r = nasrt("search", "--dataset", "synthetic", "--out", out, "--epochs", "2", "--channels", "4,8",
              "--quiet", "--seed", "1")
    assert "MACs" in r.stdout
    for f in ("plan.json", "space.json", "search_log.jsonl", "checkpoint_search.pt"):
        assert (out / f).is_file(), f
    log = [json.loads(l) for l in (out / "search_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and {"ce", "train_acc", "loss_ops", "loss_sync", "op_probs", "sync_probs"} <= set(log[0])
    r = nasrt("train", out / "plan.json", "--dataset", "synthetic", "--epochs", "2", "--quiet", "--int8")
    # --int8: the int8 model beside the float one, both measured (accuracy by the int8 rule, latency here).
    q = json.loads((out / "int8.json").read_text())
    assert q["int8"]["model"] == "model.int8.nasrt" and (out / "model.int8.nasrt").is_file()
    assert 0 <= q["int8"]["test_accuracy"] <= 1 and q["int8"]["latency_us"] > 0 and q["fp32"]["latency_us"] > 0
    assert f"int8: test accuracy {q['int8']['test_accuracy']:.4f}" in r.stdout
    from nasrt.runtime.runtime import Runtime
    assert "int8" in Runtime(out / "model.int8.nasrt").precisions.values()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "macs", "params", "epochs", "wall_time_s"):
        assert key in metrics
    # The exported model under the nasrt runtime classifies like the torch net.
    assert abs(metrics["runtime_test_accuracy"] - metrics["test_accuracy"]) <= 1 / 256
    assert (out / "model.nasrt").is_file() and (out / "model.onnx").is_file()

    # info and run on the exported model
    r = nasrt("info", out / "model.nasrt")
    assert "MACs" in r.stdout and "nasrt.dataset: synthetic" in r.stdout
    x = np.zeros((1, 12, 12), np.float32)
    np.save(tmp_path / "x.npy", x)
    r = nasrt("run", out / "model.nasrt", tmp_path / "x.npy", "--top-k", "2")
    assert r.stdout.count("class ") == 2
    try:
        from PIL import Image
    except ImportError:
        return
    Image.fromarray((np.random.default_rng(0).random((20, 20)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    r = nasrt("run", out / "model.nasrt", tmp_path / "x.png", "--top-k", "3")
    assert r.stdout.count("class ") == 3


def test_help_explains_every_command():
    for cmd in ("search", "train", "pipeline", "bench", "run", "info", "predict"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0


@pytest.mark.parametrize("args,message", [
    (["info", "missing.nasrt"], "missing.nasrt: no such model file"),
    (["run", "missing.nasrt", "x.npy"], "no such model file"),
    (["train", "missing_plan.json", "--dataset", "synthetic"], "missing_plan.json: cannot read plan"),
    (["search", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent", "--out", "OUT"], "expected files"),
    (["search", "--dataset", "synthetic", "--ops", "conv4x4", "--out", "OUT"], "unknown candidate op"),
])
def test_cli_errors(tmp_path, capsys, args, message):
    args = [a.replace("OUT", str(tmp_path / "o")) for a in args]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_corrupt_model_path(tmp_path, capsys):
    bad = tmp_path / "bad.nasrt"
    bad.write_bytes(b"garbage" * 10)
    assert main(["info", str(bad)]) == 2
    assert "bad.nasrt: not a readable safetensors model file" in capsys.readouterr().err
