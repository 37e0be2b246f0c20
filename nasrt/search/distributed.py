"""Data-parallel search and retraining on torch.distributed (gloo, CPU), as
launched by torchrun: the process group, batch sharding, rank-0-only writes
and the check that every rank derived the same plan. Without torchrun
(WORLD_SIZE unset or 1) every function is a no-op and nothing changes."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch (ranks take every world_size-th sample)."""
        return idx[self.rank::self.world_size] if self.active else idx

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        """DDP around net: gradients of every parameter, weights and decision
        variables alike, are averaged over the ranks in backward."""
        if not self.active:
            return net
        # BN buffers follow rank 0 (broadcast each forward), so every rank holds the same model.
        return torch.nn.parallel.DistributedDataParallel(net)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """t averaged over the ranks (t itself without torchrun)."""
        if not self.active:
            return t
        t = t.clone()
        dist.all_reduce(t)
        return t / self.world_size

    def same_on_all_ranks(self, text: str, what: str) -> None:
        """Raises if `text` differs between ranks (e.g. the derived plan)."""
        if not self.active:
            return
        texts = [None] * self.world_size
        dist.all_gather_object(texts, text)
        differ = [r for r, t in enumerate(texts) if t != texts[0]]
        if differ:
            raise RuntimeError(f"{what} differs between rank 0 and rank {differ[0]}: "
                               "the ranks' decision variables diverged (not written)")


def shutdown() -> None:
    """Leaves the process group, if this process joined one (an exit without it can
    abort a rank in gloo's teardown)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()  # no barrier: on an error path a peer may be gone


def init() -> Context:
    """The context of this process: joins the gloo process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    ctx = Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    # The cores of this machine are shared by its ranks.
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, cores // ctx.local_world_size))
    return ctx
