"""Retraining's speed options (TrainConfig.precision / compile / loader_thread): the loader thread
and compile keep the result, bf16 runs the convs in bf16 on fp32 master weights, resume and errors."""
import dataclasses
import json
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nasrt.contract.plan import Block, Plan, Sync  # noqa: E402
from nasrt.data.builtin import load_dataset  # noqa: E402
from nasrt.search import training  # noqa: E402
from nasrt.search.config import TrainConfig  # noqa: E402
from nasrt.search.net import build_net  # noqa: E402
from nasrt.search.train import _same_settings, retrain  # noqa: E402
from nasrt.search.training import TrainStep, prefetched, resolve_precision  # noqa: E402


def small_plan(shape=(1, 12, 12), classes=4) -> Plan:
    paths = tuple((Block("conv", 3, 1, 4), Block("sepconv", 3, 2, 8)) for _ in range(2))
    return Plan(shape, classes, Block("conv", 3, 1, 4), paths, (Sync(1, "conv1x1"),), (8,))


def quiet(**kw):
    return {"show_progress": False, "log": lambda *a: None, **kw}


def test_loader_thread_trains_bitwise_the_same(tmp_path):
    # flips and erasing make augment() draw from torch's global generator in several places per batch
    ds = dataclasses.replace(load_dataset("synthetic"), flip=True)
    plan = small_plan()
    nets, hist = [], []
    for loader in (False, True):
        cfg = TrainConfig(epochs=2, batch_size=64, erasing=0.5, loader_thread=loader)
        m = retrain(plan, ds, cfg, tmp_path / str(loader), **quiet())
        nets.append(torch.load(tmp_path / str(loader) / "checkpoint_train.pt", weights_only=True)["net"])
        hist.append([h["loss"] for h in m["history"]])
        assert m["config"]["loader_thread"] is loader and m["precision"] == "fp32"
    assert hist[0] == hist[1]
    for k, v in nets[0].items():
        assert torch.equal(v, nets[1][k]), k


def test_prefetched_keeps_order_raises_producer_errors_and_stops_its_thread():
    assert list(prefetched(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        yield 2
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for v in prefetched(failing()):
            got.append(v)
    assert got == [1, 2]

    def endless():
        i = 0
        while True:
            yield i
            i += 1

    it = prefetched(endless())
    assert next(it) == 0 and next(it) == 1
    it.close()  # what a break or Ctrl-C in the training loop amounts to
    assert not [t for t in threading.enumerate() if t.name == "nasrt-loader"]


def test_precision_auto_follows_the_hardware_and_bf16_is_refused_without_it(monkeypatch):
    monkeypatch.setattr(training, "bf16_hardware", lambda: None)
    assert resolve_precision("auto") == "fp32" and resolve_precision("fp32") == "fp32"
    with pytest.raises(ValueError, match=r"^precision: bf16 needs a CPU with AMX or AVX512-BF16") as e:
        resolve_precision("bf16")
    assert "\n" not in str(e.value)
    monkeypatch.setattr(training, "bf16_hardware", lambda: "avx512_bf16")
    assert resolve_precision("auto") == "bf16" and resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match=r"^precision: must be one of fp32, bf16, auto, got 'fp16'"):
        TrainConfig(precision="fp16").validate()


def _steps(precision, compile=False, n=3, seed=0):
    plan = small_plan()
    torch.manual_seed(seed)
    net = build_net(plan).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    step = TrainStep(net, opt, sched, 0.1, precision=precision, compile=compile)
    g = torch.Generator().manual_seed(1)
    dtypes = []
    net.stem.conv.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    losses = []
    for _ in range(n):
        x = torch.randn(16, *plan.input, generator=g).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, plan.classes, (16,), generator=g)
        loss, logits = step(x, y)
        assert loss.dtype == torch.float32 and logits.dtype == torch.float32
        losses.append(float(loss))
    return net, losses, dtypes


def test_bf16_step_runs_convs_in_bf16_on_fp32_master_weights():
    net32, l32, d32 = _steps("fp32")
    net16, l16, d16 = _steps("bf16")
    assert set(d32) == {torch.float32} and set(d16) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in net16.state_dict().values() if p.is_floating_point())
    assert all(np.isfinite(l16)) and l16 != l32  # really another precision ...
    np.testing.assert_allclose(l16, l32, rtol=0.05)  # ... of the same training
    w32, w16 = net32.stem.conv.weight, net16.stem.conv.weight
    assert not torch.equal(w32, w16) and torch.allclose(w32, w16, atol=0.02)


@pytest.mark.slow
def test_compiled_step_gives_the_eager_losses():
    _, eager, _ = _steps("fp32", n=4)
    net, compiled, _ = _steps("fp32", compile=True, n=4)
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-5)


def test_resume_ignores_speed_options_and_fills_fields_a_checkpoint_predates(tmp_path):
    old = {"epochs": 15, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-4, "label_smoothing": 0.1,
           "erasing": 0.0, "seed": 0}  # the TrainConfig of nasrt before the speed options
    assert _same_settings(json.dumps(old), TrainConfig())
    assert _same_settings(json.dumps(old), TrainConfig(loader_thread=True, compile=True))
    assert not _same_settings(json.dumps(old), TrainConfig(precision="bf16"))
    assert not _same_settings(json.dumps(old), TrainConfig(seed=1))
    assert not _same_settings(json.dumps({**old, "future_field": 1}), TrainConfig())
    assert not _same_settings("not json", TrainConfig()) and not _same_settings("[1]", TrainConfig())

    ds, plan, log = load_dataset("synthetic"), small_plan(), []
    retrain(plan, ds, TrainConfig(epochs=1), tmp_path, **quiet())
    m = retrain(plan, ds, TrainConfig(epochs=1, loader_thread=True), tmp_path, resume=True, show_progress=False,
                log=log.append)
    assert any(line.startswith("resuming training") for line in log) and m["config"]["loader_thread"]
    with pytest.raises(ValueError, match="was written for another plan or settings"):
        retrain(plan, ds, TrainConfig(epochs=1, erasing=0.2), tmp_path, resume=True, **quiet())


def test_train_command_takes_the_speed_flags(tmp_path):
    import subprocess
    import sys
    small_plan().save(tmp_path / "plan.json")

    def run(*a):  # cwd away from the source tree, so the installed nasrt (with _core) is imported
        return subprocess.run([sys.executable, "-m", "nasrt.cli", "train", tmp_path / "plan.json", "--dataset",
                               "synthetic", "--epochs", "1", "--quiet", "--out", tmp_path / "o", *a],
                              capture_output=True, text=True, timeout=600, cwd="/")

    r = run("--loader-thread", "--precision", "auto")
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["config"]["loader_thread"] and m["config"]["precision"] == "auto"
    assert m["precision"] == resolve_precision("auto")
    r = run("--precision", "fp16")
    assert r.returncode == 2 and "--precision: invalid choice: 'fp16'" in r.stderr
