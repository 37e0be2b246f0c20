"""Side-by-side latency of nasrt and ONNX Runtime on the paper-sized net
(issue targets: 2-thread <= 0.6x ORT's best; single-core <= 1.0x ORT 1 thread;
balanced 2-path speedup >= 1.85x). Prints one table per variant and the ratios.

    python benchmarks/compare_paper_net.py [--runs 3000] [--json out.json]
"""
import argparse
import json
import tempfile
from pathlib import Path

from nasrt.bench import compare, format_table, paper_sized_plan, write_random_model

VARIANTS = {
    "no syncs (A 5x5, B 3x3)": dict(syncs=False),
    "conv1x1 syncs after every layer": dict(syncs=True),
    "balanced, no syncs (A 5x5, B 5x5)": dict(syncs=False, balanced=True),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3000, help="timed calls per configuration")
    ap.add_argument("--json", type=Path, help="write every result (raw latencies included) here")
    args = ap.parse_args()
    reports = {}
    with tempfile.TemporaryDirectory() as d:
        for name, kw in VARIANTS.items():
            m, o = Path(d) / "m.nasrt", Path(d) / "m.onnx"
            write_random_model(paper_sized_plan(**kw), m, onnx=o)
            r = compare(m, o, threads=2, runs=args.runs, warmup=300)
            reports[name] = r
            print(f"\n== {name}\n{format_table(r)}")
    if args.json:
        args.json.write_text(json.dumps(reports))


if __name__ == "__main__":
    main()
