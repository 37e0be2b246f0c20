"""What a search strategy returns: the derived plan, the files it wrote and, for the
gradient search, one EpochRecord per epoch (a line of OUT/search_log.jsonl). Torch-free."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from nasrt.contract.plan import Plan
from nasrt.errors import NasrtError

# The log's name of the cost term per SearchConfig.cost (the file keeps the names it always had).
COST_KEYS = {"flops": "loss_ops", "latency": "loss_latency"}
OPTIONAL = ("res_probs", "width_probs", "widths")  # EpochRecord fields a log may lack


@dataclass(frozen=True)
class EpochRecord:
    """One search epoch: accuracies, the cost terms and the decision variables after it."""
    epoch: int
    ce: float
    train_acc: float
    test_acc: float
    cost: str                     # which cost the search minimised: "flops" or "latency" (--cost)
    loss_cost: float              # its term: the FLOP term (flops) or the latency loss (latency)
    loss_sync: float              # 0 with --cost latency (the sync cost is part of the latency model)
    expected_latency_us: float | None
    op_probs: list                # [layer][path][choice]
    sync_probs: list              # [layer]
    ops: list[str]                # a label per choice
    tau: float | None             # the Gumbel temperature, None without --gumbel
    seconds: float
    train_seconds: float
    path_losses: list | None      # --feedback: the mean loss per path
    # Optional (logs before them lack them): residual "search": P_res [layer][path]; several
    # widths: P_w [layer][width] and a label per width ("x0.5").
    res_probs: list | None = None
    width_probs: list | None = None
    widths: list | None = None

    @property
    def cost_key(self) -> str:
        """The log's name of the cost term: loss_ops or loss_latency."""
        return COST_KEYS[self.cost]

    def to_dict(self) -> dict:
        """The line of search_log.jsonl: the cost term under its cost's key, in the fields' order."""
        d = asdict(self)
        cost, term = d.pop("cost"), d.pop("loss_cost")
        out = {}
        for k, v in d.items():
            if k in OPTIONAL and v is None:
                continue  # the decision is not in the space: the line is as before
            if k == "loss_sync":
                out[COST_KEYS[cost]] = term
            out[k] = v
        return out

    @classmethod
    def from_dict(cls, d: Any, source: str = "search_log.jsonl") -> EpochRecord:
        """A record from a line of the log; NasrtError names `source` and the field."""
        if not isinstance(d, dict):
            raise NasrtError(f"{source}: an epoch record must be a JSON object, got {type(d).__name__}")
        costs = [c for c, k in COST_KEYS.items() if k in d]
        if len(costs) != 1:
            raise NasrtError(f"{source}: epoch {d.get('epoch', '?')}: needs exactly one of "
                             f"{', '.join(COST_KEYS.values())}")
        values = {"cost": costs[0], "loss_cost": d[COST_KEYS[costs[0]]]}
        for f in fields(cls):
            if f.name not in values:
                if f.name in OPTIONAL and f.name not in d:
                    continue
                if f.name not in d:
                    raise NasrtError(f"{source}: epoch {d.get('epoch', '?')}: {f.name}: missing")
                values[f.name] = d[f.name]
        return cls(**values)


@dataclass(frozen=True)
class SearchResult:
    """A strategy's outcome: the derived plan, its epochs (empty for FLASH, which has
    none) and the files it wrote, for the caller to report."""
    plan: Plan
    history: tuple[EpochRecord, ...]
    files: tuple[Path, ...]
