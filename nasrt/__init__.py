"""nasrt: hardware-aware parallel-path NAS and a multicore CPU inference runtime.

Packages (docs/DESIGN.md has the map): ``nasrt.contract`` (plan, space, model
file, latency table: numpy only), ``nasrt.data`` (datasets, preprocessing),
``nasrt.runtime`` (the compiled core: Runtime, profiling, bench),
``nasrt.search`` (torch: nets, SuperNet, strategies, training; needs the
``nasrt[search]`` extra). This face holds the contract and the Runtime.
"""
from nasrt.contract.latency import predict_latency
from nasrt.contract.lut import LatencyTable, load_lut
from nasrt.contract.modelfile import read_model, write_model
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.errors import ModelError, PlanError

__version__ = "0.2.0"

__all__ = ["Block", "LatencyTable", "ModelError", "Plan", "PlanError", "Runtime", "Sync", "__version__",
           "load_lut", "predict_latency", "predict_schedule_latency", "profile", "read_model", "write_model"]

_LAZY = {  # importing nasrt must not need the compiled core
    "Runtime": "nasrt.runtime.runtime", "profile": "nasrt.runtime.profile",
    "predict_schedule_latency": "nasrt.runtime.schedule",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nasrt' has no attribute {name!r}")
