"""nasrt: hardware-aware parallel-path NAS and a multicore CPU inference runtime.

The runtime part (Plan, Runtime, model files) needs only numpy and safetensors;
build_net / export_model and the search need the ``nasrt[search]`` extra (torch).
"""
from nasrt.errors import ModelError, PlanError
from nasrt.plan import Block, Plan, Sync

__version__ = "0.2.0"

__all__ = ["Block", "LatencyTable", "ModelError", "Plan", "PlanError", "Runtime", "Sync", "__version__",
           "build_net", "export_model", "load_lut", "predict_latency", "predict_schedule_latency", "profile",
           "read_model", "write_model"]


def __getattr__(name: str):
    # Lazy: importing nasrt must not import torch, nor require the compiled core.
    if name == "Runtime":
        from nasrt.runtime import Runtime
        return Runtime
    if name == "build_net":
        from nasrt.net import build_net
        return build_net
    if name == "export_model":
        from nasrt.export import export_model
        return export_model
    if name in ("load_lut", "LatencyTable"):
        from nasrt import lut
        return getattr(lut, name)
    if name in ("predict_latency", "predict_schedule_latency"):
        from nasrt import predict
        return getattr(predict, name)
    if name == "profile":
        from nasrt.profiling import profile
        return profile
    if name in ("read_model", "write_model"):
        from nasrt import modelfile
        return getattr(modelfile, name)
    raise AttributeError(f"module 'nasrt' has no attribute {name!r}")
