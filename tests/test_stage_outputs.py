"""Issue 18: typed stage outputs (BenchReport, EpochRecord), the strategy registry behind
`nasrt search` and `nasrt pipeline`, the stride default and ONNX discovery in the library."""
import json
from pathlib import Path

import pytest

from nasrt.contract.space import SearchSpace
from nasrt.errors import ModelError, NasrtError
from nasrt.runtime.bench import BenchReport, compare, onnx_for
from nasrt.search.result import EpochRecord

TINY = Path(__file__).parent / "data" / "tiny.nasrt"
# bench.json's keys, as before the report was typed (README: the report folder).
REPORT_KEYS = ["model", "onnx", "consistent", "tolerance", "configs", "busy_cores", "ratios", "plan", "host", "kernels"]
CONFIG_KEYS = ["engine", "threads", "precision", "median", "p90", "p99", "min", "mean", "runs",
               "max_abs_diff_vs_nasrt_1", "agrees", "latencies_us", "top1_agreement"]
LINE = {"epoch": 1, "ce": 1.2, "train_acc": 0.5, "test_acc": 0.4, "loss_ops": 0.7, "loss_sync": 0.1,
        "expected_latency_us": None, "op_probs": [[[0.5, 0.5]]], "sync_probs": [0.5], "ops": ["conv3x3", "conv5x5"],
        "tau": None, "seconds": 2.0, "train_seconds": 1.5, "path_losses": None}


def test_bench_report_round_trips_through_its_json_file(tmp_path):
    report = compare(TINY, None, runs=10, warmup=1, peers=())
    report.save(tmp_path / "bench.json")
    d = json.loads((tmp_path / "bench.json").read_text())
    assert list(d) == REPORT_KEYS and list(d["configs"]["nasrt 1 thread"]) == CONFIG_KEYS
    assert "best_peer" not in d["ratios"]  # a ratio without its configurations is absent, not null
    again = BenchReport.from_json((tmp_path / "bench.json").read_text())
    assert again == report and again.to_json() == report.to_json()
    d["configs"]["nasrt 1 thread"]["median"] = "fast"
    with pytest.raises(NasrtError, match=r"^b.json: configs\['nasrt 1 thread'\].median: must be a number"):
        BenchReport.from_json(json.dumps(d), "b.json")
    del d["tolerance"]
    with pytest.raises(NasrtError, match="^b.json: tolerance: missing"):
        BenchReport.from_dict({**d, "configs": {}}, "b.json")
    del d["configs"]
    with pytest.raises(NasrtError, match="^b.json: configs: must be a JSON object"):
        BenchReport.from_dict(d, "b.json")


def test_onnx_discovery_is_the_bench_sides(tmp_path):
    with pytest.raises(ModelError, match="none.onnx: no such ONNX file"):
        with onnx_for(TINY, tmp_path / "none.onnx"):
            pass
    with onnx_for(TINY, None, peers=()) as onnx:
        assert onnx is None  # no peer reads ONNX
    model = tmp_path / "m.nasrt"
    model.write_bytes(TINY.read_bytes())
    model.with_suffix(".onnx").write_bytes(b"beside")
    with onnx_for(model, None) as onnx:
        assert onnx == model.with_suffix(".onnx")


def test_epoch_record_names_its_cost():
    rec = EpochRecord.from_dict(LINE)
    assert (rec.cost, rec.loss_cost, rec.cost_key) == ("flops", 0.7, "loss_ops")
    assert rec.to_dict() == LINE and list(rec.to_dict()) == list(LINE)  # the log's line, key for key
    line = {("loss_latency" if k == "loss_ops" else k): v for k, v in LINE.items()}
    rec = EpochRecord.from_dict(line)
    assert (rec.cost, rec.loss_cost, rec.cost_key) == ("latency", 0.7, "loss_latency")
    assert list(rec.to_dict()) == list(line)
    with pytest.raises(NasrtError, match="log: epoch 1: needs exactly one of loss_ops, loss_latency"):
        EpochRecord.from_dict({**LINE, "loss_latency": 0.1}, "log")
    with pytest.raises(NasrtError, match="log: epoch 1: tau: missing"):
        EpochRecord.from_dict({k: v for k, v in LINE.items() if k != "tau"}, "log")


def test_search_space_owns_the_stride_default():
    assert SearchSpace(channels=(4, 8, 16)).strides == (1, 2, 2)
    assert SearchSpace().strides == (1, 2, 2, 2)
    assert SearchSpace.from_dict({"channels": [4, 8]}).strides == (1, 2)
    base = SearchSpace(channels=(4, 8), strides=(1, 1))
    assert base.override(channels=[4, 8, 8]).strides == (1, 2, 2)  # another length: the default
    assert base.override(channels=[8, 16]).strides == (1, 1)        # the same length: kept
    assert base.override(channels=[4, 8, 8], strides=[1, 1, 2]).strides == (1, 1, 2)


@pytest.mark.filterwarnings("ignore:the SuperNet stayed at chance")
def test_the_search_returns_the_epochs_its_log_holds(tmp_path):
    pytest.importorskip("torch")
    from nasrt.data.builtin import load_dataset
    from nasrt.search.config import SearchConfig
    from nasrt.search.gradient import run_search
    space = SearchSpace(paths=2, channels=(4, 8), stem_kernel=3, stem_out=4, hidden=(8,))
    result = run_search(space, load_dataset("synthetic"), SearchConfig(epochs=2, batch_size=64), tmp_path,
                        show_progress=False, log=lambda *a: None)
    lines = [json.loads(line) for line in (tmp_path / "search_log.jsonl").read_text().splitlines()]
    assert [r.to_dict() for r in result.history] == lines and len(lines) == 2
    assert tuple(EpochRecord.from_dict(d) for d in lines) == result.history
    assert result.files == (tmp_path / "plan.json",)


def test_the_registry_is_what_the_cli_offers(tmp_path):
    pytest.importorskip("torch")
    from nasrt.search.config import STRATEGIES, SearchConfig
    from nasrt.search.flash import FlashSettings
    from nasrt.search.strategies import REGISTRY, Settings, check
    assert tuple(REGISTRY) == STRATEGIES
    with pytest.raises(ValueError, match="--strategy: must be one of gradient, flash, got 'nope'"):
        check("nope", SearchConfig(), Settings(tmp_path))
    with pytest.raises(ValueError, match="--flash-samples must be >= 5"):
        check("flash", SearchConfig(), Settings(tmp_path, flash=FlashSettings(samples=4)))
    check("gradient", SearchConfig(), Settings(tmp_path, flash=FlashSettings(samples=4)))  # flash's alone


def test_pipeline_runs_flash(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("scipy")
    from test_latency import planted_lut

    from nasrt.cli import main
    from nasrt.contract.modelfile import KEY_LATENCY_PRECISION, read_model
    from nasrt.contract.space import SearchSpace
    out = tmp_path / "report"
    space = SearchSpace(channels=(4, 8)).bind((1, 12, 12), 4)  # the pipeline's below, on synthetic
    planted_lut(space, op_us=[{n: 10.0 for n, _ in space.plan_ops}] * 2, sync_us=(3.0, 5.0),
                precision="int8").save(tmp_path / "lut.int8.json")
    assert main(["pipeline", "--strategy", "flash", "--dataset", "synthetic", "--out", str(out), "--train-epochs", "1",
                 "--channels", "4,8", "--flash-samples", "5", "--sample-limit", "16", "--runs", "20", "--quiet",
                 "--lut", str(tmp_path / "lut.int8.json")]) == 0
    # Searched for int8 latency, exported in fp32: a note, and the model says which it was searched for.
    assert "note: the plan was searched with an int8 latency table: deploy it in int8" in capsys.readouterr().out
    assert read_model(out / "model.nasrt")[2][KEY_LATENCY_PRECISION] == "int8"
    for f in ("plan.json", "flash.json", "model.nasrt", "model.onnx", "metrics.json", "bench.json", "summary.md",
              "net.png", "latency.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert not (out / "search.png").exists()  # FLASH has no epochs to plot
    summary = (out / "summary.md").read_text()
    assert "(flash, 5 samples)" in summary and "search.png" not in summary
    assert json.loads((out / "plan.json").read_text())["meta"]["search"]["strategy"] == "flash"
    BenchReport.from_json((out / "bench.json").read_text())
