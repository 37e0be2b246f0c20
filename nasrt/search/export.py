"""export_model: BN folding of a trained PlanNet into model.nasrt (and ONNX)."""
from __future__ import annotations

import os

import numpy as np

from nasrt.contract.lowering import conv_units, head_fcs
from nasrt.contract.modelfile import write_model
from nasrt.contract.onnx_graph import write_onnx


def fold_conv_bn(conv, bn) -> tuple[np.ndarray, np.ndarray]:
    """W' = W * g/sqrt(var+eps), b' = beta + (b - mean) * g/sqrt(var+eps), in float64."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else w.new_zeros(w.shape[0])
    scale = bn.weight.detach().double() / (bn.running_var.detach().double() + bn.eps).sqrt()
    w = w * scale.view(-1, 1, 1, 1)
    b = bn.bias.detach().double() + (b - bn.running_mean.detach().double()) * scale
    return w.float().numpy(), b.float().numpy()


def folded_tensors(net) -> dict[str, np.ndarray]:
    """The model-file tensors of a PlanNet (BN folded; names from lowering)."""
    tensors = {}
    for n in conv_units(net.plan):
        m = net.get_submodule(n.prefix)
        tensors[n.prefix + ".weight"], tensors[n.prefix + ".bias"] = fold_conv_bn(m.conv, m.bn)
    for fc, lin in zip(head_fcs(net.plan), net.head):
        tensors[fc.prefix + ".weight"] = lin.weight.detach().float().numpy().copy()
        tensors[fc.prefix + ".bias"] = lin.bias.detach().float().numpy().copy()
    return tensors


def export_model(net, path: str | os.PathLike, onnx: str | os.PathLike | None = None,
                 metadata: dict[str, str] | None = None) -> None:
    """Writes ``net`` (a PlanNet from build_net) as model.nasrt with BN folded,
    and, if ``onnx`` is given, the same folded net as an ONNX file.

    Example:
        >>> export_model(net, "out/model.nasrt", onnx="out/model.onnx")
    """
    tensors = folded_tensors(net)
    write_model(path, net.plan, tensors, metadata)
    if onnx is not None:
        write_onnx(onnx, net.plan, tensors)
