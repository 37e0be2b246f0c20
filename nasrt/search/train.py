"""Retraining of a derived plan from scratch, evaluation, and export."""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch

from nasrt._io import atomic_write_json, parse_json
from nasrt._progress import progress
from nasrt.contract.latency import searched_precision
from nasrt.contract.modelfile import (
    KEY_CLASS_NAMES,
    KEY_DATASET,
    KEY_INPUT_MEAN,
    KEY_INPUT_STD,
    KEY_LATENCY_PRECISION,
    KEY_TEST_ACCURACY,
    KEY_WORLD_SIZE,
)
from nasrt.contract.plan import Plan
from nasrt.data.dataset import Dataset
from nasrt.errors import ModelError
from nasrt.runtime.runtime import Runtime
from nasrt.search import distributed
from nasrt.search.config import SPEED_ONLY, TrainConfig
from nasrt.search.export import export_model
from nasrt.search.net import build_net
from nasrt.search.training import (
    TrainStep,
    batches,
    evaluate,
    interrupted_message,
    load_checkpoint,
    prefetched,
    resolve_precision,
    save_checkpoint,
    seed_epoch,
    set_threads,
)


def retrain(plan: Plan, ds: Dataset, cfg: TrainConfig, out: Path, resume: bool = False,
            show_progress: bool = True, log=print) -> dict:
    """Trains build_net(plan) from scratch; writes out/metrics.json, out/checkpoint_train.pt,
    out/model.nasrt and out/model.onnx. Returns the metrics."""
    cfg.validate()
    precision = resolve_precision(cfg.precision)
    if tuple(plan.input) != ds.input_shape or plan.classes != ds.classes:
        raise ValueError(f"plan: input {list(plan.input)} / {plan.classes} classes do not match dataset "
                         f"{ds.name} ({list(ds.input_shape)} / {ds.classes} classes)")
    ctx = distributed.init()
    if not ctx.active:
        set_threads()
    elif not ctx.is_main:  # rank 0 alone logs and writes files
        log, show_progress = (lambda *a, **k: None), False
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint_train.pt"
    torch.manual_seed(cfg.seed)
    net = build_net(plan).to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(len(ds.x_train) / cfg.batch_size)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    history, start_epoch, wall = [], 0, 0.0
    saved = False  # this run wrote a checkpoint
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, ("epoch", "net", "opt", "sched", "history", "plan", "config", "wall"))
        if state["plan"] != plan.to_json() or not _same_settings(state["config"], cfg):
            raise ValueError(f"{ckpt_path}: was written for another plan or settings")
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        history = parse_json(state["history"], str(ckpt_path), ModelError, "history")
        start_epoch, wall = state["epoch"], state["wall"]
        log(f"resuming training in {out} after epoch {start_epoch}/{cfg.epochs}")
    elif ckpt_path.exists():
        log(f"{ckpt_path} exists: starting a new training over it (use --resume to continue that one)")

    model = ctx.wrap(net)  # DDP under torchrun: gradients averaged over ranks
    step = TrainStep(model, opt, sched, cfg.label_smoothing, precision=precision, compile=cfg.compile)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.time()
            gen = seed_epoch(cfg.seed, epoch)
            net.train()
            tot, correct, n = 0.0, 0, 0
            data = batches(ds, cfg.batch_size, gen, shard=ctx.shard, erase=cfg.erasing)
            if cfg.loader_thread:
                data = prefetched(data)
            with contextlib.closing(data) as it:  # on Ctrl-C the loader thread stops before the message below
                bar = progress(it, steps_per_epoch, f"train epoch {epoch + 1}/{cfg.epochs}", show_progress)
                for x, y in bar:
                    loss, logits = step(x, y)
                    tot += loss.item() * len(y)
                    correct += int((logits.argmax(1) == y).sum())
                    n += len(y)
                    bar.set_postfix(loss=f"{tot / n:.3f}", acc=f"{correct / n:.3f}")
            train_secs = time.time() - t0  # the data-parallel part; evaluation runs on every rank
            test_acc = evaluate(net, ds.x_test, ds.y_test)
            secs = time.time() - t0
            wall += secs
            history.append({"epoch": epoch + 1, "loss": tot / n, "train_acc": correct / n,
                            "test_acc": test_acc, "seconds": secs, "train_seconds": train_secs})
            if ctx.is_main:
                save_checkpoint(ckpt_path, {"epoch": epoch + 1, "net": net.state_dict(), "opt": opt.state_dict(),
                                            "sched": sched.state_dict(), "history": json.dumps(history),
                                            "plan": plan.to_json(), "config": json.dumps(asdict(cfg)),
                                            "wall": wall})
            saved = True
            ctx.barrier()
            log(f"train epoch {epoch + 1}/{cfg.epochs}: loss {tot / n:.3f} train acc {correct / n:.3f} "
                f"test acc {test_acc:.4f} ({secs:.0f} s)")
    except KeyboardInterrupt:
        log(interrupted_message(ckpt_path, saved))
        raise

    net.eval()
    if not ctx.is_main:  # the weights are the same on every rank: rank 0 exports
        ctx.barrier()
        return {}
    meta = {KEY_DATASET: ds.name, KEY_TEST_ACCURACY: f"{history[-1]['test_acc']:.4f}",
            KEY_WORLD_SIZE: str(ctx.world_size)}
    if ds.mean:  # how raw [0, 1] pixels were normalised, for `nasrt run` on images
        meta.update({KEY_INPUT_MEAN: json.dumps(ds.mean), KEY_INPUT_STD: json.dumps(ds.std)})
    if ds.class_names:
        meta[KEY_CLASS_NAMES] = json.dumps(list(ds.class_names))
    searched = searched_precision(plan)
    if searched:  # the precision its latency was searched in (`nasrt info`, quantize's note)
        meta[KEY_LATENCY_PRECISION] = searched
    export_model(net, out / "model.nasrt", onnx=out / "model.onnx", metadata=meta)
    cost = plan.cost()
    metrics = {
        "dataset": ds.name, "test_accuracy": history[-1]["test_acc"],
        "runtime_test_accuracy": _runtime_accuracy(out / "model.nasrt", ds),
        "macs": cost["macs"], "flops": cost["flops"], "params": cost["params"],
        "epochs": cfg.epochs, "wall_time_s": wall, "seconds_per_epoch": wall / max(1, len(history)),
        "config": asdict(cfg), "precision": precision, "history": history, "world_size": ctx.world_size,
    }
    atomic_write_json(out / "metrics.json", metrics)
    ctx.barrier()
    return metrics


def _same_settings(saved: str, cfg: TrainConfig) -> bool:
    """A checkpoint's settings (JSON) give the same training as cfg: the speed-only fields may differ,
    and a field the checkpoint predates counts as its default (the value that nasrt trained with)."""
    try:
        old = json.loads(saved)
    except (TypeError, ValueError):
        return False
    if not isinstance(old, dict):
        return False
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    now = asdict(cfg)
    return all(old.get(k, defaults[k]) == now[k] for k in now if k not in SPEED_ONLY) and set(old) <= set(now)


def _runtime_accuracy(model_path: Path, ds: Dataset) -> float:
    """Test accuracy of the exported model under the nasrt runtime (checks the export)."""

    rt = Runtime(model_path)
    correct = 0
    for i in range(0, len(ds.x_test), 500):
        correct += int((rt.run(ds.x_test[i:i + 500]).argmax(1) == ds.y_test[i:i + 500]).sum())
    return correct / len(ds.x_test)
