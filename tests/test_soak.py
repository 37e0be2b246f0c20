"""benchmarks/soak.py runs (a short soak): windows, a verdict line, one-line errors."""
import importlib.util
from pathlib import Path

import pytest

from nasrt.runtime.runtime import compiled_backends

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("soak", ROOT / "benchmarks" / "soak.py")
soak = importlib.util.module_from_spec(spec)
spec.loader.exec_module(soak)


@pytest.mark.skipif("onednn" not in compiled_backends(), reason="built without oneDNN")
def test_soak_prints_windows_and_verdict(capsys):
    # Loose limits: this checks the script's mechanics, not the machine's latency.
    assert soak.main(["--calls", "600", "--window", "200", "--latency-ratio", "1e6", "--rss-slack-mb", "1e6"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip().split(" ")[0] in ("200", "400", "600")]
    assert len(lines) == 3 and all(ln.split()[-1] == "0" for ln in lines), out  # 0 differing logits
    assert "verdict: FLAT" in out and "0 differing logits" in out


def test_soak_errors(tmp_path, capsys):
    assert soak.main(["--model", str(tmp_path / "none.nasrt"), "--calls", "10", "--window", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.nasrt" in err
    with pytest.raises(SystemExit):
        soak.main(["--calls", "10", "--window", "20"])
    assert "--window 20 exceeds --calls 10" in capsys.readouterr().err
