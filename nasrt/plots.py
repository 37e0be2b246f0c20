"""PNG plots: search curves, a diagram of the derived net, latency bars (matplotlib)."""
from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

from nasrt._io import atomic_write_bytes
from nasrt.contract.plan import Plan

if TYPE_CHECKING:
    from nasrt.runtime.bench import BenchReport
    from nasrt.search.result import EpochRecord


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_png(fig, path) -> None:
    """fig as a PNG at path, written atomically (the reports' and the experiments' plots)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_search(history: list[EpochRecord], path: str | os.PathLike) -> None:
    """Accuracy and CE per epoch; probability of each op per block; P_sync per layer; and,
    where the space searches them, P_res per block and the widest width's P per layer."""
    plt = _plt()
    epochs = [r.epoch for r in history]
    extra = [k for k in ("res_probs", "width_probs") if getattr(history[-1], k) is not None]
    fig, ax = plt.subplots(1, 3 + len(extra), figsize=(5 * (3 + len(extra)), 4))
    ax[0].plot(epochs, [r.train_acc for r in history], "o-", label="train acc (supernet)")
    ax[0].plot(epochs, [r.test_acc for r in history], "s-", label="test acc (supernet)")
    ax[0].plot(epochs, [r.loss_cost for r in history], "^--", label=f"{history[0].cost_key} (norm.)")
    ax[0].plot(epochs, [r.loss_sync for r in history], "v--", label="loss_sync (norm.)")
    ax[0].set(xlabel="epoch", title="search progress", ylim=(0, 1.02))
    ax[0].legend(fontsize=8)
    ops = history[-1].ops
    L, P = len(history[0].op_probs), len(history[0].op_probs[0])
    costly = len(ops) - 1  # the last candidate (by default the most expensive)
    for l in range(L):
        for p in range(P):
            ax[1].plot(epochs, [r.op_probs[l][p][costly] for r in history], marker="o",
                       label=f"layer {l} path {p}")
    ax[1].axhline(1 / len(ops), color="grey", lw=0.8, ls=":")
    ax[1].set(xlabel="epoch", ylabel=f"P({ops[costly]})", title=f"op choice: probability of {ops[costly]}",
              ylim=(0, 1))
    ax[1].legend(fontsize=7, ncol=2)
    for l in range(L):
        ax[2].plot(epochs, [r.sync_probs[l] for r in history], marker="o", label=f"after layer {l}")
    ax[2].axhline(0.5, color="grey", lw=0.8, ls=":")
    ax[2].set(xlabel="epoch", ylabel="P_sync", title="sync points (kept if P_sync > 0.5)", ylim=(0, 1))
    ax[2].legend(fontsize=8)
    for a, key in zip(ax[3:], extra):
        if key == "res_probs":
            for l in range(L):
                for p in range(P):
                    a.plot(epochs, [r.res_probs[l][p] for r in history], marker="o", label=f"layer {l} path {p}")
            a.axhline(0.5, color="grey", lw=0.8, ls=":")
            a.set(xlabel="epoch", ylabel="P_res", title="residual blocks (kept if P_res > 0.5)", ylim=(0, 1))
        else:
            labels = history[-1].widths
            widest = max(range(len(labels)), key=lambda i: float(labels[i][1:]))
            for l in range(L):
                a.plot(epochs, [r.width_probs[l][widest] for r in history], marker="o", label=f"layer {l}")
            a.axhline(1 / len(labels), color="grey", lw=0.8, ls=":")
            a.set(xlabel="epoch", ylabel=f"P({labels[widest]})", title=f"width: probability of {labels[widest]}",
                  ylim=(0, 1))
        a.legend(fontsize=7, ncol=2)
    save_png(fig, path)


def plot_plan(plan: Plan, path: str | os.PathLike, title: str | None = None) -> None:
    """Paths as rows of op boxes, kept sync points as bars joining all paths."""
    plt = _plt()
    from matplotlib.patches import FancyBboxPatch

    P, L = plan.num_paths, plan.num_layers
    fig, ax = plt.subplots(figsize=(2.2 * (L + 2), 1.1 * P + 1.6))
    colors = {}
    palette = ["#8ecae6", "#ffb703", "#90be6d", "#f28482", "#cdb4db", "#b5838d"]
    ys = [P - 1 - p for p in range(P)]

    def box(x, y, text, color, w=1.5, h=0.6):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05",
                                    fc=color, ec="black", lw=0.8))
        ax.text(x, y, text, ha="center", va="center", fontsize=8)

    mid = (P - 1) / 2
    box(0, mid, f"stem\n{plan.stem.label()}/{plan.stem.out}" if plan.stem else "input", "#e9ecef")
    shapes = plan.layer_shapes()
    for l in range(L):
        x = 2 * (l + 1)
        for p in range(P):
            b = plan.paths[p][l]
            key = b.candidate
            colors.setdefault(key, palette[len(colors) % len(palette)])
            prev = 2 * l + 0.75
            ax.plot([prev, x - 0.75], [ys[p], ys[p]], color="black", lw=0.8)
            box(x, ys[p], f"{b.label()}\n{shapes[l].out_c}ch", colors[key])
        sync = plan.sync_after(l)
        if sync:
            ax.add_patch(FancyBboxPatch((x + 0.85, -0.4), 0.3, P - 0.2, boxstyle="round,pad=0.02",
                                        fc="#d62828", ec="none", alpha=0.85))
            ax.text(x + 1.0, P - 0.35, sync.merge, ha="center", fontsize=7, color="#d62828")
    box(2 * (L + 1), mid, f"head\npool+FC {list(plan.hidden)}\n-> {plan.classes}", "#e9ecef", h=0.9)
    for p in range(P):
        ax.plot([2 * L + 0.75, 2 * (L + 1) - 0.75], [ys[p], mid], color="black", lw=0.8)
    c = plan.cost()
    ax.set_title(title or f"derived net: {P} paths, {len(plan.syncs)} sync points, "
                 f"{c['macs'] / 1e6:.2f} M MACs, {c['params'] / 1e3:.1f} k params", fontsize=10)
    ax.set_xlim(-1, 2 * (L + 1) + 1)
    ax.set_ylim(-0.8, P + 0.1)
    ax.set_yticks(ys, [f"path {p}\n(thread {p})" for p in range(P)])
    ax.set_xticks([0] + [2 * (l + 1) for l in range(L)] + [2 * (L + 1)],
                  ["stem"] + [f"layer {l}" for l in range(L)] + ["head"])
    for s in ("top", "right", "left"):
        ax.spines[s].set_visible(False)
    save_png(fig, path)


def plot_latency(report: BenchReport, path: str | os.PathLike) -> None:
    """Median latency bars with p90 whiskers per configuration."""
    plt = _plt()
    names = list(report.configs)
    med = [r.median for r in report.configs.values()]
    p90 = [r.p90 for r in report.configs.values()]
    colors = ["#2a9d8f" if r.engine == "nasrt" else "#adb5bd" for r in report.configs.values()]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(names) + 1.4))
    y = range(len(names))
    ax.barh(y, med, color=colors, xerr=[[0] * len(names), [b - a for a, b in zip(med, p90)]], capsize=3)
    for i, (m, w) in enumerate(zip(med, p90)):  # the label after the whisker, never on it
        ax.text(w + 0.01 * max(p90), i, f" {m:.0f} us", va="center", fontsize=8)
    ax.set_xlim(0, 1.18 * max(p90))
    ax.set_yticks(list(y), names)
    ax.invert_yaxis()
    r = report.ratios
    sub = []
    if r.nasrt_multi_speedup_vs_single is not None:
        sub.append(f"multi vs single {r.nasrt_multi_speedup_vs_single:.2f}x")
    if r.nasrt_vs_best_peer is not None:
        sub.append(f"nasrt / best peer {r.nasrt_vs_best_peer:.2f}")
    host = report.host
    ax.set(xlabel=f"latency, batch 1 (us): median, whisker to p90 -- {host.get('cpu', '')} {host.get('isa', '')}".strip(),
           title="latency per configuration" + (f" ({', '.join(sub)})" if sub else ""))
    save_png(fig, path)
