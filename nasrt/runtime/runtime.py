"""Runtime: loads a model.nasrt and runs it on pinned path threads (C++ core)."""
from __future__ import annotations

import atexit
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

try:
    from nasrt import _core
except ImportError as e:  # e.g. `import nasrt` from inside the checkout picks the source tree
    raise ImportError(f"nasrt's compiled core (nasrt._core) is missing: {e}. Inside the source checkout, "
                      "`import nasrt` finds the sources, which have no compiled core: install with "
                      "`pip install .` (or `pip install -e .`) and run from another directory") from None
from nasrt._io import parse_json
from nasrt.contract.lowering import graph
from nasrt.contract.modelfile import KEY_GRAPH, KEY_PLAN, model_bytes
from nasrt.contract.plan import Plan
from nasrt.errors import ModelError, PlanError

# A daemon thread still inside run() at exit computed on oneDNN code the C++ static destructors
# had freed (SIGSEGV at exit, seen on Zen 3 where oneDNN runs the convs): the atexit callbacks
# run before those destructors, so this closes the gate and waits for the runs in flight.
atexit.register(_core.drain_runs, 30.0)

_warned_slow = False


def _warn_if_slow_build() -> None:
    global _warned_slow
    if not _warned_slow and not set(_core.compiled_backends()) & {"onednn", "xnnpack"}:
        _warned_slow = True
        warnings.warn("nasrt was built without oneDNN and XNNPACK: the reference kernels are 10-30x slower. "
                      "apt-get install libdnnl-dev libxnnpack-dev libpthreadpool-dev, then reinstall nasrt",
                      stacklevel=3)


def default_backend() -> str:
    """"auto": every conv on the backend chosen for it (tuning file, else the built-in rule)."""
    return "auto"


def compiled_backends() -> list[str]:
    """Kernel libraries in this build ("onednn", "xnnpack", "reference")."""
    return list(_core.compiled_backends())


def available_cores() -> list[int]:
    """Cores this process may run on."""
    return list(_core.available_cores())


def lower_to_netspec(plan: Plan, tensors: dict[str, np.ndarray]) -> _core.NetSpec:
    """The plan with its folded tensors as the C++ executor's NetSpec, through the
    same graph reader as model files (lowering.graph is the one lowering)."""
    t = {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}
    return _core.netspec_from_graph(json.dumps(graph(plan)), t)


class Runtime:
    """Runs a model.nasrt with one thread per path (late threads' ops taken over, kept sync points joining the paths).

    Args:
        path: the model file.
        threads: threads to run on; None = min(paths, available cores). 1 runs
            every path one after another on the calling thread (single-core).
        cores: cores to pin thread slots to; slot 0 is the calling thread and
            is never pinned, slot t >= 1 is a persistent worker pinned to
            cores[t]. Default: the process's available cores in order.
        backend: "auto" (default: per conv, the tuned or built-in choice among
            the compiled backends), or "onednn", "xnnpack", "reference" for all.
        balance: split convs of the slowest path across all threads where
            that shortens the critical path (default True; False runs each
            path's convs only on its own thread).
        tune: True times every conv on every compiled backend now (a few
            seconds), keeps the fastest and writes ``<model>.tune.json``;
            False (default) uses that file when it matches this model and
            CPU, else the built-in choice (a one-line warning says why a file
            was ignored).
        adapt: measure P threads against the calling thread alone and run
            alone while P threads are slower (a busy core; default True).
            False always uses `threads` (benchmarks of a fixed configuration).

    Example:
        >>> rt = Runtime("model.nasrt")
        >>> logits = rt.run(np.zeros(rt.plan.input, np.float32))  # (1, classes)
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 cores: Sequence[int] | None = None, backend: str | None = None,
                 balance: bool = True, tune: bool = False, adapt: bool = True):
        if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
            raise ModelError(f"path: expected a file path (str or Path), got {type(path).__name__}")
        self.path: Path | None = Path(path)
        _warn_if_slow_build()
        model = _core.load_model(str(self.path))  # native loader: validates file, graph, tensors
        self.tuning_path: Path | None = Path(_core.tuning_path(str(self.path)))
        self._open(model, str(self.path), threads, cores, backend, balance, tune, adapt)

    @classmethod
    def from_plan(cls, plan: Plan, tensors: dict[str, np.ndarray], threads: int | None = None,
                  cores: Sequence[int] | None = None, backend: str | None = None,
                  balance: bool = True, tune: bool = False, adapt: bool = True) -> Runtime:
        """A Runtime of ``plan`` with its folded tensors, built in memory: the bytes a
        model file would hold, read by the same native loader (no file, so no tuning
        file: backend "auto" is the built-in choice, or tune=True timed now)."""
        return cls.from_bytes(model_bytes(plan, tensors), "<plan in memory>", threads, cores, backend, balance,
                              tune, adapt)

    @classmethod
    def from_bytes(cls, data: bytes, name: str, threads: int | None = None, cores: Sequence[int] | None = None,
                   backend: str | None = None, balance: bool = True, tune: bool = False,
                   adapt: bool = True) -> Runtime:
        """A Runtime of a model file's bytes (format 2 or 3), read by the native loader; `name`
        names them in errors. No file, so no tuning file, as from_plan."""
        _warn_if_slow_build()
        rt = cls.__new__(cls)
        rt.path = rt.tuning_path = None
        model = _core.load_model_bytes(data, name)
        rt._open(model, name, threads, cores, backend, balance, tune, adapt)
        return rt

    def _open(self, model, name: str, threads, cores, backend, balance, tune, adapt) -> None:
        self._name = name
        self.metadata = dict(model.metadata)
        self.content_hash = model.content_hash
        if KEY_PLAN not in self.metadata:
            raise ModelError(f"{name}: metadata {KEY_PLAN}: missing")
        try:
            self.plan = Plan.from_dict(parse_json(self.metadata[KEY_PLAN], name, ModelError,
                                                  f"metadata {KEY_PLAN}"), source=f"{name}: {KEY_PLAN}")
        except PlanError as e:
            raise ModelError(str(e)) from None
        # The executor runs the graph while the plan is reported and preprocesses
        # input: they must agree (the data checksum does not cover the metadata).
        stored = parse_json(self.metadata[KEY_GRAPH], name, ModelError, f"metadata {KEY_GRAPH}")
        if stored != json.loads(json.dumps(graph(self.plan))):
            raise ModelError(f"{name}: metadata {KEY_PLAN}: does not match the lowered graph "
                             f"{KEY_GRAPH} (file edited or damaged)")
        P = self.plan.num_paths
        if threads is None:
            threads = max(1, min(P, len(available_cores())))
        if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= P:
            raise ModelError(f"{name}: threads: must be an integer in 1..{P} (the model has {P} paths), got {threads!r}")
        if threads > len(available_cores()):
            warnings.warn(f"threads={threads} but only {len(available_cores())} cores are available: the extra threads "
                          "share cores (their late work is taken over by the others)", stacklevel=3)
        try:
            cores = [int(c) for c in cores] if cores is not None else []
        except (TypeError, ValueError):
            raise ModelError(f"cores: expected a list of core numbers, got {cores!r}") from None
        if cores and len(cores) < threads:
            raise ModelError(f"cores: need one core per thread ({threads}), got {cores}")
        backend = backend or default_backend()
        if backend not in ("auto", "onednn", "xnnpack", "reference"):
            raise ModelError(f"backend: must be auto, onednn, xnnpack or reference, got {backend!r}")
        try:
            # The session applies the tuning policy (C API and Python alike): tune now and
            # write the tuning file, or read it when it matches this model and CPU.
            self._session = _core.Session(model, name, str(self.tuning_path or ""), threads, cores, backend,
                                          balance=bool(balance), tune=bool(tune), adapt=bool(adapt))
        except ModelError:
            raise
        except (ValueError, RuntimeError) as e:  # bad spec; the OS refusing a worker thread
            raise ModelError(f"{name}: {e}") from None
        if self._session.notice:
            warnings.warn(self._session.notice, stacklevel=3)
        self.tuning: list[dict] | None = self._session.tuning  # per-conv timings when tuned now
        # The whole-net check of that tuning against the built-in rule (None: nothing to check).
        self.tuning_net: dict | None = self._session.tuning_net
        self._exec = self._session.executor
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
    def kernels(self) -> dict[str, str]:
        """Backend of every conv, by its tensor name (e.g. {"stem": "onednn", ...})."""
        return dict(self._exec.kernels)

    @property
    def precisions(self) -> dict[str, str]:
        """What every conv computes in, by its tensor name: "fp32", or "int8" (a quantised model's int8 layers)."""
        return dict(self._exec.kernel_precisions)

    @property
    def phases(self) -> int:
        """Phases per sample (stem, split convs, segments, merges): each ends when all its ops are done."""
        return self._exec.phases

    @property
    def pinned_cores(self) -> list[int]:
        """Core of each thread slot; -1 for the (unpinned) calling thread."""
        return list(self._exec.pinned_cores)

    @property
    def taken_over(self) -> int:
        """Ops since load that another thread ran because their own thread was late (its
        core busy, or more threads than cores): a high count means fewer threads may do."""
        return int(self._exec.taken_over)

    @property
    def solo_runs(self) -> int:
        """Samples since load that the calling thread ran alone because the path threads
        were late (busy cores): the runtime falls back to one thread while P threads lose."""
        return int(self._exec.solo_runs)

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
        try:
            self._exec.run(x, x.shape[0], y)
        except (ValueError, RuntimeError) as e:  # non-finite input or logits
            raise ModelError(f"{self._name}: {e}") from None
        return y

    def __repr__(self) -> str:
        return f"Runtime({self._name!r}, paths={self.paths}, threads={self.threads}, backend={self.backend!r})"
