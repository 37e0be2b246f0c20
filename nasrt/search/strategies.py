"""The search strategies behind one name each (`--strategy`), used by `nasrt search` and
`nasrt pipeline`: every strategy takes the space, the dataset, the SearchConfig and the
run's Settings, and returns a SearchResult. The checks of their settings live here, so
every caller gets them before any work."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nasrt.contract.plan import Block, Plan, PlanError, Sync
from nasrt.contract.space import SearchSpace
from nasrt.data.dataset import Dataset
from nasrt.search.config import SearchConfig
from nasrt.search.flash import FlashSettings, run_flash
from nasrt.search.gradient import run_search
from nasrt.search.result import SearchResult


@dataclass(frozen=True)
class Settings:
    """How a search runs, beside what it optimises (SearchConfig)."""
    out: Path
    resume: bool = False          # gradient: continue from out's checkpoint
    show_progress: bool = True
    flash: FlashSettings = field(default_factory=FlashSettings)
    log: Callable[[str], None] = print


@dataclass(frozen=True)
class Strategy:
    run: Callable[[SearchSpace, Dataset, SearchConfig, Settings], SearchResult]
    check: Callable[[Settings], None]  # its own settings, before any work


def _gradient(space: SearchSpace, ds: Dataset, cfg: SearchConfig, s: Settings) -> SearchResult:
    return run_search(space, ds, cfg, s.out, resume=s.resume, show_progress=s.show_progress, log=s.log)


def _flash(space: SearchSpace, ds: Dataset, cfg: SearchConfig, s: Settings) -> SearchResult:
    return run_flash(space, ds, cfg, s.out, s.flash.cache, s.flash.samples, s.flash.sample, log=s.log)


# Its names are config.STRATEGIES (torch-free, for the CLI's choices; a test keeps them equal).
REGISTRY: dict[str, Strategy] = {
    "gradient": Strategy(_gradient, lambda s: None),
    "flash": Strategy(_flash, lambda s: s.flash.validate()),
}


def strategy(name: str) -> Strategy:
    if name not in REGISTRY:
        raise ValueError(f"--strategy: must be one of {', '.join(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


def check(name: str, cfg: SearchConfig, settings: Settings) -> None:
    """The strategy's name, the config and the strategy's settings, before any work."""
    strategy(name).check(settings)
    cfg.validate()


def check_space_fits(space: SearchSpace, ds: Dataset) -> None:
    """Every op of the space must make a valid plan on the dataset's input (shapes
    that shrink to nothing, a dwconv stem on the wrong channels): a plan of each op
    with every sync kept, checked by the plan's own validation before the search."""
    bound = space.bind(ds.input_shape, ds.classes)
    for _, (op, k) in bound.plan_ops:
        path = tuple(Block(op, k, s, c) for c, s in zip(bound.channels, bound.strides))
        plan = Plan(tuple(bound.input), bound.classes, bound.stem_block, (path,) * bound.paths,
                    tuple(Sync(l, bound.merge) for l in range(bound.layers)) if bound.paths > 1 else (),
                    tuple(bound.hidden))
        try:
            Plan.from_dict(plan.to_dict(), source=f"space on {ds.name} {list(ds.input_shape)}")
            plan.layer_shapes()
        except PlanError as e:
            raise ValueError(str(e)) from None
        except ValueError as e:
            raise ValueError(f"space on {ds.name} {list(ds.input_shape)}: {e}") from None


def search(name: str, space: SearchSpace, ds: Dataset, cfg: SearchConfig, settings: Settings) -> SearchResult:
    """Runs strategy `name` after its checks and the space's fit to the data."""
    check(name, cfg, settings)
    check_space_fits(space, ds)
    return strategy(name).run(space, ds, cfg, settings)
