"""A bounded run of tools/fuzz_readers.py (issue 17: every Python reader fuzzed): a few hundred
mutated inputs per reader, each answered by a return or a one-line project error, with no
other exception, hang or crash under the memory limit. The full run: --n 10000 or more."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "fuzz_readers.py"
READERS = ("plan", "space", "lut", "model", "npz", "idx", "folder", "cifar", "flash", "qparams", "bench")


@pytest.mark.parametrize("reader", READERS)
def test_fuzzed_reader_gives_only_one_line_project_errors(tmp_path, reader):
    n = 300
    out = tmp_path / "fuzz.json"
    r = subprocess.run([sys.executable, str(TOOL), "--readers", reader, "--n", str(n), "--seed", "17",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    res = json.loads(out.read_text())["results"][0]
    assert res["inputs"] == n, r.stdout + r.stderr
    assert res["findings"] == [], r.stdout
    assert r.returncode == 0, r.stdout + r.stderr
    if reader != "flash":  # read_sample never raises: it says why an entry is not used
        assert res["err"] > n // 4  # the mutations reach the checks, not only the happy path


def test_fuzzer_reports_an_unexpected_exception(tmp_path):
    """The harness itself: a reader raising a raw exception, hanging or dying is a finding."""
    for behaviour, kind in (("raise", "BAD"), ("hang", "HANG"), ("die", "CRASH")):
        script = tmp_path / f"fuzz_{behaviour}.py"
        body = {"raise": "raise KeyError('x')", "hang": "import time; time.sleep(60)",
                "die": "import os; os._exit(9)"}[behaviour]
        script.write_text(TOOL.read_text().replace(
            "    def _plan(self, rng, d):\n", f"    def _plan(self, rng, d):\n        {body}\n", 1))
        out = tmp_path / f"{behaviour}.json"
        r = subprocess.run([sys.executable, str(script), "--readers", "plan", "--n", "2", "--time-limit", "1",
                            "--json", str(out)], capture_output=True, text=True, timeout=120)
        res = json.loads(out.read_text())["results"][0]
        assert r.returncode == 1 and [f["kind"] for f in res["findings"]] == [kind, kind], (r.stdout, r.stderr)
