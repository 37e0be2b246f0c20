"""The nasrt command: search, train, pipeline, bench, run, info."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from nasrt.errors import DataError, ModelError

DESCRIPTION = """\
nasrt: hardware-aware parallel-path NAS and a multicore CPU runtime.

  nasrt pipeline                      search -> retrain -> export -> bench (Fashion-MNIST)
  nasrt search --out runs/s           search a SuperNet, write runs/s/plan.json
  nasrt train runs/s/plan.json --out runs/s   retrain, export model.nasrt + model.onnx
  nasrt bench runs/s/model.nasrt      nasrt vs its peers (ONNX Runtime, OpenVINO, ...), side by side
  nasrt tune runs/s/model.nasrt       fastest kernel backend per conv on this machine
  nasrt run runs/s/model.nasrt x.npy  classify an input
  nasrt info runs/s/model.nasrt       plan, MACs, params, metadata, kernels
  nasrt predict runs/s/plan.json --lut lut.json   predicted latency (median of many calls)
  nasrt profile --out lut.json        latency table of the search space on this machine
  nasrt quantize runs/s/model.nasrt --out m.int8.nasrt   the int8 model, fp32 vs int8 accuracy
"""


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _count(text: str) -> float:
    """A count with an optional k / M / G suffix: "5.5M" -> 5.5e6 (a finite number > 0)."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text.strip()[-1:].lower(), 1.0)
    try:
        v = float(text.strip()[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number with an optional k/M/G suffix (e.g. 5.5M), "
                                         f"got {text!r}") from None
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _need(ok: bool, flag: str, what: str, value) -> None:
    """A flag check before any work: one line naming the flag."""
    if not ok:
        raise ValueError(f"{flag}: must be {what}, got {value!r}")


def _check_threads(flag: str, n: int | None) -> None:
    """None (the default) or 1..the cores this process may run on."""
    if n is None:
        return
    cores = len(os.sched_getaffinity(0))
    _need(n >= 1, flag, f"an integer in 1..{cores} (the cores available here)", n)
    _need(n <= cores, flag, f"at most the {cores} cores available to this process", n)


def _check_out_file(flag: str, path: Path | None) -> None:
    """An output file that can be written, checked before the work (a late failure
    would lose the work and name a temp file)."""
    if path is None:
        return
    if path.is_dir():
        raise ValueError(f"{path}: is a directory ({flag} needs a file name)")
    _check_writable_dir(flag, path.parent)


def _check_out_dir(flag: str, path: Path | None) -> None:
    """An output directory: existing (and a directory) or creatable."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a directory ({flag} needs a directory)")
    _check_writable_dir(flag, path)


def _check_writable_dir(flag: str, d: Path) -> None:
    d = Path(os.path.abspath(d))
    while not d.exists():  # created on writing: the nearest existing ancestor decides
        d = d.parent
    if not d.is_dir():
        raise ValueError(f"{d}: is not a directory (cannot create {flag}'s path under it)")
    if not os.access(d, os.W_OK | os.X_OK):
        raise ValueError(f"{d}: not writable ({flag})")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from nasrt.data.builtin import DATASETS
    p.add_argument("--dataset", choices=DATASETS, default="fashion-mnist",
                   help="fashion-mnist (IDX files, .gz or not), cifar10 (a cifar-10-batches-py directory or image "
                        "folders train/<class>, test/<class>), "
                        "folder (your images: DIR/train/<class>/*.png|jpg and DIR/test/<class>/..., or "
                        "DIR/<class>/... split by --val-split), npz (a file with x_train, y_train, x_test, "
                        "y_test) or synthetic (small generated task for smoke tests). Default: fashion-mnist")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the dataset's directory or file (default for fashion-mnist: "
                        "/usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist)")
    p.add_argument("--input-size", default=None,
                   help="folder: resize every image to HxW, e.g. 32x32 (default: the images' own size, "
                        "which must then agree)")
    p.add_argument("--val-split", type=float, default=None,
                   help="folder without test/: the fraction held out for testing, fixed seed (default 0.2)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: search 256, retrain 128)")


def _add_search_args(p: argparse.ArgumentParser, epochs_alias: bool = True) -> None:
    """Search-space and search flags; `--epochs` is an alias of --search-epochs only
    where it cannot be mistaken (not in `pipeline`, which also retrains)."""
    from nasrt.contract.space import CANDIDATES, SearchSpace
    from nasrt.search.config import SearchConfig
    sp, sc = SearchSpace(), SearchConfig()
    g = p.add_argument_group("search space")
    g.add_argument("--space", type=Path, help="a space.json to start from (flags below override it)")
    g.add_argument("--paths", type=int, help=f"parallel paths P, one per core at run time (default {sp.paths})")
    g.add_argument("--ops", type=_names, help=f"candidate ops per block, comma-separated, from "
                   f"{', '.join(CANDIDATES)} (any <op><k>x<k>; metaconvKxK: E-DNAS meta-kernel offering conv "
                   f"3x3..KxK as one merged conv in the search); default {','.join(sp.ops)}")
    g.add_argument("--channels", type=_ints, help=f"output channels per layer (default {','.join(map(str, sp.channels))})")
    g.add_argument("--strides", type=_ints, help=f"stride per layer (default {','.join(map(str, sp.strides))}; "
                   "for --channels of another length: 1, then 2)")
    g.add_argument("--merge", choices=["conv1x1", "sum"], help=f"how a sync point merges the paths (default {sp.merge})")
    g.add_argument("--no-stem", action="store_true", help="no shared stem (the same as --stem none)")
    g.add_argument("--stem", help="the shared stem: conv<k>x<k>, sepconv<k>x<k>, dwconv<k>x<k> (depthwise with a "
                                  "channel multiplier, E-DNAS's dwconv11x11) or none (default conv5x5)")
    g.add_argument("--stem-out", type=int, help="the stem's output channels (default 8; a dwconv stem needs a "
                                                "multiple of the input channels)")
    g.add_argument("--hidden", type=_ints, help=f"hidden FC sizes of the head (default {','.join(map(str, sp.hidden))})")
    g.add_argument("--residual", choices=["none", "search", "all"],
                   help="residual blocks (ReLU(chain + shortcut)): none, search (a learned decision per block) or "
                        f"all (default {sp.residual})")
    g.add_argument("--widths", type=_floats, help="width multipliers of every layer's channels, one choice per layer "
                   "shared by its paths, e.g. 0.5,1,1.5 (out = max(1, round(w * channels)); default 1)")
    g = p.add_argument_group("search")
    g.add_argument("--search-epochs", *(["--epochs"] if epochs_alias else []), dest="search_epochs", type=int,
                   default=sc.epochs,
                   help=f"search epochs (default {sc.epochs})")
    g.add_argument("--alpha", type=float, default=sc.alpha, help=f"weight of cross entropy, eq. 12 (default {sc.alpha})")
    g.add_argument("--beta", type=float, default=sc.beta,
                   help=f"weight of the cost terms, eq. 12: larger = cheaper, faster nets (default {sc.beta})")
    g.add_argument("--preset", choices=["default", "paper"], default=sc.preset,
                   help="default: SGD momentum + cosine for weights, Adam for decision variables; "
                        "paper: plain SGD, lr 1e-4 weights / 0.1 decision variables (needs many epochs)")
    g.add_argument("--gumbel", action="store_true", help="Gumbel-softmax sampling of op and sync choices "
                   "(temperature 5.0 decayed by exp(-0.045) per epoch)")
    g.add_argument("--feedback", action="store_true", help="E-DNAS feedback block: after every step the paths' "
                   "meta-kernels become their mix weighted by tanh(1/path loss) (needs a metaconv candidate)")
    g.add_argument("--search-limit", type=int, default=None,
                   help="search on the first N training images only (default: all)")
    g.add_argument("--cost", choices=["flops", "latency"], default="flops",
                   help="flops: the paper's FLOP + sync cost; latency: the latency measured on this machine "
                        "(needs --lut), with a smooth max over paths between sync points")
    g.add_argument("--lut", type=Path, help="latency table from `nasrt profile` (for --cost latency / --budget-us), "
                   "in the precision the net will run in (nasrt profile --precision int8 for int8 deployment)")
    g.add_argument("--budget-us", type=float, help="latency budget: the derived plan's predicted latency (the median "
                   "of many calls) on the table's threads stays under it (penalty in the search, then cheaper ops / "
                   "fewer syncs if needed)")
    g.add_argument("--budget-macs", type=_count, metavar="N", help="MAC budget, e.g. 5.5M or 800k: the derived "
                   "plan's MACs (stem, blocks, syncs, head) stay at or under it (penalty in the search on the "
                   "expected MACs, then cheaper ops / narrower widths / fewer shortcuts and syncs if needed)")
    g.add_argument("--lse-tau", type=float, default=2.0, help="temperature (us) of the smooth max over paths (default 2)")


def _add_strategy_args(p: argparse.ArgumentParser) -> None:
    from nasrt.search.config import STRATEGIES
    g = p.add_argument_group("training-free search (--strategy flash)")
    g.add_argument("--strategy", choices=STRATEGIES, default="gradient",
                   help="gradient: the SuperNet search (default); flash: topology metric + accuracy predictor "
                        "on sample nets + SHGO under --budget-us (with --lut), cost weight --beta")
    g.add_argument("--samples", type=Path, help="cache of trained sample nets, reused across runs "
                   "(default OUT/samples)")
    g.add_argument("--flash-samples", type=int, default=25, help="sample nets to fit the predictor on (default 25)")
    g.add_argument("--sample-epochs", type=int, default=1, help="training epochs per sample net (default 1)")
    g.add_argument("--sample-limit", type=int, default=10000,
                   help="training images per sample net (default 10000)")


def _space_from_args(args):
    from nasrt.contract.space import SearchSpace, parse_stem
    base = SearchSpace.load(args.space) if args.space else SearchSpace()
    changes = {key: getattr(args, key) for key in ("paths", "ops", "channels", "strides", "merge", "hidden",
                                                  "residual", "widths")
               if getattr(args, key) is not None}
    if args.stem is not None:
        stem = parse_stem(args.stem)
        if stem is None:
            changes["stem_kernel"] = None
        else:
            changes["stem_op"], changes["stem_kernel"] = stem
    if args.stem_out is not None:
        changes["stem_out"] = args.stem_out
    if args.no_stem:
        changes["stem_kernel"] = None
    return base.override(**changes, input=None, classes=None)  # validates every field before any work


def _search_config(args):
    from nasrt.search.config import SearchConfig
    return SearchConfig(epochs=args.search_epochs, alpha=args.alpha, beta=args.beta, preset=args.preset,
                        seed=args.seed, gumbel=args.gumbel, feedback=args.feedback,
                        train_limit=args.search_limit, cost=args.cost,
                        lut=str(args.lut) if args.lut else None, budget_us=args.budget_us, lse_tau=args.lse_tau,
                        budget_macs=args.budget_macs,
                        **({"batch_size": args.batch_size} if args.batch_size is not None else {}))


def _add_train_speed_args(p: argparse.ArgumentParser, tc) -> None:
    """Retraining speed flags (TrainConfig.precision / compile / loader_thread)."""
    g = p.add_argument_group("retraining speed (off by default until measured on a quiet machine)")
    g.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=tc.precision,
                   help="fp32, or bf16 autocast for convs and linears with fp32 master weights, BN statistics, "
                        "loss and evaluation (changes the numerics: accuracy may differ slightly); bf16 needs a "
                        "CPU with AMX or AVX512-BF16, auto picks bf16 where it has one (default fp32)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training step (the same result within float rounding; the compile "
                        "takes a while at the start of the run)")
    g.add_argument("--loader-thread", action="store_true",
                   help="prepare and augment the next batches in a background thread while the step runs "
                        "(bitwise the same result)")


def _train_config(args):
    from nasrt.search.config import TrainConfig
    return TrainConfig(epochs=args.train_epochs, seed=args.seed, **({"lr": args.lr} if args.lr is not None else {}),
                       precision=args.precision, compile=args.compile, loader_thread=args.loader_thread,
                       **({"erasing": args.erasing} if args.erasing is not None else {}),
                       **({"batch_size": args.batch_size} if args.batch_size is not None else {}))


def _check_data_flags(args) -> None:
    _need(args.batch_size is None or args.batch_size >= 1, "--batch-size", "an integer >= 1", args.batch_size)
    _need(args.val_split is None or 0 < args.val_split < 1, "--val-split", "a fraction in (0, 1)", args.val_split)


def _check_search_flags(args):
    """Every search flag before any work; returns the config."""
    import math
    _check_data_flags(args)
    _need(args.search_epochs >= 1, "--search-epochs", "an integer >= 1", args.search_epochs)
    for flag, v in (("--alpha", args.alpha), ("--beta", args.beta)):
        _need(math.isfinite(v) and v >= 0, flag, "a finite number >= 0", v)
    _need(args.search_limit is None or args.search_limit >= 1, "--search-limit", "an integer >= 1", args.search_limit)
    _need(math.isfinite(args.lse_tau) and args.lse_tau > 0, "--lse-tau", "a finite number > 0", args.lse_tau)
    _need(args.budget_us is None or (math.isfinite(args.budget_us) and args.budget_us > 0), "--budget-us",
          "a finite number > 0", args.budget_us)
    if args.lut is not None and not args.lut.is_file():
        raise ValueError(f"{args.lut}: no such latency table (--lut; make one with nasrt profile --out)")
    cfg = _search_config(args)
    cfg.validate()
    return cfg


def _check_train_flags(args):
    import math
    _check_data_flags(args)
    _need(args.train_epochs >= 1, "--train-epochs", "an integer >= 1", args.train_epochs)
    _need(args.lr is None or (math.isfinite(args.lr) and args.lr > 0), "--lr", "a finite number > 0", args.lr)
    _need(args.erasing is None or 0 <= args.erasing <= 1, "--erasing", "a probability in [0, 1]", args.erasing)
    cfg = _train_config(args)
    cfg.validate()
    if cfg.precision == "bf16":  # before any work: a CPU without native bf16 is refused
        from nasrt.search.training import resolve_precision
        try:
            resolve_precision(cfg.precision)
        except ValueError as e:
            raise ValueError(f"--{e}") from None
    return cfg


def _load_data(args):
    from nasrt.data.builtin import load_dataset
    from nasrt.data.user import parse_size
    size = parse_size(args.input_size) if args.input_size else None
    return load_dataset(args.dataset, args.data_dir, input_size=size, val_split=args.val_split)


def _strategy_settings(args):
    """The run's Settings from the flags (strategies.check validates them for the strategy)."""
    from nasrt.search.flash import FlashSettings, SampleSettings
    from nasrt.search.strategies import Settings
    sample = SampleSettings(epochs=args.sample_epochs, limit=args.sample_limit, seed=args.seed,
                            **({"batch_size": args.batch_size} if args.batch_size is not None else {}))
    return Settings(args.out, resume=args.resume, show_progress=not args.quiet,
                    flash=FlashSettings(args.flash_samples, args.samples, sample))


def cmd_search(args) -> int:
    from nasrt.search.strategies import check, search
    space = _space_from_args(args)
    cfg = _check_search_flags(args)
    _check_out_dir("--out", args.out)
    settings = _strategy_settings(args)
    check(args.strategy, cfg, settings)
    _check_out_dir("--samples", args.samples)
    result = search(args.strategy, space, _load_data(args), cfg, settings)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(result.plan.summary())
        print(f"wrote {', '.join(map(str, result.files))}")
    return 0


def cmd_train(args) -> int:
    from nasrt.contract.latency import precision_note, searched_precision
    from nasrt.contract.plan import Plan
    from nasrt.search.train import retrain
    cfg = _check_train_flags(args)
    plan = Plan.load(args.plan)
    _check_out_dir("--out", args.out)
    note = precision_note(searched_precision(plan), "int8" if args.int8 else "fp32", str(args.plan))
    if note and os.environ.get("RANK", "0") == "0":
        print(note, file=sys.stderr)
    ds = _load_data(args)
    m = retrain(plan, ds, cfg, args.out, resume=args.resume, show_progress=not args.quiet)
    if not m:  # a rank other than 0 under torchrun
        return 0
    print(f"test accuracy {m['test_accuracy']:.4f} (nasrt runtime: {m['runtime_test_accuracy']:.4f}), "
          f"MACs {m['macs']:,}, params {m['params']:,}, {m['wall_time_s']:.0f} s")
    print(f"wrote {args.out}/metrics.json, model.nasrt, model.onnx")
    if args.int8:
        from nasrt.pipeline import quantize_and_compare
        quantize_and_compare(args.out, ds)
    return 0


def cmd_pipeline(args) -> int:
    from nasrt.pipeline import run_pipeline
    from nasrt.search.strategies import check
    space = _space_from_args(args)
    search, train = _check_search_flags(args), _check_train_flags(args)
    _need(args.runs >= 1, "--runs", "an integer >= 1", args.runs)
    _check_out_dir("--out", args.out)
    settings = _strategy_settings(args)
    check(args.strategy, search, settings)
    _check_out_dir("--samples", args.samples)
    print(f"loading {args.dataset}")
    run_pipeline(space, _load_data(args), search, train, settings, strategy=args.strategy, runs=args.runs,
                 int8=args.int8)
    return 0


def _int8_peer_inputs(args, peers, tmp: Path, float_model: Path | None):
    """The QDQ ONNX of the int8 net (for ort-int8, openvino-int8): MODEL itself when it is an int8
    model, else MODEL quantised by --qparams; nasrt's calibration images (for ort-static,
    executorch-int8: --calib-images of --dataset, --seed) when a float model is there to quantise;
    and the images the top-1 agreement of int8 configurations is checked on: --dataset's first
    test images where they fit the model (random inputs leave the calibrated ranges, where int8
    runtimes legitimately disagree), else None (random inputs, said)."""
    from nasrt.contract.modelfile import KEY_DATA_CRC32, read_model
    from nasrt.quant import calibration_images, read_int8_model
    from nasrt.quant.params import read_params
    from nasrt.quant.qdq import write_qdq_onnx
    from nasrt.runtime.bench import AGREE_IMAGES
    if args.int8_model:
        plan, qp, tensors, _ = read_int8_model(args.model)
    elif args.qparams is None:
        if "executorch-int8" in peers:
            raise ModelError("--peers executorch-int8: needs --qparams or an int8 MODEL (the int8 net it is "
                             "compared with)")
        return None, None, None
    else:
        plan, tensors, meta = read_model(args.model)
        qp = read_params(args.qparams, plan, meta.get(KEY_DATA_CRC32))
    qdq = tmp / "int8.qdq.onnx"
    write_qdq_onnx(qdq, plan, tensors, qp)
    calib = None
    _check_data_flags(args)
    if {"ort-static", "executorch-int8"} & set(peers) and float_model is not None:
        _need(1 <= args.calib_images <= 512, "--calib-images", "an integer in 1..512", args.calib_images)
        ds = _load_data(args)
        if ds.input_shape != plan.input:
            raise ValueError(f"{args.model}: the model's input {list(plan.input)} is not the dataset's "
                             f"{list(ds.input_shape)} ({args.dataset}): ort-static calibrates on it")
        calib = calibration_images(ds, args.calib_images, args.seed)
    else:
        try:
            ds = _load_data(args)
        except DataError as e:
            print(f"note: int8 agreement checked on random inputs ({e})")
            return qdq, calib, None
        if ds.input_shape != plan.input:
            print(f"note: int8 agreement checked on random inputs: --dataset {args.dataset} has input "
                  f"{list(ds.input_shape)}, the model {list(plan.input)}")
            return qdq, calib, None
    return qdq, calib, ds.x_test[:AGREE_IMAGES]


ET_PEERS = ("executorch", "executorch-int8")


def _executorch_configs(model, peers, calib) -> list:
    """ExecuTorch's configurations (built on the search side: it needs torch)."""
    from nasrt.contract.modelfile import read_model
    out: list = []
    for name in [p for p in peers if p in ET_PEERS]:
        try:
            from nasrt.search.executorch_peer import executorch_configs
            plan, tensors, _ = read_model(model)
            out += executorch_configs(plan, tensors, calib, int8=name == "executorch-int8")
        except ImportError:
            print(f"skipped {name}: not installed (pip install executorch==1.5.1 torch==2.13.0: never a bare torch)")
    return out


def cmd_bench(args) -> int:
    import tempfile

    from nasrt.runtime.bench import compare, format_table, model_precision, onnx_for
    from nasrt.runtime.peers import INT8_PEERS
    args.int8_model = model_precision(args.model) == "int8"
    if args.fp32 is not None and not args.int8_model:
        raise ModelError(f"--fp32: {args.model} is not an int8 model (give the int8 model as MODEL)")
    if args.int8_model and args.qparams is not None:
        raise ModelError(f"--qparams: {args.model} is an int8 model already (it holds its parameters)")
    int8 = args.int8_model or args.qparams is not None
    if args.peers is None:  # an int8 net: compare with the peers' int8
        args.peers = list(INT8_PEERS) if int8 else ["ort", "openvino"]
    peers = [p for p in args.peers if p]
    # The float net the fp32 peers, ort-static and ExecuTorch start from: MODEL, or --fp32 for an int8 MODEL.
    float_model = args.fp32 if args.int8_model else args.model
    if float_model is None:
        needs = [p for p in peers if p not in ("ort-int8", "openvino-int8", "litert")]
        if needs:
            print(f"skipped {', '.join(needs)}: they start from the float model (--fp32 MODEL.nasrt)")
        peers = [p for p in peers if p not in needs]
    _check_threads("--threads", args.threads)
    _need(args.runs >= 1, "--runs", "an integer >= 1", args.runs)
    _need(args.warmup >= 0, "--warmup", "an integer >= 0", args.warmup)
    _check_out_file("--json", args.json)
    _check_out_file("--plot", args.plot)
    if args.tflite is not None and not args.tflite.is_file():
        raise ModelError(f"{args.tflite}: no such .tflite file")
    with onnx_for(float_model or args.model, args.onnx, peers) as onnx, \
            tempfile.TemporaryDirectory(prefix="nasrt-bench-") as tmp:
        qdq, calib, agree = _int8_peer_inputs(args, peers, Path(tmp), float_model)
        more = _executorch_configs(float_model, peers, calib) if float_model is not None else []
        report = compare(args.model, onnx, threads=args.threads, runs=args.runs, warmup=args.warmup,
                         peers=[p for p in peers if p not in ET_PEERS], tflite_path=args.tflite, qdq_path=qdq,
                         calib_images=calib, agree_images=agree, more=more, fp32_model=args.fp32)
    print(format_table(report))
    if args.json:
        report.save(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        from nasrt.plots import plot_latency
        plot_latency(report, args.plot)
        print(f"wrote {args.plot}")
    return 0 if report.consistent else 3


def cmd_info(args) -> int:
    from nasrt.contract.latency import precision_note
    from nasrt.contract.modelfile import KEY_GRAPH, KEY_PLAN, KEY_QUANT, KEY_VERSION, VERSION_INT8, latency_precision, read_model_file
    meta = read_model_file(args.model, lambda *_: None)[2]  # which reader: by the version
    int8 = meta.get(KEY_VERSION) == VERSION_INT8
    if int8:
        from nasrt.quant import read_int8_model
        from nasrt.quant.graph import conv_layers
        plan, qp, tensors, meta = read_int8_model(args.model)
        kind = f"int8 model ({qp.weight_bits}-bit weights, calibration {qp.method})"
    else:
        from nasrt.contract.modelfile import read_model
        plan, tensors, meta = read_model(args.model)
        kind = "nasrt model"
    print(f"{args.model}: {kind}, format version {meta.get(KEY_VERSION)}, {args.model.stat().st_size:,} bytes")
    print(plan.summary())
    if int8:
        n = sum(int(lq.weight.size + lq.bias.size) for lq in qp.layers.values())
        print(f"stored parameters {n:,} (BN folded), per layer:")
        for name in conv_layers(plan):
            print(f"  {name:<28}{'fp32' if name in qp.fp32 else 'int8'}")
    else:
        n = sum(int(t.size) for t in tensors.values())
        print(f"tensors {len(tensors)}, stored parameters {n:,} (BN folded)")
    for k, v in sorted(meta.items()):
        if k not in (KEY_PLAN, KEY_GRAPH, KEY_QUANT):
            print(f"  {k}: {v}")
    searched = latency_precision(meta, args.model)
    print(f"searched for {searched} latency" if searched else "no latency table recorded (searched by FLOPs, or by hand)")
    note = precision_note(searched, "int8" if int8 else "fp32", str(args.model))
    if note:
        print(note)
    try:
        from nasrt.runtime.host import cpu_signature
        from nasrt.runtime.runtime import Runtime
    except ImportError:
        print("runtime: not installed (the compiled core is missing)")
        return 0
    print(f"host: {cpu_signature()}")
    if meta.get(KEY_VERSION) == "1":
        print(f"runtime: format 1 predates the native loader: `nasrt upgrade {args.model}`")
        return 0
    rt = Runtime(args.model, threads=1)
    src = f"tuned ({rt.tuning_path.name})" if rt.tuning_path.exists() else "built-in choice; `nasrt tune` measures"
    print(f"kernels ({src}):")
    precisions = rt.precisions
    for name, backend in rt.kernels.items():
        print(f"  {name:<28}{backend} {precisions[name]}")
    return 0


def cmd_predict(args) -> int:
    from nasrt.contract.latency import check_plan, latency_parts, precision_note, predict_latency, searched_precision
    from nasrt.contract.lut import load_lut
    from nasrt.contract.plan import Plan
    lut = load_lut(args.lut)
    if args.plan.suffix == ".json":
        plan = Plan.load(args.plan)
        note = precision_note(searched_precision(plan), lut.precision, str(args.plan))
    else:  # a model file: the precision it runs in is the table's to match
        from nasrt.contract.modelfile import KEY_VERSION, VERSION_INT8, read_model_file
        plan, _, meta = read_model_file(args.plan, lambda *_: None)
        runs = "int8" if meta.get(KEY_VERSION) == VERSION_INT8 else "fp32"
        note = None if runs == lut.precision else (
            f"note: {args.plan} is an {runs} model, {args.lut} a table of {lut.precision} latency: profile in "
            f"{runs} (nasrt profile --precision {runs}) to predict it")
    try:
        check_plan(plan, lut)
    except ModelError as e:
        raise ModelError(f"{args.plan} on {args.lut}: {e}") from None
    cpu = lut.machine.get("cpu", lut.machine.get("machine", "?"))
    print(f"{args.plan} on {args.lut}: {lut.precision} latency measured on {cpu} (backend {lut.backend}); "
          "predicted median of many calls, batch 1 (us):")
    try:
        from nasrt.runtime.schedule import predict_schedule_latency
    except ImportError:  # the compiled core is missing: the critical path only
        predict_schedule_latency = None
    for t in sorted(lut.overhead_us):
        parts = latency_parts(plan, lut, t)
        line = f"  {t} thread{'s' if t > 1 else ' '}: {predict_latency(plan, lut, t):8.1f}"
        if t > 1:
            line += " critical path" + (f", {predict_schedule_latency(plan, lut, t):.1f} balanced (Runtime's default)"
                                        if predict_schedule_latency and t in lut.barrier_us else "")
        print(line + "   (table's statistic by part: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()) + ")")
    if note:
        print(note)
    return 0


def cmd_tune(args) -> int:
    from nasrt.runtime.runtime import Runtime
    rt = Runtime(args.model, threads=1, tune=True)
    backends = sorted({b for t in rt.tuning for b in t["us"]})
    # A backend that has no kernel of a conv's precision, or failed its self-check, was not timed: "-".
    cell = lambda t, b: f"{t['us'][b]:>10.1f}" if b in t["us"] else f"{'-':>10}"  # noqa: E731
    print(f"{'conv':<28}{'in->out k/s g  input':<24}{'prec':>5}" + "".join(f"{b:>10}" for b in backends) + "   best")
    for t in rt.tuning:
        ic, oc, k, s_, g, h, w = t["shape"]
        geo = f"{ic}->{oc} {k}x{k}/{s_} g{g} {h}x{w}"
        print(f"{t['name']:<28}{geo:<24}{t['precision']:>5}" + "".join(cell(t, b) for b in backends) + f"   {t['backend']}")
    best = sum(t["us"][t["backend"]] for t in rt.tuning)
    print(f"{'sum of the chosen (us)':<57}" + " " * 10 * len(backends) + f"   {best:.1f}")
    net = rt.tuning_net
    if net is None:
        print("every conv's fastest backend is the built-in choice")
    else:
        runs = ", ".join(f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}: tuned {r['tuned_us']:.1f} us, "
                         f"built-in {r['builtin_us']:.1f} us" for r in net["runs"])
        print(f"whole net ({runs}): keeps the {net['kept']} choice"
              + ("" if net["kept"] == "tuned" else " (the tuning was slower on the whole net)"))
    print(f"wrote {rt.tuning_path} (used by every later Runtime of this model on this CPU)")
    return 0


def cmd_upgrade(args) -> int:
    from nasrt.contract.modelfile import KEY_DATA_CRC32, KEY_FORMAT, KEY_GRAPH, KEY_PLAN, KEY_VERSION, read_model, write_model
    _check_out_file("--out", args.out)
    plan, tensors, meta = read_model(args.model)
    out = args.out or args.model
    # Keep what export stored (class names, input normalisation); the rest is recomputed.
    derived = {KEY_FORMAT, KEY_VERSION, KEY_PLAN, KEY_GRAPH, KEY_DATA_CRC32}
    write_model(out, plan, tensors, {k: v for k, v in meta.items() if k not in derived})
    print(f"wrote {out} (model format 2)")
    return 0


def _fp32_layers(args):
    """--fp32-layers: default, auto, none or layer names (each a conv or FC of MODEL), checked
    before any work."""
    from nasrt.quant.quantize import FP32_LAYERS
    v = args.fp32_layers
    if v in FP32_LAYERS:
        return v
    from nasrt.contract.modelfile import read_model
    from nasrt.quant.graph import conv_layers
    names = _names(v)
    known = conv_layers(read_model(args.model)[0])
    for n in names:
        _need(n in known, "--fp32-layers", f"default, auto, none or layer names of {args.model} "
              f"({', '.join(known)})", n)
    return names


def _print_fp32_choice(c: dict) -> None:
    print(f"precision per conv, measured here (us, each precision on its fastest backend; int8 SQNR dB, "
          f"fp32 below {c['min_sqnr_db']:g}):")
    for name, t in c["convs"].items():
        sq = "exact" if t["sqnr_db"] is None else f"{t['sqnr_db']:.1f}"
        print(f"  {name:<28}fp32 {t['fp32_us']:8.1f}  int8 {t['int8_us']:8.1f}  SQNR {sq:>6}  -> {t['precision']}")
    for t in c["tried"]:
        runs = ", ".join(f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}: {r['auto_us']:.1f} us vs "
                         f"{r['default_us']:.1f} us" for r in t["net"])
        print(f"whole net with fp32 {', '.join(t['fp32']) or 'none'} vs the default rule: {runs}")
    if not c["tried"]:
        print("the measured choice is the default rule's")
    elif c["kept"] == "default":
        print("kept the default rule (the measured choices were slower on the whole net)")


def cmd_quantize(args) -> int:
    from nasrt.quant import quantize_model
    _check_data_flags(args)
    _need(1 <= args.calib_images <= 512, "--calib-images", "an integer in 1..512", args.calib_images)
    _check_out_file("--out", args.out)
    _check_out_file("--onnx", args.onnx)
    fp32 = _fp32_layers(args)
    timer = None
    if fp32 == "auto":
        from nasrt.runtime import precision as timer
    r = quantize_model(args.model, _load_data(args), args.out, args.calib_images, args.method, args.weight_bits,
                       args.seed, fp32, timer)
    if args.onnx is not None:
        from nasrt.contract.modelfile import read_model
        from nasrt.quant.qdq import write_qdq_onnx
        plan, tensors, _ = read_model(args.model)
        write_qdq_onnx(args.onnx, plan, tensors, r.qp)
    print(f"calibrated on {r.calib_images} training images ({args.method}, "
          f"{args.weight_bits}-bit weights, fp32: {', '.join(sorted(r.qp.fp32)) or 'none'})")
    if fp32 == "auto":
        _print_fp32_choice(r.qp.fp32_choice)
    print(f"test accuracy ({r.test_images} images): fp32 {r.fp32_accuracy:.4f}  int8 {r.int8_accuracy:.4f}  "
          f"top-1 agreement {r.agreement:.4f}")
    print(f"per-layer error of int8 vs fp32 (first {r.layer_images} test images): SQNR dB, max |error| "
          "in LSB of the tensor's scale (logits: in logit units)")
    for k, e in r.layers.items():
        print(f"  {k:<28}{e.sqnr_db:7.1f}  {e.max_abs_err:7.2f}")
    if r.note:
        print(r.note, file=sys.stderr)
    kind = "int8 parameters (JSON)" if args.out.suffix == ".json" else "int8 model (format 3)"
    print(f"wrote {args.out} ({kind})" + (f" and {args.onnx} (the int8 net as QDQ ONNX)" if args.onnx else ""))
    return 0


def cmd_run(args) -> int:
    import numpy as np

    from nasrt.contract.modelfile import class_names
    from nasrt.runtime.inputs import read_input
    from nasrt.runtime.runtime import Runtime
    _need(args.top_k >= 1, "--top-k", "an integer >= 1", args.top_k)
    _check_threads("--threads", args.threads)
    rt = Runtime(args.model, threads=args.threads)
    x = read_input(args.input, rt.plan.input, rt.metadata, args.model)
    logits = rt.run(x)
    e = np.exp(logits - logits.max(1, keepdims=True))
    probs = e / e.sum(1, keepdims=True)
    names = class_names(rt.metadata, rt.classes, args.model)
    print(f"top {min(args.top_k, rt.classes)} of {rt.classes} classes, softmax probabilities:")
    for i, p in enumerate(probs):
        if len(probs) > 1:
            print(f"sample {i}:")
        for c in np.argsort(-p)[: args.top_k]:
            label = names[c] if names else f"class {c}"
            print(f"  {label:<16} {p[c]:.4f}")
    return 0


def cmd_profile(args) -> int:
    import math

    from nasrt.contract.space import SearchSpace
    from nasrt.runtime.profile import profile, write_kit
    if args.kit is None:
        _check_threads("--threads", args.threads)
    else:  # the board's threads: not this machine's cores
        _need(args.threads is None or args.threads >= 1, "--threads", "an integer >= 1", args.threads)
    _need(args.runs >= 1, "--runs", "an integer >= 1", args.runs)
    _need(args.rounds >= 1, "--rounds", "an integer >= 1", args.rounds)
    _need(args.runs >= args.rounds, "--runs", f"at least --rounds ({args.rounds}): one run per round", args.runs)
    _need(math.isfinite(args.span) and args.span >= 0, "--span", "a finite number of seconds >= 0", args.span)
    _need(args.warmup >= 0, "--warmup", "an integer >= 0", args.warmup)
    if args.kit is None:
        _check_out_file("--out", args.out)
    else:
        _check_out_dir("--kit", args.kit)
    space = SearchSpace.load(args.space) if args.space else SearchSpace()
    if args.input is not None and (len(args.input) != 3 or min(args.input) < 1):
        raise ModelError(f"--input: expected C,H,W (three positive integers), got {args.input}")
    if args.classes is not None and args.classes < 2:
        raise ModelError(f"--classes: expected an integer >= 2, got {args.classes}")
    # Unset parts default to Fashion-MNIST's (1,28,28) and 10 classes, the default dataset.
    space = space.bind(tuple(args.input or space.input or (1, 28, 28)), args.classes or space.classes or 10)
    from nasrt.quant.probe import probe_model_bytes
    int8_model = probe_model_bytes if args.precision == "int8" else None
    if args.kit is not None:
        kit = write_kit(space, args.kit, args.precision, args.threads, args.runs, args.rounds, args.warmup,
                        args.span, int8_model)
        print(f"wrote the {args.precision} profile kit {args.kit} ({len(kit.manifest['probes'])} probes, "
              f"{len(kit.models)} models, {kit.manifest['settings']['threads']} threads): on the board, "
              f"nasrt-profile {args.kit} --out lut.json")
        return 0
    lut = profile(space, threads=args.threads, runs=args.runs, rounds=args.rounds, warmup=args.warmup,
                  span_s=args.span, show_progress=not args.quiet, precision=args.precision, int8_model=int8_model)
    lut.save(args.out)
    m = lut.machine
    print(f"{m.get('cpu', m['machine'])}, {m['cores']} cores; {lut.precision}, backend {lut.backend}; "
          f"{args.runs} runs in {args.rounds} rounds over {args.span:g} s (min of round medians; the median "
          f"round of an op was {100 * lut.settings['round_spread']:.1f}% slower); "
          f"{lut.threads} threads for syncs")
    names = [name for name, _ in space.plan_ops]
    print(f"{'layer':<7}{'shape':<16}" + "".join(f"{o:>12}" for o in names) + f"{'sync ' + space.merge:>16}")
    t = lut.threads
    for l, (row, sh) in enumerate(zip(lut.ops_us, lut.layers)):
        shape = f"{sh.in_c}x{sh.h}x{sh.w}->{sh.out_c}"
        print(f"{l:<7}{shape:<16}" + "".join(f"{row[o]:>12.2f}" for o in names)
              + f"{lut.sync(space.merge, t, l):>16.2f}")

    def fmt(per_threads: dict) -> str:
        return ", ".join(f"{k} thr {v:.2f}" for k, v in per_threads.items())
    print(f"stem: {fmt(lut.stem_us)}; barrier: {fmt(lut.barrier_us)}; call: {fmt(lut.overhead_us)}; "
          f"head {lut.head_us:.2f} (us)")
    print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nasrt", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from nasrt import __version__
    parser.add_argument("--version", action="version", version=f"nasrt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p):
        p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same data -> same result (default 0)")
        p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint in --out")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("search", help="search a parallel-path SuperNet and derive plan.json",
                       description="Trains the SuperNet's weights and decision variables together on "
                                   "alpha*CE + beta*(loss_ops + loss_sync), then derives the plan: argmax op per "
                                   "block, a sync point kept where P_sync > P_direct. Writes OUT/plan.json, "
                                   "OUT/space.json, OUT/search_log.jsonl (per epoch: CE, accuracy, cost terms, "
                                   "op and sync probabilities) and OUT/checkpoint_search.pt (every epoch). "
                                   "--strategy flash instead fits an accuracy predictor on a few briefly trained "
                                   "sample nets and optimises it with SHGO (no SuperNet).")
    _add_data_args(p)
    p.add_argument("--out", type=Path, default=Path("runs/search"), help="output directory (default runs/search)")
    _add_search_args(p)
    _add_strategy_args(p)
    common(p)
    p.set_defaults(func=cmd_search)

    from nasrt.search.config import TrainConfig
    tc = TrainConfig()
    p = sub.add_parser("train", help="retrain a plan from scratch and export it",
                       description="Builds the plan's net from scratch, trains it, evaluates it, and writes "
                                   "OUT/metrics.json, OUT/checkpoint_train.pt, OUT/model.nasrt (BN folded) and OUT/model.onnx.")
    p.add_argument("plan", type=Path, help="plan.json (from nasrt search, or written by hand)")
    _add_data_args(p)
    p.add_argument("--out", type=Path, default=None, help="output directory (default: the plan's directory)")
    p.add_argument("--train-epochs", "--epochs", dest="train_epochs", type=int, default=tc.epochs,
                   help=f"training epochs (default {tc.epochs})")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate, cosine schedule (default {tc.lr})")
    p.add_argument("--erasing", type=float, default=None,
                   help=f"probability of random erasing per training image (default {tc.erasing})")
    p.add_argument("--int8", action="store_true",
                   help="also quantise the trained model as `nasrt quantize` does (512 training images, default "
                        "calibration): writes OUT/model.int8.nasrt and OUT/int8.json (both models' test accuracy "
                        "and latency here)")
    _add_train_speed_args(p, tc)
    common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pipeline", help="search, retrain, export and bench in one run, with a report",
                       description="The whole job: search -> derive -> retrain -> export -> bench, ending in a "
                                   "summary and a report folder with plan.json, model.nasrt, model.onnx, "
                                   "metrics.json, bench.json and PNG plots.")
    _add_data_args(p)
    p.add_argument("--out", type=Path, default=Path("runs/pipeline"), help="report folder (default runs/pipeline)")
    _add_search_args(p, epochs_alias=False)
    p.add_argument("--train-epochs", type=int, default=tc.epochs, help=f"retraining epochs (default {tc.epochs})")
    p.add_argument("--lr", type=float, default=None, help=f"peak retraining learning rate (default {tc.lr})")
    p.add_argument("--erasing", type=float, default=None,
                   help=f"probability of random erasing per training image (default {tc.erasing})")
    p.add_argument("--runs", type=int, default=2000, help="timed calls per bench configuration (default 2000)")
    p.add_argument("--int8", action="store_true",
                   help="also quantise the exported model as `nasrt train --int8` does: writes OUT/model.int8.nasrt "
                        "and OUT/int8.json; the bench, the latency plot and the summary show both models")
    _add_train_speed_args(p, tc)
    _add_strategy_args(p)
    common(p)
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("bench", help="latency of nasrt vs its peers (ONNX Runtime, OpenVINO, LiteRT) on one model",
                       description="Runs the same input through nasrt single-core, nasrt with one pinned thread "
                                   "per path, and the peers that are installed: ONNX Runtime (sequential 1 and N "
                                   "intra-op threads with affinities; parallel mode), OpenVINO (LATENCY hint, 1 and "
                                   "N threads) and LiteRT (with --tflite), in interleaved rounds with an idle pause "
                                   "between configurations, in one process. Checks first that all give the same "
                                   "logits (exit status 3 if not; ORT and OpenVINO run fp32, as nasrt; the precision "
                                   "column says what each ran); warns when another process holds one of the "
                                   "cores; ends with the host's CPU and ISA and a verdict of nasrt's best "
                                   "configuration against the best peer.")
    p.add_argument("model", type=Path, help="model.nasrt")
    p.add_argument("--onnx", type=Path, help="the ONNX file of the same net (default: MODEL with .onnx, "
                   "else built from the model file)")
    p.add_argument("--threads", type=int, default=None, help="nasrt path threads and ORT threads "
                   "(default: min(paths, cores))")
    p.add_argument("--peers", type=_names, default=None,
                   help="runtimes to compare with, comma-separated from ort, openvino, litert, ncnn, mnn (fp32) and "
                        "ort-int8, openvino-int8 (nasrt's int8 net as QDQ ONNX, needs --qparams), ort-static "
                        "(ORT's quantize_static on nasrt's calibration images), executorch (XNNPACK, fp32) and "
                        "executorch-int8 (PT2E XNNPACKQuantizer on nasrt's calibration images, needs --qparams; both "
                        "need torch and executorch) (default ort,openvino; with "
                        "--qparams the three int8 ones; '' for nasrt alone); one not installed is skipped with a hint")
    p.add_argument("--tflite", type=Path, help="the same net as .tflite, for the litert peer (see README)")
    p.add_argument("--qparams", type=Path, help="int8 parameters of a float MODEL (`nasrt quantize --out "
                   "Q.json`): the int8 peers run this quantised net")
    p.add_argument("--fp32", type=Path, help="with an int8 MODEL (`nasrt quantize --out MODEL.int8.nasrt`): the "
                   "float model it was quantised from; nasrt fp32 runs beside nasrt int8 (their ratio in one "
                   "process) and the fp32 peers, ort-static and ExecuTorch start from it")
    p.add_argument("--calib-images", type=int, default=512,
                   help="ort-static: calibrate on this many training images of --dataset, as `nasrt quantize` "
                        "(default 512)")
    p.add_argument("--seed", type=int, default=0, help="ort-static: which training images (default 0)")
    _add_data_args(p)
    p.add_argument("--runs", type=int, default=2000, help="timed calls per configuration (default 2000)")
    p.add_argument("--warmup", type=int, default=200, help="untimed warm-up calls (default 200)")
    p.add_argument("--json", type=Path, help="write every raw timing and the summary here")
    p.add_argument("--plot", type=Path, help="draw the latency comparison to this PNG (needs matplotlib)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("tune", help="time every conv of a model on every kernel backend here and keep the fastest",
                       description="Times each conv of MODEL on each compiled kernel backend (oneDNN, XNNPACK) on "
                                   "this machine, prints the table and writes MODEL.tune.json, which every later "
                                   "Runtime of this model on this CPU uses. A tuning file of another model or CPU is "
                                   "ignored with a notice.")
    p.add_argument("model", type=Path, help="model.nasrt")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("upgrade", help="rewrite a model file of format 1 as format 2 (the native loader's)",
                       description="Reads a model.nasrt written by nasrt < 0.2 and writes it in format 2 "
                                   "(lowered graph and data checksum), which the native runtime needs.")
    p.add_argument("model", type=Path, help="model.nasrt of format 1")
    p.add_argument("--out", type=Path, help="where to write (default: in place, atomically)")
    p.set_defaults(func=cmd_upgrade)

    p = sub.add_parser("run", help="classify an input with a model",
                       description="Prints the top-k classes with their probabilities.")
    p.add_argument("model", type=Path, help="model.nasrt")
    p.add_argument("input", type=Path, help="a .npy float32 array (C,H,W) or (N,C,H,W), already normalised "
                   "like the training data; or an image file (needs Pillow), resized and normalised with the "
                   "training set's statistics stored in the model")
    p.add_argument("--top-k", type=int, default=3, help="classes to show (default 3)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: min(paths, cores))")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("profile", help="measure the latency table of a search space on this machine",
                       description="Measures, with the nasrt runtime itself, the latency of every candidate op at "
                                   "every layer shape of the space (one pinned thread, warm), of the stem and the "
                                   "head, and of every sync merge at every layer including the barrier wait with "
                                   "--threads threads. Each entry is timed in --rounds rounds interleaved over all "
                                   "entries and keeps its smallest round median, so a passing disturbance of the "
                                   "machine does not shift it. Records the machine and the settings. Use the table "
                                   "with `nasrt search --cost latency --lut`. --precision int8 measures the int8 "
                                   "net (probes quantised as `nasrt quantize` does). For a board without Python, "
                                   "--kit DIR writes the probes instead, and `nasrt-profile DIR` (installed with "
                                   "the native package) measures the same table there.")
    p.add_argument("--space", type=Path, help="space.json (from nasrt search); default: the default space")
    p.add_argument("--input", type=_ints, help="input C,H,W if the space has none (default 1,28,28)")
    p.add_argument("--classes", type=int, help="classes if the space has none (default 10)")
    p.add_argument("--out", type=Path, default=Path("lut.json"), help="the table to write (default lut.json)")
    p.add_argument("--threads", type=int, help="threads for the sync and stem probes (default min(paths, cores))")
    p.add_argument("--runs", type=int, default=1000, help="timed runs per entry, over all rounds (default 1000)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds per entry (default 10)")
    p.add_argument("--span", type=float, default=20.0,
                   help="spread the rounds over at least this many seconds (default 20)")
    p.add_argument("--warmup", type=int, default=50, help="untimed warm-up runs per entry and round (default 50)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="what the table is measured in (default fp32)")
    p.add_argument("--kit", type=Path, metavar="DIR",
                   help="write the profile kit to DIR instead of measuring here: run `nasrt-profile DIR` on "
                        "the board (--threads: the board's threads, default one per path)")
    p.set_defaults(func=cmd_profile)

    from nasrt.quant.calibrate import DEFAULT_METHOD, METHODS
    from nasrt.quant.quantize import AUTO_MIN_SQNR_DB
    p = sub.add_parser("quantize", help="int8 post-training quantisation: the int8 model, calibrated on training images",
                       description="Calibrates the activation ranges of MODEL on --calib-images training images "
                                   "(never the test split), quantises the weights per output channel, writes the "
                                   "int8 model to --out (model format 3, docs/FORMATS.md section 2; the "
                                   "parameters alone as JSON when --out ends in .json, section 6) and prints "
                                   "the test accuracy of fp32 vs the int8 reference (numpy, bit-exact) and the "
                                   "error of every layer.")
    p.add_argument("model", type=Path, help="model.nasrt")
    _add_data_args(p)
    p.add_argument("--calib-images", type=int, default=512, help="training images to calibrate on, 1..512 (default 512)")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help=f"calibration: ONNX Runtime's minmax, percentile or entropy, or numpy-minmax "
                        f"(no onnxruntime); default {DEFAULT_METHOD} (docs/EXPERIMENTS.md)")
    p.add_argument("--weight-bits", type=int, choices=(8, 7), default=8,
                   help="8 (default) or 7: |w| <= 64, exact on oneDNN without VNNI")
    p.add_argument("--seed", type=int, default=0, help="which training images are drawn (default 0)")
    p.add_argument("--out", type=Path, required=True,
                   help="MODEL.int8.nasrt: the int8 model to write; X.json: the parameters file instead")
    p.add_argument("--onnx", type=Path, help="also write the int8 net as QDQ ONNX here (what ONNX Runtime and "
                   "OpenVINO run as the same quantised net)")
    p.add_argument("--fp32-layers", default="default",
                   help="layers kept in fp32: default (the stem reading 1-3 channels), none, a comma-separated "
                        "list of conv/FC names, or auto: every conv timed in fp32 and int8 on this machine (run it "
                        "on the target), fp32 where that is faster or its int8 SQNR is below "
                        f"{AUTO_MIN_SQNR_DB:g} dB, kept only if the whole net is not slower than the default rule "
                        "on 1 and P threads (the model records how the list was chosen)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("predict", help="the predicted latency of a plan or model from a latency table",
                       description="Predicts the latency of PLAN (plan.json, or a model file's plan) from a latency "
                                   "table (nasrt profile) on 1 and the table's threads: the plain median of many "
                                   "calls, as `nasrt bench` or a user measures it, with the table's statistic per "
                                   "part (ops on the critical path, syncs, stem, head, call). Says the precision the "
                                   "table was measured in, and notes a plan searched for, or a model running in, "
                                   "another precision.")
    p.add_argument("plan", type=Path, help="plan.json or model.nasrt / model.int8.nasrt")
    p.add_argument("--lut", type=Path, required=True, help="the latency table (lut.json from nasrt profile)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("info", help="show a model file's plan, MACs, params, metadata and the backend of every conv")
    p.add_argument("model", type=Path, help="model.nasrt")
    p.set_defaults(func=cmd_info)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"nasrt: warning: {message}", file=sys.stderr)  # one line, no source location


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train" and args.out is None:  # upgrade's --out None means in place
        args.out = args.plan.parent
    try:
        try:
            return args.func(args)
        finally:
            if "nasrt.search.distributed" in sys.modules:  # under torchrun: leave the process group cleanly
                sys.modules["nasrt.search.distributed"].shutdown()
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as e:  # a missing extra: one line, no traceback
        extra = "search" if e.name in ("torch", "onnx", "onnxruntime", "tqdm", "matplotlib", "scipy") else None
        hint = f"pip install 'nasrt[{extra}]'" if extra else f"pip install {e.name}"
        print(f"nasrt: error: {args.command} needs {e.name}: {hint}", file=sys.stderr)
        return 2
    except (ModelError, ValueError, OSError, RecursionError) as e:
        print(f"nasrt: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
