"""Training machinery shared by search and retrain: batches, evaluation,
per-epoch seeding (so a resumed run equals an uninterrupted one), checkpoints,
and the retraining step with its speed options (precision, compile, loader thread)."""
from __future__ import annotations

import contextlib
import io
import os
import queue
import random
import threading
from pathlib import Path

import numpy as np
import torch

from nasrt._io import atomic_write_bytes
from nasrt.data.dataset import Dataset
from nasrt.errors import ModelError


def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """All randomness of an epoch derives from (seed, epoch): resuming at an
    epoch boundary replays exactly what an uninterrupted run would do."""
    s = seed * 1_000_003 + epoch
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % (1 << 32))
    return torch.Generator().manual_seed(s)


def batches(ds: Dataset, batch_size: int, gen: torch.Generator, train: bool = True, shard=None,
            erase: float = 0.0):
    """Shuffled, augmented training batches as channels_last tensors. `shard`
    (distributed.Context.shard) keeps this rank's part of every global batch:
    the permutation comes from the epoch's seed, so all ranks agree on it."""
    x_all = torch.from_numpy(ds.x_train)
    y_all = torch.from_numpy(ds.y_train)
    order = torch.randperm(len(x_all), generator=gen)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        if shard is not None:
            idx = shard(idx)
            if len(idx) == 0:  # a last global batch smaller than the world: no rank trains on it
                return
        x = x_all[idx]
        if train:
            x = augment(x, flip=ds.flip, pad=2 if ds.input_shape[1] >= 16 else 1, erase=erase)
        yield x.contiguous(memory_format=torch.channels_last), y_all[idx]


@torch.no_grad()
def evaluate(net: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy of net (eval mode) on (x, y)."""
    was = net.training
    net.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[i:i + batch_size]).contiguous(memory_format=torch.channels_last)
        correct += int((net(xb).argmax(1) == torch.from_numpy(y[i:i + batch_size])).sum())
    net.train(was)
    return correct / max(1, len(x))


def save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, keys: tuple[str, ...] = ()) -> dict:
    """A checkpoint's state; a damaged or foreign file is one ModelError saying what to do."""
    try:
        # weights_only: tensors and plain containers, never arbitrary objects.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or altered files
        raise ModelError(f"{path}: damaged checkpoint ({type(e).__name__}): start over without --resume, "
                         "or delete it") from None
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise ModelError(f"{path}: not a nasrt checkpoint of this kind (no {missing[0]!r}): start over without "
                         "--resume, or delete it")
    return state


def interrupted_message(ckpt_path: Path, saved: bool) -> str:
    """What to say on Ctrl-C: resume only if this run has written a checkpoint."""
    if saved:
        return (f"\ninterrupted: the checkpoint after the last finished epoch is in {ckpt_path}; "
                "run the same command with --resume to continue")
    return "\ninterrupted before the first epoch finished: nothing to resume, run the command again"


def set_threads() -> None:
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


# -- speed options of the training step (TrainConfig.precision / compile / loader_thread) ----------------

def bf16_hardware() -> str | None:
    """The CPU feature that makes bf16 training worthwhile here ("amx", "avx512_bf16"), or None.
    oneDNN runs bf16 convs without them too, by emulation, slower than fp32: so only these count."""
    cpu = getattr(torch, "cpu", None)
    for name, probe in (("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported")):
        f = getattr(cpu, probe, None)  # private probes of torch's cpuinfo: absent in some builds
        if f is not None and f():
            return name
    return None


def resolve_precision(precision: str) -> str:
    """TrainConfig.precision -> the precision the step runs in: "auto" is bf16 where the CPU has
    native bf16 (AMX or AVX512-BF16), else fp32; an explicit bf16 without it is refused."""
    if precision == "fp32":
        return "fp32"
    hw = bf16_hardware()
    if precision == "auto":
        return "bf16" if hw else "fp32"
    if precision == "bf16" and not hw:
        raise ValueError("precision: bf16 needs a CPU with AMX or AVX512-BF16 (this one has neither; oneDNN "
                         "would emulate it, slower than fp32): use fp32 or auto")
    return precision


class TrainStep:
    """One SGD step of retraining: forward (bf16 autocast with fp32 master weights, or fp32),
    cross entropy in fp32, backward, optimizer and scheduler step. `compile` wraps the model in
    torch.compile (forward and, through AOTAutograd, backward); evaluation uses the plain net."""

    def __init__(self, model, opt, sched, label_smoothing: float, precision: str = "fp32",
                 compile: bool = False):
        self.model = torch.compile(model) if compile else model
        self.opt, self.sched, self.label_smoothing = opt, sched, label_smoothing
        self.bf16 = precision == "bf16"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Trains on (x, y); returns the (detached, fp32) loss and logits."""
        # autocast runs convs and linears in bf16 and keeps BN's parameters, running statistics and
        # mean/variance accumulation in fp32 (CPU batch_norm takes bf16 input with fp32 weights).
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            logits = self.model(x)
        logits = logits.float()  # the loss and its softmax in fp32
        loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return loss.detach(), logits.detach()


_DONE = object()


def prefetched(items, depth: int = 2):
    """Yields what iterator `items` yields, produced by a background thread up to `depth` items
    ahead, so batching and augmentation overlap the training step (torch ops release the GIL).
    The consumer must draw no random numbers from torch's global generator while iterating (the
    retraining step draws none): then the producer's draws happen in the same order as without
    the thread and the batches are bitwise the same. An exception in the producer is re-raised
    here; leaving the loop early (break, Ctrl-C) stops the thread before this returns."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as e:  # noqa: BLE001  handed to the consumer, raised there
            put((_DONE, e))

    t = threading.Thread(target=produce, name="nasrt-loader", daemon=True)
    t.start()
    try:
        while True:
            item, err = q.get()
            if item is _DONE:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        t.join()


def augment(x, flip: bool, pad: int = 2, erase: float = 0.0):
    """Random crop (zero padding `pad`), optional horizontal flip and, with
    probability `erase`, random erasing of one rectangle (2-25% of the image,
    aspect 0.3-3.3, set to 0 = the mean of normalised data) of a torch batch."""
    n, c, h, w = x.shape
    if flip:
        mask = torch.rand(n, device=x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if pad:
        xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (n,))
        ox = torch.randint(0, 2 * pad + 1, (n,))
        rows = (oy[:, None] + torch.arange(h))[:, None, :, None].expand(n, c, h, w + 2 * pad)
        xp = xp.gather(2, rows)
        cols = (ox[:, None] + torch.arange(w))[:, None, None, :].expand(n, c, h, w)
        x = xp.gather(3, cols)
    if erase > 0:
        area = torch.empty(n).uniform_(0.02, 0.25) * h * w
        aspect = torch.exp(torch.empty(n).uniform_(-1.2, 1.2))
        eh = (area * aspect).sqrt().round().clamp(1, h).long()
        ew = (area / aspect).sqrt().round().clamp(1, w).long()
        y0 = (torch.rand(n) * (h - eh + 1)).long()
        x0 = (torch.rand(n) * (w - ew + 1)).long()
        ys, xs = torch.arange(h)[None, :], torch.arange(w)[None, :]
        inside = (((ys >= y0[:, None]) & (ys < (y0 + eh)[:, None]))[:, :, None]
                  & ((xs >= x0[:, None]) & (xs < (x0 + ew)[:, None]))[:, None, :])
        hit = (torch.rand(n) < erase)[:, None, None] & inside
        x = x.masked_fill(hit[:, None], 0.0)
    return x
