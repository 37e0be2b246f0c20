"""Paper Table 2 / Fig. 8: the cost weight beta.

alpha = 0.28, beta in {1, 0.1, 0.01, 0.001} on the default space (2 paths,
conv 3x3 / conv 5x5 per block, conv1x1 sync points): search, derive, retrain
over several seeds, measure MACs and latency.

    python benchmarks/experiments/beta_sweep.py --dataset fashion-mnist --out results/fmnist
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import base_args, load, print_table, structure, train_and_measure, write_results  # noqa: E402

from nasrt.contract.space import SearchSpace  # noqa: E402
from nasrt.search.config import SearchConfig  # noqa: E402
from nasrt.search.gradient import run_search  # noqa: E402


def main(argv=None):
    ap = base_args(__doc__)
    ap.add_argument("--betas", default="1,0.1,0.01,0.001", help="comma-separated beta values")
    ap.add_argument("--alpha", type=float, default=0.28)
    ap.add_argument("--search-epochs", type=int, default=4)
    ap.add_argument("--search-limit", type=int, help="search on the first N training images")
    args = ap.parse_args(argv)
    ds = load(args)
    if args.quick:
        args.search_epochs = 1
    rows = []
    for beta in (float(b) for b in args.betas.split(",")):
        out = args.out / "beta_sweep" / f"beta_{beta:g}"
        plan = run_search(SearchSpace(), ds, SearchConfig(epochs=args.search_epochs, alpha=args.alpha, beta=beta,
                                                          train_limit=args.search_limit),
                          out, show_progress=False, log=lambda *a: None).plan
        print(f"== beta {beta:g}: {structure(plan)}", flush=True)
        rows.append({"label": f"beta {beta:g}", **train_and_measure(plan, ds, args, out)})
    write_results(args.out, "beta_sweep", "Cost weight sweep (paper Table 2 / Fig. 8)", rows, "beta", ds.name)
    print_table(args.out, "beta_sweep")


if __name__ == "__main__":
    main()
