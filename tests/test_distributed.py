"""Data-parallel search and retraining under torchrun (gloo on CPU): the same plan
on every rank, gradients equal to the single-process ones, resume after a kill."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")

from _ddp_helpers import first_step_grads, problem  # noqa: E402  (importable by spawned ranks)

NASRT = shutil.which("nasrt") or os.path.join(os.path.dirname(sys.executable), "nasrt")
SEARCH = ["search", "--dataset", "synthetic", "--paths", "2", "--channels", "4,8", "--strides", "1,2", "--quiet"]


def torchrun(args, cwd, timeout=240, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", NASRT, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


def why(r) -> str:
    """A failed torchrun's cause: the ranks' own error lines (torchrun's summary hides them), then the tail."""
    keys = ("Error", "error", "terminate", "what()", "Abort", "gloo")
    lines = [line for line in r.stderr.splitlines() if any(k in line for k in keys)]
    return "\n".join(lines[:30]) + "\n...\n" + r.stderr[-1500:]


def test_search_and_train_under_torchrun_record_world_size(tmp_path):
    r = torchrun([*SEARCH, "--epochs", "2", "--out", str(tmp_path / "s")], tmp_path)
    assert r.returncode == 0, why(r)
    plan = json.loads((tmp_path / "s" / "plan.json").read_text())
    assert plan["meta"]["search"]["world_size"] == 2
    assert r.stdout.count("wrote") == 1  # rank 0 alone reports and writes
    r = torchrun(["train", str(tmp_path / "s" / "plan.json"), "--dataset", "synthetic", "--epochs", "1",
                  "--quiet"], tmp_path)
    assert r.returncode == 0, why(r)
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and (tmp_path / "s" / "model.nasrt").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_first_step_gradients_match_the_single_process_run(tmp_path):
    """DDP averages the gradients of every parameter, weights and decision variables:
    equal to one process averaging the per-shard losses (BN statistics are per shard
    in both, as DDP on CPU has no SyncBatchNorm)."""
    torch.multiprocessing.spawn(first_step_grads, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    x, y, net = problem()
    loss = sum(torch.nn.functional.cross_entropy(net(x[r::2]), y[r::2]) for r in range(2)) / 2
    loss.backward()
    assert float(loss) == pytest.approx(float(ranks[0]["loss"] + ranks[1]["loss"]) / 2, rel=1e-5)
    for name, p in net.named_parameters():
        for r in ranks:  # every rank holds the averaged gradient
            torch.testing.assert_close(r["grads"][name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert any("logits" in n for n, _ in net.named_parameters())  # decision variables are among them


def test_resume_after_a_killed_run_under_torchrun(tmp_path):
    args = [*SEARCH, "--epochs", "3", "--search-limit", "256"]
    ref = torchrun([*args, "--out", str(tmp_path / "ref")], tmp_path)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", NASRT,
           *args, "--out", str(out)]
    p = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 120
    while not (out / "checkpoint_search.pt").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # every rank and the launcher, mid-run
    p.wait()
    assert (out / "checkpoint_search.pt").exists()
    r = torchrun([*args, "--out", str(out), "--resume"], tmp_path)
    assert r.returncode == 0, why(r)
    a = json.loads((tmp_path / "ref" / "plan.json").read_text())
    b = json.loads((out / "plan.json").read_text())
    assert a["paths"] == b["paths"] and a["syncs"] == b["syncs"]
    torch.testing.assert_close(torch.tensor(a["meta"]["search"]["op_probs"]),
                               torch.tensor(b["meta"]["search"]["op_probs"]), rtol=1e-5, atol=1e-7)
