"""The int8 model of a latency probe (`nasrt profile --precision int8`): quantised as `nasrt
quantize` quantises a model, with fixed activation ranges instead of calibrated ones (the
time does not depend on them)."""
from __future__ import annotations

import numpy as np

from nasrt.contract.plan import Plan
from nasrt.quant.calibrate import default_fp32
from nasrt.quant.graph import INPUT, graph_tensors
from nasrt.quant.modelfile import int8_model_bytes
from nasrt.quant.params import build_params

# The input asymmetric, every other tensor [0, 4].
INPUT_RANGE, ACT_RANGE = (-2.0, 2.0), (0.0, 4.0)


def probe_model_bytes(plan: Plan, tensors: dict[str, np.ndarray], reads_net_input: bool) -> bytes:
    """The int8 model file (format 3) of a probe net. reads_net_input: the probe's input is the
    real net's input, so its convs reading 1-3 channels stay fp32 (nasrt.quant.default_fp32)."""
    ranges = {k: INPUT_RANGE if k == INPUT else ACT_RANGE for g in graph_tensors(plan).groups for k in g}
    fp32 = default_fp32(plan) if reads_net_input else frozenset()
    return int8_model_bytes(plan, tensors, build_params(plan, tensors, ranges, "fixed", 8, fp32), source="probe")
