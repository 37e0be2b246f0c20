"""Side-by-side latency of nasrt and its peers (ONNX Runtime, OpenVINO, where
installed) on the paper-sized nets and the Fashion-MNIST default net, random
weights, batch 1. Targets: nasrt 2 threads <= 0.6x ORT's best and ahead of
every peer; 1 thread <= 1.0x ORT 1 thread; balanced 2-thread speedup >= 1.9x.
Prints one table per net with the host's CPU and ISA, the ratios and a verdict.

    python benchmarks/compare_paper_net.py [--runs 3000] [--peers ort,openvino] [--json out.json]
"""
import argparse
import json
import tempfile
from pathlib import Path

from nasrt.contract.plan import Plan
from nasrt.runtime.bench import compare, format_table, paper_sized_plan, write_random_model

DEFAULT_PLAN = Path(__file__).resolve().parent.parent / "docs" / "default_plan.json"
VARIANTS = {
    "paper net, no syncs (A 5x5, B 3x3)": lambda: paper_sized_plan(syncs=False),
    "paper net, conv1x1 syncs after every layer": lambda: paper_sized_plan(syncs=True),
    "paper net balanced, no syncs (A 5x5, B 5x5)": lambda: paper_sized_plan(syncs=False, balanced=True),
    "Fashion-MNIST default net (docs/default_plan.json)": lambda: Plan.load(DEFAULT_PLAN),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3000, help="timed calls per configuration")
    ap.add_argument("--json", type=Path, help="write every result (raw latencies included) here")
    ap.add_argument("--peers", default="ort,openvino", help="peers to compare with (default ort,openvino)")
    args = ap.parse_args()
    reports = {}
    with tempfile.TemporaryDirectory() as d:
        for name, make in VARIANTS.items():
            m, o = Path(d) / "m.nasrt", Path(d) / "m.onnx"
            write_random_model(make(), m, onnx=o)
            r = compare(m, o, threads=2, runs=args.runs, warmup=300, peers=[p for p in args.peers.split(",") if p])
            reports[name] = r
            print(f"\n== {name}\n{format_table(r)}")
    if args.json:
        args.json.write_text(json.dumps({name: r.to_dict() for name, r in reports.items()}))


if __name__ == "__main__":
    main()
