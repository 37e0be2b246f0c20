"""Data-parallel scaling of the search: one search epoch under torchrun with
1, 2, 4, ... ranks, each rank pinned to `--cores-per-rank` cores (as if every
rank were a machine of that size), the global batch fixed.

    python benchmarks/experiments/ddp_scaling.py --ranks 1,2,4,8 --cores-per-rank 2 \
        --dataset fashion-mnist --search-limit 30000 --out runs/ddp

Prints and writes OUT/ddp_scaling.md and .json: the training part of the epoch
(evaluation, which every rank repeats, is left out), speedup over one rank and
efficiency = speedup / ranks. Needs ranks * cores-per-rank cores.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def epoch_seconds(out: Path) -> float:
    recs = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()]
    return min(r["train_seconds"] for r in recs)  # the fastest epoch: the first one pays warm-up


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="1,2", help="comma-separated process counts")
    ap.add_argument("--cores-per-rank", type=int, default=1)
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--data-dir")
    ap.add_argument("--search-limit", dest="train_limit", type=int)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256, help="global batch (split over the ranks)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    rows = []
    for n in (int(r) for r in args.ranks.split(",")):
        need = n * args.cores_per_rank
        if need > cores:
            print(f"skipping {n} ranks: needs {need} cores, this machine has {cores}")
            continue
        out = args.out / f"ranks_{n}"
        cmd = ["taskset", "-c", f"0-{need - 1}", sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(n), "-m", "nasrt.cli", "search", "--dataset", args.dataset,
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--out", str(out), "--quiet"]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        if args.train_limit:
            cmd += ["--search-limit", str(args.train_limit)]
        subprocess.run(cmd, check=True)
        secs = epoch_seconds(out)
        base = rows[0]["seconds"] if rows else secs
        base_n = rows[0]["ranks"] if rows else n
        speedup = base / secs
        rows.append({"ranks": n, "cores": need, "seconds": secs, "speedup": speedup,
                     "efficiency": speedup / (n / base_n)})
        print(f"{n} ranks x {args.cores_per_rank} cores: {secs:.1f} s per epoch, speedup {speedup:.2f}, "
              f"efficiency {rows[-1]['efficiency']:.2f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ddp_scaling.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                            "rows": rows}, indent=1))
    lines = ["| ranks | cores | train s / epoch | speedup | efficiency |", "|---|---|---|---|---|"]
    lines += [f"| {r['ranks']} | {r['cores']} | {r['seconds']:.1f} | {r['speedup']:.2f} | {r['efficiency']:.2f} |"
              for r in rows]
    (args.out / "ddp_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
