"""Soak: a million calls on one Runtime (oneDNN backend by default); resident memory,
latency and the logits must stay flat. Prints, per window of 100,000 calls, the RSS
at its end, the median and p99 latency and the calls whose logits differ from the
first call's (they must be bitwise equal: same input, same model), then a verdict:

    RSS flat:     RSS at the end of the last window <= that of the first + --rss-slack-mb
                  (after the first window: caches and the allocator's pools fill there;
                  a leak of 4 bytes per call grows 3.6 MB over the 9 later windows)
    latency flat: every later window's median <= --latency-ratio x the first one's
    logits:       0 differing calls

Latency is indicative only on a shared or frequency-scaling machine; RSS and logits
are exact. Exit status 1 when a check fails.

    python benchmarks/soak.py [--model tests/data/tiny.nasrt] [--calls 1000000] [--window 100000]
                              [--backend onednn] [--threads N]
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

import nasrt
from nasrt import _core

ROOT = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    """Resident set size now (Linux /proc); elsewhere the peak, which a leak also raises."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def positive(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "tests" / "data" / "tiny.nasrt")
    ap.add_argument("--calls", type=positive, default=1_000_000)
    ap.add_argument("--window", type=positive, default=100_000, help="calls per printed window")
    ap.add_argument("--backend", default="onednn", help="onednn (default), xnnpack, reference or auto")
    ap.add_argument("--threads", type=positive, help="default: min(paths, cores)")
    ap.add_argument("--rss-slack-mb", type=float, default=2.0)
    ap.add_argument("--latency-ratio", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.window > args.calls:
        ap.error(f"--window {args.window} exceeds --calls {args.calls}")
    try:
        rt = nasrt.Runtime(args.model, threads=args.threads, backend=args.backend)
    except nasrt.ModelError as e:
        print(f"soak: {e}", file=sys.stderr)
        return 2
    used = sorted(set(rt.kernels.values()))
    if args.backend != "auto" and used != [args.backend]:
        print(f"soak: {args.model}: convs run on {used}, not {args.backend} (not compiled in?)", file=sys.stderr)
        return 2
    x = np.random.default_rng(args.seed).random((1, *rt.plan.input), dtype=np.float32)
    ref = rt.run(x)
    print(f"{rt!r}, {args.calls:,} calls, windows of {args.window:,}")
    print(f"host: {_core.cpu_signature()}")
    print(f"{'calls':>10} {'RSS MB':>8} {'median us':>10} {'p99 us':>8} {'mismatch':>8}")
    windows = []
    lat = np.empty(args.window)
    done = 0
    while done < args.calls:
        n = min(args.window, args.calls - done)
        bad = 0
        gc.collect()
        gc.disable()  # as in nasrt.runtime.bench.time_runs: no collector pauses inside a window
        try:
            for i in range(n):
                t0 = time.perf_counter_ns()
                y = rt.run(x)
                lat[i] = (time.perf_counter_ns() - t0) / 1e3
                if not np.array_equal(y, ref):
                    bad += 1
        finally:
            gc.enable()
        done += n
        w = {"calls": done, "median_us": float(np.median(lat[:n])), "p99_us": float(np.percentile(lat[:n], 99)),
             "mismatch": bad}
        w["rss_mb"] = rss_mb()  # after the statistics: their first call's imports count in window 1
        windows.append(w)
        print(f"{w['calls']:>10,} {w['rss_mb']:>8.1f} {w['median_us']:>10.1f} {w['p99_us']:>8.1f} {bad:>8}",
              flush=True)
    first, last = windows[0], windows[-1]
    rss_ok = last["rss_mb"] <= first["rss_mb"] + args.rss_slack_mb
    worst = max(w["median_us"] for w in windows[1:]) if len(windows) > 1 else first["median_us"]
    lat_ok = worst <= args.latency_ratio * first["median_us"]
    mism = sum(w["mismatch"] for w in windows)
    ok = rss_ok and lat_ok and mism == 0
    print(f"verdict: {'FLAT' if ok else 'NOT FLAT'}: RSS {first['rss_mb']:.1f} -> {last['rss_mb']:.1f} MB "
          f"({'ok' if rss_ok else 'GREW'}, slack {args.rss_slack_mb} MB), "
          f"median {first['median_us']:.1f} us -> worst later window {worst:.1f} us "
          f"({'ok' if lat_ok else 'SLOWER'}, limit {args.latency_ratio}x; indicative on a shared host), "
          f"{mism} differing logits")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
