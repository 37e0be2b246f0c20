"""The bench's int8 peers on a tiny net (each skipped when not installed): ONNX Runtime and
OpenVINO on nasrt's QDQ model run int8 and give the oracle's logits; ORT's quantize_static
is calibrated on exactly the images given."""
import numpy as np
import pytest
from test_quant import images, quantized

from _helpers import ort_exact_weight_bits
from nasrt.contract.onnx_graph import write_onnx
from nasrt.contract.plan import Block, Plan, Sync
from nasrt.quant import fp32_forward, int8_reference
from nasrt.runtime.peers import peer_configs

pytest.importorskip("onnxruntime")
from nasrt.quant.qdq import write_qdq_onnx  # noqa: E402

PLAN = Plan((3, 12, 12), 5, Block("conv", 3, 1, 8),
            ((Block("conv", 3, 2, 8), Block("conv", 3, 1, 16)), (Block("sepconv", 3, 2, 8), Block("conv", 1, 1, 16))),
            (Sync(0, "sum"), Sync(1, "conv1x1")), hidden=(12,))


def configs(names, tmp_path, **kw):
    t, qp = quantized(PLAN, 3, fp32=(), weight_bits=ort_exact_weight_bits())  # ORT exact (_helpers)
    write_qdq_onnx(tmp_path / "q.onnx", PLAN, t, qp)
    write_onnx(tmp_path / "f.onnx", PLAN, t)
    said = []
    out = peer_configs(names, tmp_path / "f.onnx", None, 2, [0, 1], said.append, qdq_path=tmp_path / "q.onnx", **kw)
    return t, qp, out, said


@pytest.mark.parametrize("peer, module, tol", [("ort-int8", "onnxruntime", 1e-5), ("openvino-int8", "openvino", 0.05)])
def test_qdq_peers_run_nasrts_int8_net(tmp_path, peer, module, tol):
    """ORT: the oracle's logits (tests/test_qdq.py). OpenVINO requantises its own way (measured
    0.013 on logits of max 0.53, no top-1 changed): within 0.05 of max(1, scale), 95% same top-1."""
    pytest.importorskip(module)
    t, qp, cs, _ = configs([peer], tmp_path)
    assert cs and all(c.precision == "int8" for c in cs)
    x = images(PLAN, 64, 9)
    want = int8_reference(PLAN, qp, x)
    for c in cs:
        got = np.concatenate([c.run(x[i:i + 1]) for i in range(len(x))])
        assert np.abs(got - want).max() <= tol * max(1.0, float(np.abs(want).max()))
        assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.95


def test_quantize_static_calibrates_on_the_images_given(tmp_path):
    """The input's QuantizeLinear scale is MinMax over exactly the images given: images scaled
    by 2 double it. Its logits follow fp32 (its own int8 net, not nasrt's)."""
    import onnx
    from onnx import numpy_helper

    from nasrt.runtime.peers import quantize_static_onnx

    calib = images(PLAN, 32, 4)
    write_onnx(tmp_path / "f.onnx", PLAN, quantized(PLAN, 3)[0])
    scales = []
    for k in (1, 2):
        quantize_static_onnx(tmp_path / "f.onnx", tmp_path / f"s{k}.onnx", calib * k)
        m = onnx.load(str(tmp_path / f"s{k}.onnx"))
        q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
        scales.append(float(numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == q.input[1]))))
        assert "logits" not in {n.input[0] for n in m.graph.node if n.op_type == "QuantizeLinear"}
    lo, hi = min(float(calib.min()), 0.0), max(float(calib.max()), 0.0)
    assert scales[0] == pytest.approx((hi - lo) / 255, rel=1e-6)
    assert scales[1] == pytest.approx(2 * scales[0], rel=1e-6)
    t, _, cs, said = configs(["ort-static"], tmp_path, calib_images=calib)
    assert [c.precision for c in cs] == ["int8"] * 3 and not said
    x = images(PLAN, 64, 9)
    got = cs[0].run(x)
    assert np.mean(got.argmax(1) == fp32_forward(PLAN, t, x).argmax(1)) >= 0.9


def test_int8_peers_say_what_they_need(tmp_path):
    said = []
    assert peer_configs(["ort-int8", "ort-static"], tmp_path / "f.onnx", None, 2, [0, 1], said.append) == []
    assert said == ["skipped ort-int8: needs the int8 net as QDQ ONNX", "skipped ort-static: needs calibration images"]


def test_bench_checks_int8_peers_by_top1(tmp_path):
    """An fp32 nasrt against int8 peers: the fp32 peer is held to 1e-4, the int8 ones to top-1
    agreement on random inputs (their logits differ by quantisation, far above 1e-4); the
    report keeps the agreement through bench.json."""
    from nasrt.contract.modelfile import write_model
    from nasrt.runtime.bench import BenchReport, compare, format_table

    t, qp, _, _ = configs([], tmp_path)
    write_model(tmp_path / "m.nasrt", PLAN, t)
    report = compare(tmp_path / "m.nasrt", tmp_path / "f.onnx", runs=10, warmup=1, peers=("ort", "ort-int8", "ort-static"),
                     qdq_path=tmp_path / "q.onnx", calib_images=images(PLAN, 32, 4), say=lambda s: None)
    rs = report.configs
    assert {r.precision for r in rs.values()} == {"fp32", "int8"}
    for name, r in rs.items():
        assert (r.top1_agreement is None) == (r.precision == "fp32"), name
        assert r.agrees, (name, r.top1_agreement, r.max_abs_diff_vs_nasrt_1)
    assert max(r.max_abs_diff_vs_nasrt_1 for r in rs.values() if r.precision == "int8") > 1e-3
    assert report.consistent
    assert BenchReport.from_json(report.to_json()).configs == rs
    assert "verdict: nasrt's best" in format_table(report)


def test_cli_quantize_onnx_and_bench_qparams(tmp_path, capsys):
    """`nasrt quantize --onnx` writes the QDQ file of the parameters it writes (the oracle's
    logits under ORT); `nasrt bench --qparams` runs the int8 peers by default."""
    import onnxruntime as ort

    from nasrt.cli import main
    from nasrt.contract.modelfile import KEY_DATA_CRC32, read_model, write_model
    from nasrt.quant.params import read_params

    plan = Plan((1, 12, 12), 4, Block("conv", 3, 1, 8), ((Block("conv", 3, 2, 8),), (Block("sepconv", 3, 2, 8),)),
                (Sync(0, "sum"),))
    t = quantized(plan, 1)[0]
    m = tmp_path / "m.nasrt"
    write_model(m, plan, t)
    assert main(["quantize", str(m), "--dataset", "synthetic", "--calib-images", "64", "--method", "numpy-minmax",
                 "--out", str(tmp_path / "q.json"), "--onnx", str(tmp_path / "q.onnx")]) == 0
    assert f"and {tmp_path / 'q.onnx'} (the int8 net as QDQ ONNX)" in capsys.readouterr().out
    qp = read_params(tmp_path / "q.json", plan, read_model(m)[2][KEY_DATA_CRC32])
    x = images(plan, 16, 2)
    got = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    want = int8_reference(plan, qp, x, tensors=t)
    assert np.array_equal(got.argmax(1), want.argmax(1))
    assert np.abs(got - want).max() <= 2e-2 * max(1.0, float(np.abs(want).max()))  # the fp32 stem (test_qdq.py)
    code = main(["bench", str(m), "--qparams", str(tmp_path / "q.json"), "--dataset", "synthetic",
                 "--calib-images", "32", "--runs", "5", "--warmup", "1", "--json", str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ORT int8 seq 1 thread" in out and "ORT qstatic seq 1 thread" in out
    assert main(["bench", str(m), "--qparams", str(tmp_path / "nope.json"), "--peers", "ort-int8"]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_executorch_fp32_and_int8(tmp_path):
    """The float net rebuilt in torch through the walk, lowered to XNNPACK: fp32 gives the
    reference's logits; PT2E int8 (XNNPACKQuantizer, calibrated on the images given) follows
    them (its own quantisation: measured 0.034 on logits of max ~0.5, every top-1 the same)."""
    pytest.importorskip("executorch")
    from nasrt.search.executorch_peer import executorch_configs

    t = quantized(PLAN, 3)[0]
    x = images(PLAN, 16, 9)
    want = fp32_forward(PLAN, t, x)
    for int8 in (False, True):
        (c,) = executorch_configs(PLAN, t, images(PLAN, 32, 4), int8=int8)
        assert c.precision == ("int8" if int8 else "fp32") and c.engine == "executorch"
        got = np.concatenate([c.run(x[i:i + 1]) for i in range(len(x))])
        assert np.abs(got - want).max() <= (0.1 if int8 else 1e-5)
        assert np.mean(got.argmax(1) == want.argmax(1)) >= (0.9 if int8 else 1.0)


def test_mnn_fp32_peer(tmp_path):
    """MNN on the ONNX file converted by its `_tools` extension: fp32 ("high" precision), the
    bench's 1e-4 agreement with nasrt; its telemetry-installing `MNN.tools` is never imported."""
    pytest.importorskip("MNN")
    import sys

    from nasrt.contract.modelfile import write_model
    from nasrt.runtime.bench import compare

    t = quantized(PLAN, 3)[0]
    write_model(tmp_path / "m.nasrt", PLAN, t)
    write_onnx(tmp_path / "m.onnx", PLAN, t)
    report = compare(tmp_path / "m.nasrt", tmp_path / "m.onnx", runs=10, warmup=1, peers=("mnn",), say=lambda s: None)
    mnn = [r for r in report.configs.values() if r.engine == "mnn"]
    assert [r.threads for r in mnn] == [1, 2] and all(r.precision == "fp32" and r.agrees for r in mnn)
    assert report.consistent and "MNN.tools" not in sys.modules


def test_full_integer_tflite_io():
    """A full-integer .tflite (int8 input and output, as litert-torch writes them) gets the
    input quantised by its (scale, zero point) and the logits dequantised; float passes."""
    from nasrt.runtime.peers import tflite_dequantize, tflite_quantize

    d = {"dtype": np.int8, "quantization": (0.5, -3)}
    q = tflite_quantize(np.array([0.0, 0.25, 0.75, 1.0, 100.0, -100.0], np.float32), d)
    assert q.dtype == np.int8 and q.tolist() == [-3, -3, -1, -1, 127, -128]  # rne: 0.5 -> 0, 1.5 -> 2
    assert tflite_dequantize(np.array([-3, 5], np.int8), d).tolist() == [0.0, 4.0]
    f = {"dtype": np.float32, "quantization": (0.0, 0)}
    x = np.ones(3, np.float32)
    assert tflite_quantize(x, f) is x and tflite_dequantize(x, f).tolist() == [1.0] * 3


def test_cli_bench_executorch(tmp_path, capsys):
    from nasrt.cli import main
    from nasrt.contract.modelfile import write_model

    write_model(tmp_path / "m.nasrt", PLAN, quantized(PLAN, 3)[0])
    assert main(["bench", str(tmp_path / "m.nasrt"), "--peers", "executorch-int8"]) == 2
    assert "--peers executorch-int8: needs --qparams" in capsys.readouterr().err
    pytest.importorskip("executorch")
    assert main(["bench", str(tmp_path / "m.nasrt"), "--peers", "executorch", "--runs", "5", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "ExecuTorch 1 thread" in out and "logits agree across configurations" in out


def test_cli_bench_of_an_int8_model_beside_its_float_model(tmp_path, capsys):
    """`nasrt bench MODEL.int8.nasrt --fp32 MODEL.nasrt`: nasrt int8 runs the int8 file, nasrt
    fp32 the float one in the same process (int8_vs_fp32), the QDQ peer the int8 file's own net;
    without --fp32 the float-based peers are skipped; --fp32 with a float MODEL is an error."""
    import json

    from nasrt.cli import main
    from nasrt.contract.modelfile import write_model

    plan = Plan((1, 12, 12), 4, Block("conv", 3, 1, 8), ((Block("conv", 3, 2, 8),), (Block("sepconv", 3, 2, 8),)),
                (Sync(0, "sum"),))
    t = quantized(plan, 1)[0]
    m, q = tmp_path / "m.nasrt", tmp_path / "m.int8.nasrt"
    write_model(m, plan, t)
    assert main(["quantize", str(m), "--dataset", "synthetic", "--calib-images", "64", "--method", "numpy-minmax",
                 "--out", str(q)]) == 0
    capsys.readouterr()
    code = main(["bench", str(q), "--fp32", str(m), "--peers", "ort-int8", "--runs", "10", "--warmup", "1",
                 "--json", str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "b.json").read_text())
    precisions = {k: v["precision"] for k, v in report["configs"].items()}
    assert precisions["nasrt 1 thread"] == "int8" and precisions["nasrt fp32 1 thread"] == "fp32"
    assert precisions["ORT int8 seq 1 thread"] == "int8"
    assert report["ratios"]["int8_vs_fp32"] > 0 and "nasrt int8 / nasrt fp32" in out
    assert "agreement checked on random inputs" in out  # the default dataset does not fit 1x12x12
    assert main(["bench", str(q), "--peers", "ort,ort-int8", "--runs", "5", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "skipped ort: they start from the float model" in out and "ORT int8 seq 1 thread" in out
    assert main(["bench", str(m), "--fp32", str(m)]) == 2
    assert "is not an int8 model" in capsys.readouterr().err


def test_cli_bench_checks_int8_agreement_on_the_datasets_test_images(tmp_path, capsys, monkeypatch):
    """Where --dataset fits the model, an int8 bench checks top-1 agreement on its first test
    images (random inputs leave the calibrated ranges; a good int8 model then 'disagrees')."""
    import nasrt.runtime.bench as bench
    from nasrt.cli import main
    from nasrt.contract.modelfile import write_model
    from nasrt.data.builtin import load_dataset

    plan = Plan((1, 12, 12), 4, Block("conv", 3, 1, 8), ((Block("conv", 3, 2, 8),),), ())
    m, q = tmp_path / "m.nasrt", tmp_path / "m.int8.nasrt"
    write_model(m, plan, quantized(plan, 1)[0])
    assert main(["quantize", str(m), "--dataset", "synthetic", "--calib-images", "32", "--method", "numpy-minmax",
                 "--out", str(q)]) == 0
    seen = {}
    real = bench.compare

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(bench, "compare", spy)
    assert main(["bench", str(q), "--fp32", str(m), "--peers", "", "--dataset", "synthetic", "--runs", "5",
                 "--warmup", "1"]) == 0
    assert "random inputs" not in capsys.readouterr().out
    x_test = load_dataset("synthetic", None).x_test
    np.testing.assert_array_equal(seen["agree_images"], x_test[:bench.AGREE_IMAGES])
