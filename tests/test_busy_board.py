"""Issue 17, item 1 (the bench part): `nasrt bench` and `nasrt-bench` say when another
process holds one of their cores, and the verdict is nasrt's best configuration. The
detection is tested with a real busy loop pinned to a core; no timing is asserted."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_native import native

from nasrt.runtime.bench import compare, format_table

TINY = Path(__file__).parent / "data" / "tiny.nasrt"


@pytest.fixture
def hog():
    """A busy loop pinned to this process's first core; yields the core."""
    core = min(os.sched_getaffinity(0))
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(p.pid, {core})
        time.sleep(0.3)  # started and spinning on its core
        yield core
    finally:
        p.kill()
        p.wait()


def warning_line(text: str) -> str:
    return next((ln for ln in text.splitlines() if ln.startswith("WARNING: another process held core")), "")


def test_bench_warns_when_another_process_holds_a_core(hog):
    report = compare(TINY, None, runs=10, warmup=1, peers=())
    assert str(hog) in report.busy_cores, report.busy_cores
    line = warning_line(format_table(report))
    assert f" {hog} (" in line and "% busy)" in line


def test_nasrt_bench_warns_when_another_process_holds_a_core(hog):
    r = subprocess.run([native("nasrt-bench"), str(TINY), "--runs", "20", "--rounds", "2", "--warmup", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = warning_line(r.stdout)
    assert f" {hog} (" in line and "% busy)" in line, r.stdout
    assert "best configuration: nasrt " in r.stdout


def test_verdict_is_nasrts_best_configuration():
    from nasrt.runtime.bench import BenchReport, ConfigResult, paper_sized_plan, verdict_ratios

    def res(engine, threads, median):
        return ConfigResult(engine, threads, "fp32", median, median, median, median, median, 1, 0.0, True, [median])
    # A taken core: 2 path threads slower than 1 thread, which beats the peer.
    results = {"nasrt 1 thread": res("nasrt", 1, 90.0), "nasrt 2 path threads": res("nasrt", 2, 1600.0),
               "ORT seq 1 thread": res("onnxruntime", 1, 120.0), "ORT seq 2 threads": res("onnxruntime", 2, 125.0)}
    ratios = verdict_ratios(results)
    assert ratios.nasrt_best_config == "nasrt 1 thread"
    assert ratios.nasrt_vs_best_peer == pytest.approx(90.0 / 120.0)
    report = BenchReport("m.nasrt", None, True, 1e-4, results, {}, ratios, paper_sized_plan(), {}, {})
    assert "verdict: nasrt's best (nasrt 1 thread) = 0.75x the best peer (ORT seq 1 thread): faster" \
        in format_table(report)
