"""Paper Fig. 7: where should the paths synchronise?

Path A conv 3x3 in every layer, path B conv 5x5 in every layer (paper-sized
net: stem conv 5x5/8, 8-16-32-64, strides 1-2-2-2, head [64]); conv1x1 sync
points (1) nowhere, (2) after every layer, (3) after the first two, (4) after
the last two. Each is retrained over several seeds; latency of nasrt
multi-thread, nasrt single-core and ONNX Runtime is measured side by side.

    python benchmarks/experiments/sync_configs.py --dataset fashion-mnist --out results/fmnist
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import base_args, load, print_table, train_and_measure, write_results  # noqa: E402

from nasrt.contract.plan import Block, Plan, Sync  # noqa: E402

CONFIGS = {"no sync": [], "all syncs": [0, 1, 2, 3], "first two": [0, 1], "last two": [2, 3]}


def fig7_plan(input_shape, classes, syncs) -> Plan:
    chans, strides = (8, 16, 32, 64), (1, 2, 2, 2)
    paths = tuple(tuple(Block("conv", k, s, c) for c, s in zip(chans, strides)) for k in (3, 5))
    return Plan(tuple(input_shape), classes, Block("conv", 5, 1, 8), paths,
                tuple(Sync(l, "conv1x1") for l in syncs), (64,))


def main(argv=None):
    args = base_args(__doc__).parse_args(argv)
    ds = load(args)
    rows = []
    for label, syncs in CONFIGS.items():
        print(f"== {label}", flush=True)
        r = train_and_measure(fig7_plan(ds.input_shape, ds.classes, syncs), ds, args,
                              args.out / "sync_configs" / label.replace(" ", "_"))
        rows.append({"label": label, **r})
    write_results(args.out, "sync_configs", "Sync configurations (paper Fig. 7)", rows, "syncs", ds.name)
    print_table(args.out, "sync_configs")


if __name__ == "__main__":
    main()
