"""Functions the spawned ranks of test_distributed run: a module on the tests' path,
so a child process imports it by name whatever the install mode."""
import os

import torch


def first_step_grads(rank, world, port, out):
    """One search step of the SuperNet on rank's shard of a fixed global batch, under DDP."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world))
    from nasrt.search import distributed
    ctx = distributed.init()
    x, y, net = problem()
    idx = ctx.shard(torch.arange(len(x)))
    model = ctx.wrap(net)  # kept alive through backward: its hooks do the all-reduce
    loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
    loss.backward()
    torch.save({"loss": loss.detach(), "grads": {n: p.grad for n, p in net.named_parameters()}},
               f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def problem():
    from nasrt.contract.space import SearchSpace
    from nasrt.search.supernet import SuperNet
    torch.manual_seed(0)
    space = SearchSpace(paths=2, channels=(4, 8), strides=(1, 2), hidden=(8,)).bind((1, 8, 8), 3)
    net = SuperNet(space)
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g), net
