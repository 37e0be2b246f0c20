"""Runtime: loads a model.nasrt and runs it on pinned path threads (C++ core)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from nasrt import _core
from nasrt.errors import ModelError
from nasrt.lowering import Named, block_units, head_fcs, stem_units, sync_units
from nasrt.modelfile import read_model
from nasrt.plan import Plan


def default_backend() -> str:
    return "xnnpack" if _core.xnnpack_compiled() else "reference"


def available_cores() -> list[int]:
    """Cores this process may run on."""
    return list(_core.available_cores())


def _conv_spec(n: Named, t: dict[str, np.ndarray]) -> "_core.ConvSpec":
    u = n.unit
    return _core.ConvSpec(u.in_c, u.out_c, u.kernel, u.stride, u.groups, u.relu,
                          t[n.prefix + ".weight"], t[n.prefix + ".bias"])


def lower_to_netspec(plan: Plan, tensors: dict[str, np.ndarray]) -> "_core.NetSpec":
    """The plan with its folded tensors as the C++ executor's NetSpec."""
    stem = [_conv_spec(n, tensors) for n in stem_units(plan)]
    paths = [[[_conv_spec(n, tensors) for n in block_units(plan, p, l)]
              for l in range(plan.num_layers)] for p in range(plan.num_paths)]
    syncs = [_core.SyncSpec(after, _conv_spec(n, tensors) if n else None)
             for after, n in sorted(sync_units(plan).items())]
    head = [_core.FcSpec(fc.in_f, fc.out_f, fc.relu, tensors[fc.prefix + ".weight"],
                         tensors[fc.prefix + ".bias"]) for fc in head_fcs(plan)]
    return _core.NetSpec(list(plan.input), stem, paths, syncs, head)


class Runtime:
    """Runs a model.nasrt with one thread per path and barriers at kept sync points.

    Args:
        path: the model file.
        threads: threads to run on; None = min(paths, available cores). 1 runs
            every path one after another on the calling thread (single-core).
        cores: cores to pin thread slots to; slot 0 is the calling thread and
            is never pinned, slot t >= 1 is a persistent worker pinned to
            cores[t]. Default: the process's available cores in order.
        backend: "xnnpack" (default when built with it) or "reference".
        balance: split convs of the slowest path across all threads where
            that shortens the critical path (default True; False runs each
            path's convs only on its own thread).

    Example:
        >>> rt = Runtime("model.nasrt")
        >>> logits = rt.run(np.zeros(rt.plan.input, np.float32))  # (1, classes)
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 cores: Sequence[int] | None = None, backend: str | None = None,
                 balance: bool = True):
        self.path = Path(path)
        self.plan, tensors, self.metadata = read_model(self.path)
        P = self.plan.num_paths
        if threads is None:
            threads = max(1, min(P, len(available_cores())))
        if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= P:
            raise ModelError(f"{self.path}: threads: must be an integer in 1..{P} (the model has {P} paths), got {threads!r}")
        cores = list(cores) if cores is not None else []
        if cores and len(cores) < threads:
            raise ModelError(f"cores: need one core per thread ({threads}), got {cores}")
        backend = backend or default_backend()
        try:
            self._exec = _core.Executor(lower_to_netspec(self.plan, tensors), threads, cores, backend,
                                        balance=bool(balance))
        except ValueError as e:
            raise ModelError(f"{self.path}: {e}") from None
        self._shape = tuple(self.plan.input)

    @property
    def paths(self) -> int:
        return self._exec.paths

    @property
    def threads(self) -> int:
        return self._exec.threads

    @property
    def classes(self) -> int:
        return self._exec.classes

    @property
    def backend(self) -> str:
        return self._exec.backend

    @property
    def phases(self) -> int:
        """Barrier-separated phases per sample (stem, split convs, segments, merges)."""
        return self._exec.phases

    @property
    def pinned_cores(self) -> list[int]:
        """Core of each thread slot; -1 for the (unpinned) calling thread."""
        return list(self._exec.pinned_cores)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) for x of shape (N, C, H, W) or (C, H, W), float32.

        A C-contiguous float32 array is read in place; the GIL is released while
        running, and concurrent calls are serialised safely.
        """
        if not isinstance(x, np.ndarray):
            raise ModelError(f"input: expected a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise ModelError(f"input: dtype {x.dtype}, expected float32")
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != self._shape:
            raise ModelError(f"input: shape {list(x.shape)}, expected [N, {', '.join(map(str, self._shape))}] "
                             f"or [{', '.join(map(str, self._shape))}]")
        x = np.ascontiguousarray(x)  # no copy when already C-contiguous
        y = np.empty((x.shape[0], self.classes), np.float32)
        self._exec.run(x, x.shape[0], y)
        return y

    def __repr__(self) -> str:
        return f"Runtime({str(self.path)!r}, paths={self.paths}, threads={self.threads}, backend={self.backend!r})"
