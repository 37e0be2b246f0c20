"""Issue 4: bench consistency check, the pipeline's report, the experiments' quick mode."""
import runpy
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from nasrt.cli import main  # noqa: E402
from nasrt.runtime.bench import compare, paper_sized_plan, write_random_model  # noqa: E402

EXPERIMENTS = Path(__file__).resolve().parents[1] / "benchmarks" / "experiments"


def test_bench_catches_disagreeing_configurations(tmp_path, capsys):
    plan = paper_sized_plan()
    write_random_model(plan, tmp_path / "a.nasrt", seed=0)
    write_random_model(plan, tmp_path / "b.nasrt", seed=1, onnx=tmp_path / "b.onnx")  # other weights
    report = compare(tmp_path / "a.nasrt", tmp_path / "b.onnx", runs=10, warmup=2)
    assert not report.consistent
    assert main(["bench", str(tmp_path / "a.nasrt"), "--onnx", str(tmp_path / "b.onnx"), "--runs", "10"]) == 3
    assert "DISAGREE" in capsys.readouterr().out
    # The same net everywhere agrees, and bench writes JSON and a plot.
    write_random_model(plan, tmp_path / "a.nasrt", seed=0, onnx=tmp_path / "a.onnx")
    assert main(["bench", str(tmp_path / "a.nasrt"), "--runs", "20", "--json", str(tmp_path / "b.json"),
                 "--plot", str(tmp_path / "lat.png")]) == 0
    out = capsys.readouterr().out
    assert "logits agree" in out and "ORT seq 1 thread" in out
    assert (tmp_path / "lat.png").stat().st_size > 1000 and (tmp_path / "b.json").is_file()


def test_bench_errors(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "none.nasrt")]) == 2
    assert "no such model file" in capsys.readouterr().err


def test_pipeline_on_synthetic_writes_every_report_file(tmp_path):
    out = tmp_path / "report"
    assert main(["pipeline", "--dataset", "synthetic", "--out", str(out), "--search-epochs", "1",
                 "--train-epochs", "1", "--channels", "4,8", "--runs", "20", "--quiet"]) == 0
    for f in ("plan.json", "model.nasrt", "model.onnx", "metrics.json", "bench.json", "summary.md",
              "search.png", "net.png", "latency.png", "search_log.jsonl"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert "## Latency" in (out / "summary.md").read_text()
    assert not (out / "int8.json").exists()


def test_pipeline_int8_writes_and_reports_both_models(tmp_path, capsys):
    import json
    out = tmp_path / "report"
    assert main(["pipeline", "--dataset", "synthetic", "--out", str(out), "--search-epochs", "1",
                 "--train-epochs", "1", "--channels", "4,8", "--runs", "20", "--quiet", "--int8"]) == 0
    assert "wrote " + f"{out}/model.int8.nasrt, int8.json" in capsys.readouterr().out
    q = json.loads((out / "int8.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    # The fp32 accuracy the quantiser measured (numpy fp32 net) is the exported model's.
    assert abs(q["fp32"]["test_accuracy"] - metrics["runtime_test_accuracy"]) < 1e-3
    assert 0 <= q["int8"]["test_accuracy"] <= 1 and q["int8"]["latency_us"] > 0 and q["fp32"]["latency_us"] > 0
    assert q["int8"]["fp32_layers"] == ["stem"]  # synthetic is 1-channel: the default rule
    from nasrt.runtime.runtime import Runtime
    assert set(Runtime(out / "model.int8.nasrt").precisions.values()) == {"fp32", "int8"}
    bench = json.loads((out / "bench.json").read_text())
    int8 = {k: v for k, v in bench["configs"].items() if v["precision"] == "int8"}
    assert "nasrt int8 1 thread" in int8 and all(v["engine"] == "nasrt" and v["agrees"] for v in int8.values())
    summary = (out / "summary.md").read_text()
    assert "## int8 (model.int8.nasrt, int8.json)" in summary
    assert f"int8 {q['int8']['latency_us']:.1f} us, fp32 {q['fp32']['latency_us']:.1f} us" in summary


@pytest.mark.parametrize("script,name", [("sync_configs.py", "sync_configs"), ("beta_sweep.py", "beta_sweep"),
                                         ("latency_vs_flops.py", "latency_vs_flops"),
                                         ("pareto.py", "pareto_synthetic")])
def test_experiments_quick_mode(tmp_path, script, name, monkeypatch):
    args = ["--quick", "--out", str(tmp_path)] + (["--betas", "1,0.001"] if "beta" in script else [])
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(EXPERIMENTS / script), run_name="__main__")
    for ext in ("md", "json", "png"):  # every experiment writes a table, raw results and a plot
        assert (tmp_path / f"{name}.{ext}").is_file()
    assert "test acc" in (tmp_path / f"{name}.md").read_text()
