"""The joint search: network weights and decision variables trained together
(one-level) on alpha*CE + beta*(loss_ops + loss_sync); checkpointed every epoch."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from nasrt._io import atomic_write_text, parse_json
from nasrt._progress import progress
from nasrt.contract.latency import predict_latency, table_record
from nasrt.contract.lut import load_lut
from nasrt.contract.space import SearchSpace
from nasrt.data.dataset import Dataset
from nasrt.errors import ModelError
from nasrt.search import distributed
from nasrt.search.budget import check_macs, fit_budget, fit_macs
from nasrt.search.config import SearchConfig
from nasrt.search.cost import (
    budget_penalty,
    expected_latency,
    expected_macs,
    fixed_macs,
    flop_table,
    latency_table,
    loss_latency,
    loss_ops,
    loss_sync,
    total_loss,
)
from nasrt.search.metakernel import feedback_coefficients, feedback_mix, path_losses
from nasrt.search.result import EpochRecord, SearchResult
from nasrt.search.supernet import SuperNet
from nasrt.search.training import (
    batches,
    evaluate,
    interrupted_message,
    load_checkpoint,
    save_checkpoint,
    seed_epoch,
    set_threads,
)


def _optimizers(net: SuperNet, cfg: SearchConfig, steps: int):
    if cfg.preset == "paper":  # the paper: SGD, 1e-4 for weights, 0.1 for decision variables
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=cfg.w_lr or 1e-4)
        a_opt = torch.optim.SGD(net.arch_parameters(), lr=cfg.arch_lr or 0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(w_opt, lambda s: 1.0)
    else:
        # Momentum + cosine for the weights: lr 1e-4 plain SGD barely trains
        # in a few epochs. Adam for the decision variables so their step size
        # does not depend on the loss scale alpha/beta.
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=cfg.w_lr or 0.05, momentum=0.9,
                                nesterov=True, weight_decay=3e-4)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=cfg.arch_lr or 0.01, betas=(0.5, 0.999))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=steps)
    return w_opt, a_opt, sched


def _choice_probs(net: SuperNet) -> dict:
    """The residual and width decisions for the log (None where the space offers none)."""
    sp = net.space
    return {"res_probs": net.res_probs().tolist() if net.res_logits is not None else None,
            "width_probs": net.width_probs().tolist() if net.width_logits is not None else None,
            "widths": list(sp.width_labels) if net.width_logits is not None else None}


def chance_warning(test_acc: float, classes: int) -> str | None:
    """A warning when the SuperNet's test accuracy stayed near chance (less than a tenth
    of the way from 1/classes to 1): its op choices then reflect the cost terms alone."""
    chance = 1.0 / classes
    if test_acc >= chance + 0.1 * (1.0 - chance):
        return None
    return (f"the SuperNet stayed at chance accuracy (test acc {test_acc:.3f}, chance {chance:.3f}): "
            "the derived choices follow the cost terms, not accuracy; search more epochs or more images "
            "(--epochs, --search-limit)")


def run_search(space: SearchSpace, ds: Dataset, cfg: SearchConfig, out: Path, resume: bool = False,
               show_progress: bool = True, log=print) -> SearchResult:
    """Searches, writing out/space.json, out/search_log.jsonl, out/checkpoint_search.pt
    and, at the end, out/plan.json. Returns the derived plan and the epochs' records."""
    cfg.validate()
    ctx = distributed.init()
    if not ctx.active:
        set_threads()
    elif not ctx.is_main:  # rank 0 alone logs and writes files
        log, show_progress = (lambda *a, **k: None), False
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    space = space.bind(ds.input_shape, ds.classes)
    if cfg.budget_macs is not None:
        check_macs(space, cfg.budget_macs)  # before the search's minutes, not after
    ckpt_path, log_path = out / "checkpoint_search.pt", out / "search_log.jsonl"
    if cfg.train_limit:
        ds = dataclasses.replace(ds, x_train=ds.x_train[:cfg.train_limit], y_train=ds.y_train[:cfg.train_limit])

    if cfg.feedback and (not space.meta_groups or space.paths < 2):
        raise ValueError("--feedback: mixes the meta-kernels of parallel paths; needs a metaconv candidate "
                         "in --ops (e.g. metaconv7x7) and --paths >= 2")
    torch.manual_seed(cfg.seed)
    net = SuperNet(space).to(memory_format=torch.channels_last)
    net.keep_pooled = cfg.feedback
    steps_per_epoch = math.ceil(len(ds.x_train) / cfg.batch_size)
    w_opt, a_opt, sched = _optimizers(net, cfg, cfg.epochs * steps_per_epoch)
    table = flop_table(space)
    mac_table = flop_table(space, "macs") if cfg.budget_macs is not None else None
    stem_head_macs = fixed_macs(space)  # the same for every choice: once, not per step
    lat_table = lut = None
    if cfg.lut:
        lut = load_lut(cfg.lut)
        lat_table = latency_table(space, lut)

    def cost_terms():
        """(loss_ops, loss_sync, expected latency in us or None) under the current choices."""
        res = net.res_probs() if space.residual != "none" else None
        widths = net.width_probs()
        lat = (expected_latency(net.op_probs(), net.sync_probs(), lat_table, cfg.lse_tau, res, widths)
               if lat_table else None)
        if cfg.cost == "latency":  # the sync cost is part of the latency model
            return (loss_latency(net.op_probs(), net.sync_probs(), lat_table, cfg.lse_tau, res, widths),
                    torch.zeros(()), lat)
        return loss_ops(net.op_probs(), table, res, widths), loss_sync(net.sync_probs(), table, widths), lat

    history: list[EpochRecord] = []
    start_epoch, saved = 0, False  # saved: this run wrote a checkpoint
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, ("epoch", "net", "w_opt", "a_opt", "sched", "history", "space", "config"))
        if state["space"] != json.dumps(space.to_dict()) or state["config"] != json.dumps(asdict(cfg)):
            raise ValueError(f"{ckpt_path}: was written with another space or settings; "
                             "resume with the same flags or start a new --out directory")
        net.load_state_dict(state["net"])
        w_opt.load_state_dict(state["w_opt"])
        a_opt.load_state_dict(state["a_opt"])
        sched.load_state_dict(state["sched"])
        history = [EpochRecord.from_dict(r, f"{ckpt_path}: history")
                   for r in parse_json(state["history"], str(ckpt_path), ModelError, "history")]
        start_epoch = state["epoch"]
        log(f"resuming {out} after epoch {start_epoch}/{cfg.epochs}")
    elif resume:
        log(f"no checkpoint in {out}: starting from scratch")
    elif ckpt_path.exists():
        log(f"{ckpt_path} exists: starting a new search over it (use --resume to continue that one)")
    if ctx.is_main:
        space.save(out / "space.json")
    model = ctx.wrap(net)  # DDP under torchrun: gradients averaged over ranks

    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.time()
            gen = seed_epoch(cfg.seed, epoch)
            net.gumbel_tau = cfg.tau0 * math.exp(-cfg.tau_decay * epoch) if cfg.gumbel else None
            net.train()
            sums = {"ce": 0.0, "correct": 0, "n": 0}
            bar = progress(batches(ds, cfg.batch_size, gen, shard=ctx.shard), steps_per_epoch,
                           f"search epoch {epoch + 1}/{cfg.epochs}", show_progress)
            for x, y in bar:
                logits = model(x)
                ce = torch.nn.functional.cross_entropy(logits, y)
                l_ops, l_sync, lat = cost_terms()
                loss = total_loss(ce, l_ops, l_sync, cfg.alpha, cfg.beta)
                if cfg.budget_us is not None:
                    loss = loss + cfg.budget_weight * budget_penalty(lat, cfg.budget_us)
                if mac_table is not None:
                    macs = expected_macs(net.op_probs(), net.sync_probs(), mac_table, stem_head_macs,
                                         net.res_probs() if space.residual != "none" else None, net.width_probs())
                    loss = loss + cfg.budget_weight * budget_penalty(macs, cfg.budget_macs)
                w_opt.zero_grad(set_to_none=True)
                a_opt.zero_grad(set_to_none=True)
                loss.backward()
                w_opt.step()
                a_opt.step()
                sched.step()
                if cfg.feedback:
                    with torch.no_grad():
                        path_l = ctx.mean(path_losses(net.pooled, net.head, y))  # the same mix on every rank
                    feedback_mix(net.meta_sets(), feedback_coefficients(path_l))
                    sums["path_loss"] = sums.get("path_loss", 0) + path_l * len(y)
                sums["ce"] += ce.item() * len(y)
                sums["correct"] += int((logits.argmax(1) == y).sum())
                sums["n"] += len(y)
                bar.set_postfix(ce=f"{sums['ce'] / sums['n']:.3f}", acc=f"{sums['correct'] / sums['n']:.3f}")
            train_secs = time.time() - t0  # the data-parallel part; evaluation runs on every rank
            with torch.no_grad():
                l_ops, l_sync, lat = cost_terms()
                rec = EpochRecord(
                    epoch=epoch + 1, ce=sums["ce"] / sums["n"], train_acc=sums["correct"] / sums["n"],
                    test_acc=evaluate(net, ds.x_test, ds.y_test),
                    cost=cfg.cost, loss_cost=float(l_ops), loss_sync=float(l_sync),
                    expected_latency_us=float(lat) if lat is not None else None,
                    op_probs=net.op_probs().tolist(), sync_probs=net.sync_probs()[:, 0].tolist(),
                    ops=list(space.choice_labels), tau=net.gumbel_tau, seconds=time.time() - t0,
                    train_seconds=train_secs,
                    path_losses=(sums["path_loss"] / sums["n"]).tolist() if "path_loss" in sums else None,
                    **_choice_probs(net))
            history.append(rec)
            if ctx.is_main:
                atomic_write_text(log_path, "".join(json.dumps(r.to_dict()) + "\n" for r in history))
                save_checkpoint(ckpt_path, {
                    "epoch": epoch + 1, "net": net.state_dict(), "w_opt": w_opt.state_dict(),
                    "a_opt": a_opt.state_dict(), "sched": sched.state_dict(), "history": json.dumps([r.to_dict() for r in history]),
                    "space": json.dumps(space.to_dict()), "config": json.dumps(asdict(cfg))})
            saved = True
            ctx.barrier()  # no rank runs ahead of the last checkpoint
            log(f"search epoch {epoch + 1}/{cfg.epochs}: ce {rec.ce:.3f} train acc {rec.train_acc:.3f} "
                f"test acc {rec.test_acc:.3f} {rec.cost_key} {rec.loss_cost:.3f} "
                + (f"loss_sync {rec.loss_sync:.3f} " if cfg.cost != "latency" else "")
                + f"({rec.seconds:.0f} s)")
    except KeyboardInterrupt:
        log(interrupted_message(ckpt_path, saved))
        raise

    meta = {"search": {"space": space.to_dict(), "config": asdict(cfg), "dataset": ds.name,
                       "op_probs": net.op_probs().tolist(), "sync_probs": net.sync_probs()[:, 0].tolist(),
                       **{k: v for k, v in _choice_probs(net).items() if v is not None},
                       "world_size": ctx.world_size}}
    warning = chance_warning(history[-1].test_acc, space.classes) if history else None
    if warning:
        import warnings
        warnings.warn(warning, stacklevel=2)
        meta["search"]["warnings"] = [warning]
    plan = net.derive(meta)
    if cfg.budget_macs is not None:
        plan, changes = fit_macs(plan, space, cfg.budget_macs)
        for c in changes:
            log(f"budget {cfg.budget_macs:,.0f} MACs: {c}")
        log(f"derived plan: {plan.macs():,} MACs; budget {cfg.budget_macs:,.0f}")
    if lut is not None:
        threads = lut.threads
        if cfg.budget_us is not None:
            plan, changes = fit_budget(plan, space, lut, threads, cfg.budget_us)
            for c in changes:
                log(f"budget {cfg.budget_us:g} us: {c}")
        meta["search"]["latency"] = table_record(lut, str(cfg.lut))
        meta["search"]["predicted_latency_us"] = {"1": predict_latency(plan, lut, 1),
                                                  str(threads): predict_latency(plan, lut, threads)}
        log(f"predicted {lut.precision} latency (median of many calls; table {cfg.lut}): "
            f"{meta['search']['predicted_latency_us'][str(threads)]:.1f} us "
            f"on {threads} thread{'s' if threads > 1 else ''}, {meta['search']['predicted_latency_us']['1']:.1f} us "
            "on 1" + (f"; budget {cfg.budget_us:g} us" if cfg.budget_us is not None else ""))
        plan = dataclasses.replace(plan, meta=meta)
    ctx.same_on_all_ranks(plan.to_json(), "the derived plan")
    if ctx.is_main:
        plan.save(out / "plan.json")
    ctx.barrier()
    return SearchResult(plan, tuple(history), (out / "plan.json",))
