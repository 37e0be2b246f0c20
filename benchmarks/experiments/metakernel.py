"""Meta-kernels (E-DNAS) against listing the kernel sizes separately.

    # search speed and memory, one process per variant, steps interleaved over rounds
    python benchmarks/experiments/metakernel.py speed --out runs/meta
    # derived-net accuracy: `nasrt search` then `nasrt train` per variant and seed, as many
    # jobs at once as there are groups of --cores-per-job cores; a cut run resumes
    python benchmarks/experiments/metakernel.py accuracy --seeds 0,1,2 --out runs/meta

Variants: "separate" (--ops conv3x3,conv5x5,conv7x7), "meta" (--ops metaconv7x7) and
"meta+feedback". Both modes write OUT/metakernel_<mode>.json.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"separate": ["--ops", "conv3x3,conv5x5,conv7x7"],
            "meta": ["--ops", "metaconv7x7"],
            "meta+feedback": ["--ops", "metaconv7x7", "--feedback"]}


def _step_worker(ops: str, steps: int, batch: int, conn_path: str) -> None:
    """Times `steps` search steps (forward, backward, both optimisers) of the SuperNet of `ops`
    on Fashion-MNIST-shaped random data, one line of JSON per step to conn_path."""
    import torch

    from nasrt.contract.space import SearchSpace
    from nasrt.search.config import SearchConfig
    from nasrt.search.gradient import _optimizers
    from nasrt.search.supernet import SuperNet

    torch.manual_seed(0)
    space = SearchSpace(ops=tuple(ops.split(","))).bind((1, 28, 28), 10)
    net = SuperNet(space).to(memory_format=torch.channels_last)
    w_opt, a_opt, _ = _optimizers(net, SearchConfig(), steps)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        w_opt.zero_grad(set_to_none=True)
        a_opt.zero_grad(set_to_none=True)
        loss.backward()
        w_opt.step()
        a_opt.step()
        times.append(time.perf_counter() - t0)
    Path(conn_path).write_text(json.dumps({"times": times,
                                           "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def speed(args) -> list[dict]:
    ops = {"separate": "conv3x3,conv5x5,conv7x7", "meta": "metaconv7x7"}
    per = {k: [] for k in ops}
    rss = {k: [] for k in ops}
    args.out.mkdir(parents=True, exist_ok=True)
    for _ in range(args.rounds):  # interleaved: a drift of the machine hits both alike
        for name, o in ops.items():
            tmp = args.out / f"_step_{name}.json"
            subprocess.run([sys.executable, __file__, "_worker", o, str(args.steps), str(args.batch), str(tmp)],
                           check=True)
            d = json.loads(tmp.read_text())
            tmp.unlink()
            per[name].append(statistics.median(d["times"][2:]))  # the first steps pay warm-up
            rss[name].append(d["maxrss_mb"])
    rows = []
    for name in ops:
        step = min(per[name])
        rows.append({"variant": name, "step_ms": 1000 * step, "epoch_s_60k": step * 60000 / args.batch,
                     "peak_rss_mb": max(rss[name])})
    ratio = rows[0]["step_ms"] / rows[1]["step_ms"]
    print(f"search step, batch {args.batch} (min over {args.rounds} rounds of the median of {args.steps} steps):")
    for r in rows:
        print(f"  {r['variant']:<9} {r['step_ms']:7.1f} ms/step  ~{r['epoch_s_60k']:5.1f} s per 60k-image epoch  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")
    print(f"meta-kernel speedup over separate kernels: {ratio:.2f}x")
    return rows + [{"variant": "speedup", "value": ratio}]


def accuracy(args) -> list[dict]:
    cores = sorted(os.sched_getaffinity(0))
    jobs = [(v, s) for s in args.seeds.split(",") for v in args.variants.split(",")]  # seed-major: a cut run stays comparable
    running, rows, free = [], [], [cores[i:i + args.cores_per_job] for i in range(0, len(cores), args.cores_per_job)]
    free = [c for c in free if len(c) == args.cores_per_job]
    if not free:
        raise SystemExit(f"need {args.cores_per_job} cores per job, this machine has {len(cores)}")

    def launch(v, s):
        out = args.out / f"{v}_seed{s}"
        cpus = free.pop(0)
        pin = ["taskset", "-c", ",".join(map(str, cpus)), sys.executable, "-m", "nasrt.cli"]
        data = ["--data-dir", args.data_dir] if args.data_dir else []
        search = [*pin, "search", *VARIANTS[v], "--seed", s, "--epochs", str(args.search_epochs), "--out", str(out),
                  "--quiet", *data, *(["--search-limit", str(args.search_limit)] if args.search_limit else [])]
        train = [*pin, "train", str(out / "plan.json"), "--seed", s, "--epochs", str(args.train_epochs), "--quiet",
                 *data]
        log = open(args.out / f"{v}_seed{s}.log", "w")
        script = " && ".join(" ".join(map(str, c)) for c in (search, train))
        running.append((subprocess.Popen(["sh", "-c", script], stdout=log, stderr=subprocess.STDOUT),
                        v, s, out, cpus))

    args.out.mkdir(parents=True, exist_ok=True)
    done_file = args.out / "metakernel_accuracy.json"
    if done_file.exists():  # a cut run resumes: finished jobs are kept, not rerun
        rows = json.loads(done_file.read_text())
    done = {(r["variant"], str(r["seed"])) for r in rows}
    pending = [j for j in jobs if j not in done]
    while pending or running:
        while pending and free:
            launch(*pending.pop(0))
        time.sleep(2)
        for job in list(running):
            p, v, s, out, cpus = job
            if p.poll() is None:
                continue
            running.remove(job)
            free.append(cpus)
            if p.returncode:
                print(f"{v} seed {s}: failed (see {out}.log)")
                continue
            m = json.loads((out / "metrics.json").read_text())
            log = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()]
            rows.append({"variant": v, "seed": int(s), "test_acc": m["test_accuracy"], "macs": m["macs"],
                         "search_epoch_s": statistics.median(r["train_seconds"] for r in log),
                         "search_acc_by_epoch": [r["test_acc"] for r in log],
                         "search_wall_s": sum(r["seconds"] for r in log), "train_wall_s": m["wall_time_s"],
                         "plan": json.loads((out / "plan.json").read_text())})
            (args.out / "metakernel_accuracy.json").write_text(json.dumps(rows, indent=1))  # so far
            print(f"{v} seed {s}: test acc {m['test_accuracy']:.4f}, MACs {m['macs']:,}, "
                  f"search epoch {rows[-1]['search_epoch_s']:.1f} s", flush=True)
    return rows


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_worker":
        return _step_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["speed", "accuracy"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=12, help="speed: timed steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="speed: rounds (variants interleaved)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="accuracy: comma-separated")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cores-per-job", type=int, default=2)
    ap.add_argument("--search-epochs", type=int, default=4)
    ap.add_argument("--search-limit", type=int)
    ap.add_argument("--train-epochs", type=int, default=15)
    ap.add_argument("--data-dir")
    args = ap.parse_args(argv)
    rows = speed(args) if args.mode == "speed" else accuracy(args)
    (args.out / f"metakernel_{args.mode}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
