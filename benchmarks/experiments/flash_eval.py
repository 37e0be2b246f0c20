"""Training-free search (FLASH) validated: does the topology metric, and does the
predictor fitted on --fit samples, rank --held-out other sample nets as their
brief training does?

    python benchmarks/experiments/flash_eval.py --out runs/flash --samples runs/flash/samples

Samples are random plans of the space (--ops), each trained as `nasrt search
--strategy flash` trains its samples (cached in --samples, so a second run trains
nothing). Prints Kendall tau and Spearman rho of each feature alone and of the
predictor on the held-out set, and writes OUT/flash_eval.json and flash_eval.png.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np


def main(argv=None):
    from scipy.stats import kendalltau, spearmanr

    from nasrt.contract.space import SearchSpace
    from nasrt.data.builtin import load_dataset
    from nasrt.search.flash import (
        FEATURES,
        Predictor,
        Relaxation,
        SampleSettings,
        one_hot,
        sample_plans,
        soft_features,
        trained_samples,
    )

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir")
    ap.add_argument("--ops", default="conv3x3,conv5x5,sepconv3x3,sepconv5x5")
    ap.add_argument("--fit", type=int, default=25)
    ap.add_argument("--held-out", type=int, default=20)
    ap.add_argument("--sample-epochs", type=int, default=1)
    ap.add_argument("--sample-limit", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=Path, required=True, help="cache of trained samples")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    ds = load_dataset(args.dataset, args.data_dir)
    space = SearchSpace(ops=tuple(args.ops.split(","))).bind(ds.input_shape, ds.classes)
    plans = sample_plans(space, args.fit + args.held_out, args.seed)
    settings = SampleSettings(epochs=args.sample_epochs, limit=args.sample_limit, seed=args.seed)
    t0 = time.time()
    accs, spent = trained_samples(plans, ds, settings, args.samples)
    accs = np.array(accs)
    rx = Relaxation.of(space)
    t1 = time.perf_counter()
    X = np.array([soft_features(rx, *one_hot(space, p)) for p in plans])
    metric_us = (time.perf_counter() - t1) / len(plans) * 1e6
    fit, test = slice(0, args.fit), slice(args.fit, None)
    pred = Predictor.fit(X[fit], accs[fit])
    yhat = np.array([pred(x) for x in X[test]])
    rows = {}
    for i, name in enumerate(FEATURES):
        rows[name] = (kendalltau(X[test, i], accs[test])[0], spearmanr(X[test, i], accs[test])[0])
    rows["predictor"] = (kendalltau(yhat, accs[test])[0], spearmanr(yhat, accs[test])[0])
    print(f"{len(plans)} samples ({args.fit} fit, {len(plans) - args.fit} held out), accuracy "
          f"{accs.min():.4f}..{accs.max():.4f}; {spent:.0f} s training now, {time.time() - t0:.0f} s in all; "
          f"metric {metric_us:.0f} us per plan")
    print(f"{'ranker':<18}{'Kendall tau':>12}{'Spearman':>10}   (held-out)")
    for name, (tau, rho) in rows.items():
        print(f"{name:<18}{tau:>12.3f}{rho:>10.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flash_eval.json").write_text(json.dumps({
        "space_ops": args.ops, "settings": settings.__dict__, "fit": args.fit, "held_out": len(plans) - args.fit,
        "accuracies": accs.tolist(), "features": X.tolist(), "predicted_held_out": yhat.tolist(),
        "rank_correlation": {k: {"kendall_tau": v[0], "spearman": v[1]} for k, v in rows.items()},
        "metric_us_per_plan": metric_us, "sample_training_seconds": spent}, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].scatter(X[fit, 0], accs[fit], label="fit", marker="o")
    ax[0].scatter(X[test, 0], accs[test], label="held out", marker="s")
    ax[0].set(xlabel="NN-degree (2E/N)", ylabel="test accuracy (brief training)", title="topology metric")
    ax[0].legend()
    ax[1].scatter(yhat, accs[test], marker="s")
    lo, hi = min(yhat.min(), accs[test].min()), max(yhat.max(), accs[test].max())
    ax[1].plot([lo, hi], [lo, hi], "k:", lw=0.8)
    ax[1].set(xlabel="predicted", ylabel="measured", title=f"predictor on held-out nets "
              f"(tau {rows['predictor'][0]:.2f})")
    fig.tight_layout()
    fig.savefig(args.out / "flash_eval.png", dpi=110)


if __name__ == "__main__":
    main()
