"""The runtimes a user would deploy instead of nasrt, as bench configurations on
the same net (ONNX, or a .tflite the user brings) and the same input. A peer
that is not installed is skipped with one line saying how to get it."""
from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasrt.errors import ModelError

PEERS = ("ort", "openvino", "litert", "ncnn", "mnn", "ort-int8", "ort-static", "openvino-int8")
# The int8 peers: ORT and OpenVINO on nasrt's own int8 net as QDQ ONNX (nasrt.quant.qdq), and
# ORT on onnxruntime.quantization.quantize_static of the fp32 ONNX (its own int8 net).
INT8_PEERS = ("ort-int8", "ort-static", "openvino-int8")
INSTALL = {
    "ort": "pip install onnxruntime (or nasrt[peers])",
    "openvino": "pip install openvino (or nasrt[peers])",
    "ort-int8": "pip install onnxruntime (or nasrt[peers])",
    "ort-static": "pip install onnxruntime (or nasrt[peers])",
    "openvino-int8": "pip install openvino (or nasrt[peers])",
    "ncnn": "pip install ncnn pnnx (pnnx converts the ONNX file)",
    "mnn": "pip install mnn (its converter extension converts the ONNX file)",
    "litert": "pip install ai-edge-litert, and pass --tflite MODEL.tflite (see README: peers)",
}


@dataclass
class Config:
    name: str
    run: Callable[[np.ndarray], np.ndarray]
    engine: str  # "nasrt", "onnxruntime", "openvino", "litert", "ncnn", "mnn", "executorch"
    threads: int
    keep: Any = field(default=None, repr=False)  # owner of the session (a Runtime for nasrt's configs)
    precision: str = "fp32"  # the arithmetic it runs in: every config must compute what nasrt does


def ort_session(onnx_path: str | os.PathLike, threads: int = 1, parallel: bool = False,
                cores: list[int] | None = None):
    """An ONNX Runtime CPU session: sequential with `threads` intra-op threads
    (workers pinned to cores[1:], the caller unpinned like nasrt's), or
    ORT_PARALLEL with `threads` inter-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if parallel:
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        so.inter_op_num_threads = threads
        so.intra_op_num_threads = 1
    else:
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads
        if threads > 1 and cores and len(cores) >= threads:
            # 1-based logical processor ids, one entry per thread but the caller.
            so.add_session_config_entry("session.intra_op_thread_affinities",
                                        ";".join(str(c + 1) for c in cores[1:threads]))
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def _ort_run(session, x: np.ndarray) -> np.ndarray:
    return session.run(None, {"input": x})[0]


def _ort(onnx_path, threads, cores, label: str = "ORT", precision: str = "fp32") -> list[Config]:
    out = []
    for name, th, par in [(f"{label} seq 1 thread", 1, False), (f"{label} seq {threads} threads", threads, False),
                          (f"{label} parallel {threads}", threads, True)]:
        s = ort_session(onnx_path, th, par, cores)
        out.append(Config(name, functools.partial(_ort_run, s), "onnxruntime", th, s, precision))
    return out


def _ort_int8(qdq_path, threads, cores) -> list[Config]:
    """ORT on nasrt's int8 net as QDQ ONNX: it fuses it to QLinearConv / QLinearAdd /
    QLinearGlobalAveragePool / QGemm (tests/test_qdq.py)."""
    return _ort(qdq_path, threads, cores, "ORT int8", "int8")


def quantize_static_onnx(onnx_path, out_path, images: np.ndarray) -> None:
    """onnxruntime.quantization.quantize_static of the fp32 ONNX, calibrated on ``images``
    (float32 (N, C, H, W), nasrt's calibration images): QDQ, u8 activations, int8 weights
    per output channel (symmetric), MinMax ranges, the logits' FC left with a float output."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, xs):
            self.it = iter({"input": x[None]} for x in xs)

        def get_next(self):
            return next(self.it, None)

    model = onnx.load(str(onnx_path))
    with tempfile.TemporaryDirectory(prefix="nasrt-qstatic-") as tmp:
        src = Path(tmp) / "named.onnx"
        for i, n in enumerate(model.graph.node):  # nodes_to_exclude matches node names
            n.name = n.name or f"n{i}"
        last = [n.name for n in model.graph.node if "logits" in n.output]
        onnx.save(model, str(src))
        quantize_static(str(src), str(out_path), Reader(np.asarray(images, np.float32)), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=last)


def _ort_static(onnx_path, threads, cores, images) -> list[Config]:
    work = tempfile.TemporaryDirectory(prefix="nasrt-qstatic-")
    path = Path(work.name) / "static.onnx"
    quantize_static_onnx(onnx_path, path, images)
    out = _ort(path, threads, cores, "ORT qstatic", "int8")  # quantize_static
    for c in out:
        c.keep = (c.keep, work)
    return out


def _openvino(onnx_path, threads, cores, label: str = "OpenVINO") -> list[Config]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(onnx_path))
    out = []
    for th in sorted({1, threads}):
        # nasrt models are fp32; OpenVINO's default precision is bf16 on CPUs with AVX512-BF16
        # or AMX, which would compare another computation (logits off by ~1e-2). A QDQ model
        # runs its quantised layers in u8/i8 with this hint too.
        compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": th,
                                                     "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"})
        precision = _ov_precision(compiled)
        req = compiled.create_infer_request()  # one reused request, as a deployed app would

        def run(x, req=req):
            req.infer({0: x})
            return req.get_output_tensor(0).data.copy()

        out.append(Config(f"{label} {th} thread{'s' if th > 1 else ''}", run, "openvino", th, (compiled, req),
                          precision))
    return out


def _openvino_int8(qdq_path, threads, cores) -> list[Config]:
    return _openvino(qdq_path, threads, cores, "OpenVINO int8")


_OV_PRECISION = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "u8": "int8", "i8": "int8"}


def _ov_precision(compiled) -> str:
    """What the compiled model's convolutions and FCs run in ("int8/fp32" when mixed)."""
    kinds = set()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) in ("Convolution", "FullyConnected"):
            kinds.add(_OV_PRECISION.get(str(info["runtimePrecision"].astype(str)), "?"))
    return "/".join(sorted(kinds, reverse=True)) or "?"


def _ncnn(onnx_path, threads, cores) -> list[Config]:
    """ncnn on the ONNX file converted by pnnx (its executable, run directly: `import pnnx`
    needs torch), fp32 throughout: pnnx stores fp16 weights unless told fp16=0 (logits off by
    6e-4 on the paper net), and ncnn computes in fp16/bf16 where the CPU can unless turned off."""
    import ncnn
    import onnx

    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pnnx")
    exe = Path(list(spec.submodule_search_locations)[0]) / "pnnx"
    dims = [d.dim_value for d in onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim]
    shape = ",".join(str(d or 1) for d in dims)
    work = tempfile.TemporaryDirectory(prefix="nasrt-ncnn-")
    src = Path(work.name) / "net.onnx"
    src.write_bytes(Path(onnx_path).read_bytes())  # pnnx writes its outputs beside its input
    r = subprocess.run([str(exe), str(src), f"inputshape=[{shape}]", "fp16=0"], capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0 or not (Path(work.name) / "net.ncnn.param").is_file():
        raise RuntimeError(f"pnnx failed: {(r.stderr or r.stdout).strip()[-200:]}")
    out = []
    for th in sorted({1, threads}):
        net = ncnn.Net()
        o = net.opt
        o.num_threads = th
        for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage",
                     "use_bf16_packed"):
            if hasattr(o, flag):
                setattr(o, flag, False)
        net.load_param(str(Path(work.name) / "net.ncnn.param"))
        net.load_model(str(Path(work.name) / "net.ncnn.bin"))

        def run(x, net=net):
            ys = []
            for sample in x:  # ncnn runs one image per extractor
                ex = net.create_extractor()
                ex.input("in0", ncnn.Mat(np.ascontiguousarray(sample)))
                ys.append(np.array(ex.extract("out0")[1]).reshape(-1))
            return np.stack(ys)

        out.append(Config(f"ncnn {th} thread{'s' if th > 1 else ''}", run, "ncnn", th, (net, work)))
    return out


_MNN_CONVERT = ("import sys, _tools; "
                "sys.exit(0 if _tools.mnnconvert(['mnnconvert', '-f', 'ONNX', '--modelFile', sys.argv[1], "
                "'--MNNModel', sys.argv[2], '--bizCode', 'nasrt']) else 1)")


def _mnn(onnx_path, threads, cores) -> list[Config]:
    """MNN on the ONNX file converted by its converter's extension module `_tools`, in a
    subprocess (it prints its progress). Never `MNN.tools`: importing it pip-installs a
    logging SDK and reports a machine id. precision "high" is fp32 (others may use fp16/bf16)."""
    import MNN

    if importlib.util.find_spec("_tools") is None:
        raise ImportError("_tools")
    work = tempfile.TemporaryDirectory(prefix="nasrt-mnn-")
    dst = Path(work.name) / "net.mnn"
    r = subprocess.run([sys.executable, "-c", _MNN_CONVERT, str(onnx_path), str(dst)], capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0 or not dst.is_file():
        raise RuntimeError(f"MNN's converter failed: {(r.stderr or r.stdout).strip()[-200:]}")
    out = []
    for th in sorted({1, threads}):
        it = MNN.Interpreter(str(dst))
        session = it.createSession({"numThread": th, "precision": "high", "backend": "CPU"})
        inp, outp = it.getSessionInput(session), it.getSessionOutput(session)

        def run(x, it=it, session=session, inp=inp, outp=outp):
            ys = []
            for sample in x:  # the session's input is fixed at batch 1
                inp.copyFrom(MNN.Tensor(inp.getShape(), MNN.Halide_Type_Float, np.ascontiguousarray(sample[None]),
                                        MNN.Tensor_DimensionType_Caffe))
                it.runSession(session)
                host = MNN.Tensor(outp.getShape(), MNN.Halide_Type_Float, np.zeros(outp.getShape(), np.float32),
                                  MNN.Tensor_DimensionType_Caffe)
                outp.copyToHostTensor(host)
                ys.append(np.array(host.getNumpyData(), np.float32).reshape(-1))
            return np.stack(ys)

        out.append(Config(f"MNN {th} thread{'s' if th > 1 else ''}", run, "mnn", th, (it, session, work)))
    return out


def tflite_quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """The float input as a full-integer .tflite takes it (int8 / uint8 with its (scale, zero
    point): clamp(rne(x / s) + zp)), or unchanged for a float input."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x
    s, zp = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / np.float32(s)) + zp, info.min, info.max).astype(dtype)


def tflite_dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    """An integer output as float logits: s * (q - zp)."""
    if np.dtype(detail["dtype"]).kind == "f":
        return y.copy()
    s, zp = detail["quantization"]
    return ((y.astype(np.float32) - np.float32(zp)) * np.float32(s)).astype(np.float32)


def _litert(tflite_path, threads, cores) -> list[Config]:
    from ai_edge_litert.interpreter import Interpreter

    out = []
    for th in sorted({1, threads}):
        it = Interpreter(model_path=str(tflite_path), num_threads=th)
        it.allocate_tensors()
        inp, outp = it.get_input_details()[0], it.get_output_details()[0]
        nhwc = len(inp["shape"]) == 4 and inp["shape"][-1] in (1, 3, 4) and inp["shape"][1] not in (1, 3, 4)
        # A .tflite fixes its own precision: say which tensor types it holds besides fp32.
        kinds = {np.dtype(t["dtype"]).name for t in it.get_tensor_details()} - {"float32", "int32"}
        precision = "/".join(["fp32", *sorted(kinds)]) if kinds else "fp32"

        def run(x, it=it, inp=inp, outp=outp, nhwc=nhwc):
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc else x
            it.set_tensor(inp["index"], tflite_quantize(x, inp))
            it.invoke()
            return tflite_dequantize(it.get_tensor(outp["index"]), outp)

        out.append(Config(f"LiteRT {th} thread{'s' if th > 1 else ''}", run, "litert", th, it, precision))
    return out


_RUNNERS: dict[str, Callable[..., list[Config]]] = {
    "ort": _ort, "openvino": _openvino, "litert": _litert, "ncnn": _ncnn, "mnn": _mnn, "ort-int8": _ort_int8,
    "openvino-int8": _openvino_int8}


def peer_configs(names, onnx_path, tflite_path, threads: int, cores: list[int],
                 say: Callable[[str], None] = print, qdq_path=None, calib_images: np.ndarray | None = None
                 ) -> list[Config]:
    """Configurations of the named peers that are installed; one line per skipped peer.
    ``qdq_path``: nasrt's int8 net as QDQ ONNX (ort-int8, openvino-int8); ``calib_images``:
    nasrt's calibration images, on which ort-static calibrates."""
    out = []
    for name in names:
        if name not in PEERS:
            raise ValueError(f"--peers: unknown peer {name!r} (known: {', '.join(PEERS)})")
        src = {"litert": tflite_path, "ort-int8": qdq_path, "openvino-int8": qdq_path}.get(name, onnx_path)
        if src is None or (name == "ort-static" and calib_images is None):
            need = {"litert": "a .tflite file (--tflite)", "ort-int8": "the int8 net as QDQ ONNX",
                    "openvino-int8": "the int8 net as QDQ ONNX"}.get(name, "an ONNX file")
            say(f"skipped {name}: needs {need if src is None else 'calibration images'}")
            continue
        try:
            if name == "ort-static":
                out += _ort_static(src, threads, cores, calib_images)
                continue
            out += _RUNNERS[name](src, threads, cores)
        except ImportError:
            say(f"skipped {name}: not installed ({INSTALL[name]})")
        except Exception as e:  # each runtime has its own error types for a file it cannot load
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
            raise ModelError(f"{src}: {name} cannot load it ({lines[0][:200]})") from None
    return out
