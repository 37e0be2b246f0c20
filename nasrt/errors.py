"""Exceptions raised by nasrt for bad input (never a crash, never a hang)."""


class ModelError(ValueError):
    """A model file, plan or input that nasrt cannot accept; the message names
    the file and the field (or the expected shape)."""


class PlanError(ModelError):
    """A plan that breaks plan-v1; the message names the field, e.g.
    ``paths[1][2].kernel: must be an odd integer >= 1``."""
