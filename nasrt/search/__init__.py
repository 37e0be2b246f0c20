"""The search side: the only package that imports torch. The torch net of a
plan and its BN-folding export, the SuperNet, the cost terms, the search
strategies (gradient, FLASH), budget fitting, retraining, distributed runs.
(``config`` is torch-free: the CLI reads its defaults without torch, so this
face imports nothing until asked.)"""

__all__ = ["build_net", "export_model"]


def __getattr__(name: str):
    if name == "build_net":
        from nasrt.search.net import build_net
        return build_net
    if name == "export_model":
        from nasrt.search.export import export_model
        return export_model
    raise AttributeError(f"module 'nasrt.search' has no attribute {name!r}")
