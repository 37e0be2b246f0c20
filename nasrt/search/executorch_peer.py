"""ExecuTorch (XNNPACK backend) as a bench peer, fp32 and int8: the model file's float net
rebuilt in torch through the one walk of the lowered net, exported and lowered to a .pte;
int8 by PT2E with XNNPACKQuantizer (symmetric per-channel weights) calibrated on nasrt's
calibration images. Here because it needs torch (the runtime side installs without it)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nasrt.contract.lowering import walk
from nasrt.contract.plan import Plan
from nasrt.runtime.peers import Config


class _TorchOps:  # walk()'s steps as torch ops on the float tensors
    def __init__(self, p: dict[str, torch.Tensor]):
        self.p = p

    def conv(self, n, x):
        u = n.unit
        y = F.conv2d(x, self.p[n.prefix + ".weight"], self.p[n.prefix + ".bias"], u.stride, u.kernel // 2, 1, u.groups)
        return F.relu(y) if u.relu else y

    def sum(self, key, xs):
        s = xs[0]
        for x in xs[1:]:
            s = s + x
        return s

    def add(self, key, a, b):
        return F.relu(a + b)

    def concat(self, key, xs):
        return torch.cat(xs, 1)

    def features(self, xs):
        return torch.cat([x.mean((2, 3)) for x in xs], 1)

    def fc(self, fc, h, last):
        y = F.linear(h, self.p[fc.prefix + ".weight"], self.p[fc.prefix + ".bias"])
        return F.relu(y) if fc.relu else y


class FloatNet(torch.nn.Module):
    """The model file's net (BN folded) in torch; its tensors are parameters, so that PT2E
    sees the weights of every conv and linear."""

    def __init__(self, plan: Plan, tensors: dict[str, np.ndarray]):
        super().__init__()
        self.plan = plan
        self.names = {k: f"t{i}" for i, k in enumerate(tensors)}  # parameter names cannot hold dots
        for k, v in tensors.items():
            self.register_parameter(self.names[k], torch.nn.Parameter(
                torch.from_numpy(np.array(v, np.float32)), requires_grad=False))

    def forward(self, x):
        return walk(self.plan, _TorchOps({k: getattr(self, n) for k, n in self.names.items()}), x)


def write_pte(path, plan: Plan, tensors: dict[str, np.ndarray], calib_images: np.ndarray | None = None) -> None:
    """The .pte of the float net lowered to XNNPACK; with ``calib_images``, its PT2E int8."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    net = FloatNet(plan, tensors).eval()
    example = (torch.zeros(1, *plan.input),)
    if calib_images is not None:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(torch.export.export(net, example).module(), quantizer)
        with torch.no_grad():
            for x in np.asarray(calib_images, np.float32):
                prepared(torch.from_numpy(x[None]))
        net = convert_pt2e(prepared)
    program = to_edge_transform_and_lower(torch.export.export(net, example),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    Path(path).write_bytes(program.buffer)


def executorch_configs(plan: Plan, tensors: dict[str, np.ndarray], calib_images: np.ndarray | None,
                       int8: bool) -> list[Config]:
    """One configuration, 1 thread: ExecuTorch's XNNPACK threadpool is one per process, so
    configurations of other thread counts could not be interleaved in one bench."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    work = tempfile.TemporaryDirectory(prefix="nasrt-executorch-")
    path = Path(work.name) / "net.pte"
    write_pte(path, plan, tensors, calib_images if int8 else None)
    portable_lib._unsafe_reset_threadpool(1)
    method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(x, method=method):
        return method.execute([torch.from_numpy(x)])[0].numpy()

    name = "ExecuTorch int8 1 thread" if int8 else "ExecuTorch 1 thread"
    return [Config(name, run, "executorch", 1, (method, work), "int8" if int8 else "fp32")]
