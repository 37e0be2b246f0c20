"""Training-free search in the manner of FLASH (Li et al.): a topology metric of the
net's graph, an accuracy predictor fitted on a few briefly trained sample nets,
and SHGO over a continuous relaxation of the choices, under a latency budget.

The seed text gives only FLASH's abstract, so the pieces are defined here for
nasrt's path/sync nets (docs/EXPERIMENTS.md measures them):

- The graph: every channel of every feature map is a node; a conv connects each
  output channel to the input channels of its group (in_c * out_c edges dense,
  out_c depthwise); a kept conv1x1 sync connects all P paths' channels to the
  merged map, a sum sync each path's channel to the merged one. **NN-degree** is
  the graph's average degree 2E/N. It sees width, depth, op type and cross-path
  connections, but not the kernel size; the **receptive field** (mean over paths,
  relative to the input) and **log MACs** add what the kernel size does.
- Every feature is computed from soft choices (probabilities per block choice and
  per sync), linear in them where it can be: a hard plan is the one-hot case, and
  the SHGO relaxation evaluates the same functions at fractional choices.
- Residual and width choices (a space's `residual`, `widths`): the features take the
  expectation over each layer's (input, output) width pair and P_res of each block's
  shortcut (a projection's edges and MACs, the identity's one edge per channel); samples
  draw them at random; SHGO keeps every block plain (or residual, "all") at the widest
  widths, and the greedy refinement flips them block by block and layer by layer.
- The predictor: ridge regression of test accuracy on the standardised features,
  fitted on N sample nets trained briefly (cached in --samples, one JSON each).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasrt._io import atomic_write_json, read_json
from nasrt.contract.latency import predict_latency, table_record
from nasrt.contract.lut import load_lut
from nasrt.contract.ops import lower_block, merge_unit, shortcut_unit
from nasrt.contract.plan import Plan
from nasrt.contract.space import SearchSpace
from nasrt.errors import DataError, NasrtError
from nasrt.search.budget import check_macs, fit_budget, fit_macs
from nasrt.search.cost import expected_latency, latency_table, max_latency
from nasrt.search.distributed import init
from nasrt.search.net import build_net
from nasrt.search.result import SearchResult
from nasrt.search.supernet import _make_plan
from nasrt.search.training import batches, evaluate, seed_epoch

FEATURES = ("nn_degree", "log10_macs", "receptive_field", "syncs")


# -- the topology metric and the features -----------------------------------------

def _units_row(units, h, w) -> tuple[float, float, float]:
    """(edges, nodes, MACs) of a conv chain at input (h, w)."""
    e = n = macs = 0
    for u in units:
        e += u.out_c * (u.in_c // u.groups)
        n += u.out_c
        macs += u.macs(h, w)
        h, w = u.out_hw(h, w)
    return e, n, macs


def _tables(space: SearchSpace):
    """By layer and (input, output) width pair (layer 0 reads the stem's map: every input width
    the same): per choice (edges, nodes, macs, rf step); a residual block's shortcut (edges,
    nodes, macs: a projection, or the identity's one edge per channel); per layer and output
    width the sync (edges, nodes, macs)."""
    L, W, n = space.layers, len(space.widths), len(space.candidates)
    ops, res, syncs = np.zeros((L, W, W, n, 4)), np.zeros((L, W, W, 3)), np.zeros((L, W, 3))
    for l, s in enumerate(space.layer_shapes()):
        ins = space.in_widths(l)
        for i in range(W):
            in_c = ins[i if len(ins) > 1 else 0]
            for o, out_c in enumerate(space.layer_widths(l)):
                for c, (op, k) in enumerate(space.candidates):
                    ops[l, i, o, c] = (*_units_row(lower_block(op, in_c, out_c, k, s.stride), s.h, s.w), k - 1)
                sc = shortcut_unit(in_c, out_c, s.stride)
                res[l, i, o] = _units_row([sc], s.h, s.w) if sc else (out_c, 0, 0)
        for o, out_c in enumerate(space.layer_widths(l)):
            mu = merge_unit(space.merge, space.paths, out_c)
            syncs[l, o] = (mu.in_c * mu.out_c, out_c, mu.macs(s.oh, s.ow)) if mu else (space.paths * out_c, out_c, 0)
    return ops, res, syncs


@dataclass(frozen=True)
class Relaxation:
    """The space's choices as numbers: what soft_features evaluates (W = 1 without width choices)."""
    space: SearchSpace
    ops: np.ndarray    # (L, W, W, n, 4): edges, nodes, MACs, receptive-field step (k - 1)
    syncs: np.ndarray  # (L, W, 3): edges, nodes, MACs
    fixed: tuple[float, float, float]  # edges, nodes, MACs of stem and head but its first FC's input
    jumps: np.ndarray  # (L,): the input stride product before each layer
    res: np.ndarray    # (L, W, W, 3): a residual block's shortcut
    head_in: np.ndarray  # (W, 3): the head's first FC by the last layer's width

    @classmethod
    def of(cls, space: SearchSpace) -> Relaxation:
        ops, res, syncs = _tables(space)
        c = space.input[0]
        e, n, macs = 0.0, float(c), 0.0
        stem = space.stem_block
        if stem is not None:
            for u in lower_block(stem.op, c, stem.out, stem.kernel, stem.stride):
                e += u.out_c * (u.in_c // u.groups)
                n += u.out_c
                macs += u.macs(*space.input[1:])
        sizes = (*space.hidden, space.classes)
        head_in = np.array([(space.paths * c_last * sizes[0], sizes[0], space.paths * c_last * sizes[0])
                            for c_last in space.layer_widths(space.layers - 1)], dtype=np.float64)
        width = sizes[0]
        for h in sizes[1:]:
            e, n, macs = e + width * h, n + h, macs + width * h
            width = h
        jumps = np.cumprod([1, *space.strides[:-1]]).astype(np.float64)
        return cls(space, ops, syncs, (e, n, macs), jumps, res, head_in)


def _pairs(rx: Relaxation, width_probs: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(P(in) * P(out) (L, W, W), P(out) (L, W)); layer 0's input is the stem's."""
    L, W = rx.syncs.shape[:2]
    if width_probs is None:
        if W != 1:
            raise ValueError(f"width_probs: the space has {W} widths; pass the (L, {W}) width probabilities")
        width_probs = np.ones((L, 1))
    ins = np.vstack([np.eye(W)[:1], width_probs[:-1]])
    return ins[:, :, None] * width_probs[:, None, :], width_probs


def soft_features(rx: Relaxation, op_probs: np.ndarray, sync_probs: np.ndarray, res_probs: np.ndarray | None = None,
                  width_probs: np.ndarray | None = None) -> np.ndarray:
    """FEATURES of the expected net: op_probs (L, P, n) per block, sync_probs (L,); res_probs
    (L, P) P_res of every block (None: no residual blocks), width_probs (L, W) (None: one width)."""
    pair, out = _pairs(rx, width_probs)
    per_block = np.einsum("lio,lpn,lionf->lpf", pair, op_probs, rx.ops)  # (L, P, 4) expected per block
    if res_probs is not None:
        per_block[..., :3] += res_probs[..., None] * np.einsum("lio,liof->lf", pair, rx.res)[:, None, :]
    sync = np.einsum("lo,lof->lf", out, rx.syncs)  # (L, 3)
    head = out[-1] @ rx.head_in  # (3,)
    e = rx.fixed[0] + head[0] + per_block[..., 0].sum() + (sync_probs * sync[:, 0]).sum()
    n = rx.fixed[1] + head[1] + per_block[..., 1].sum() + (sync_probs * sync[:, 1]).sum()
    macs = rx.fixed[2] + head[2] + per_block[..., 2].sum() + (sync_probs * sync[:, 2]).sum()
    stem = rx.space.stem_block
    rf0 = 1.0 + (stem.kernel - 1 if stem is not None else 0)
    rf = rf0 + (per_block[..., 3] * rx.jumps[:, None]).sum(0).mean()  # mean over paths
    return np.array([2 * e / n, math.log10(macs), rf / rx.space.input[1], sync_probs.sum()])


def one_hot(space: SearchSpace, plan: Plan):
    """A plan of the space as (op_probs, sync_probs, res_probs, width_probs): soft_features' arguments
    (res_probs None for a space without residual blocks, width_probs None for one width)."""
    L, P, n, W = space.layers, space.paths, len(space.candidates), len(space.widths)
    op = np.zeros((L, P, n))
    res = np.zeros((L, P))
    width = np.zeros((L, W))
    for p, path in enumerate(plan.paths):
        for l, b in enumerate(path):
            if (b.op, b.kernel) not in space.candidates:
                raise ValueError(f"plan paths[{p}][{l}]: {b.label()} is not a choice of the space")
            if b.out not in space.layer_widths(l):
                raise ValueError(f"plan paths[{p}][{l}]: out {b.out} is not a width of the space "
                                 f"(layer {l}: {', '.join(map(str, space.layer_widths(l)))})")
            op[l, p, space.candidates.index((b.op, b.kernel))] = 1.0
            width[l, space.layer_widths(l).index(b.out)] = 1.0
            res[l, p] = float(b.residual)
    kept = {s.after for s in plan.syncs}
    return (op, np.array([1.0 if l in kept else 0.0 for l in range(L)]),
            res if space.residual != "none" else None, width if W > 1 else None)


def nn_degree(space: SearchSpace, plan: Plan) -> float:
    """The topology metric of a plan: average degree of its channel graph (no training)."""
    return float(soft_features(Relaxation.of(space), *one_hot(space, plan))[0])


# -- the predictor ---------------------------------------------------------------

@dataclass(frozen=True)
class Predictor:
    """Ridge regression of accuracy on standardised FEATURES."""
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray  # intercept first

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, ridge: float = 1e-2) -> Predictor:
        mean, std = X.mean(0), X.std(0)
        std = np.where(std > 0, std, 1.0)  # a constant feature (e.g. no syncs in the space) drops out
        Z = np.hstack([np.ones((len(X), 1)), (X - mean) / std])
        reg = ridge * len(X) * np.eye(Z.shape[1])
        reg[0, 0] = 0.0  # the intercept is not shrunk
        coef = np.linalg.solve(Z.T @ Z + reg, Z.T @ y)
        return cls(mean, std, coef)

    def __call__(self, x: np.ndarray) -> float:
        return float(self.coef[0] + ((x - self.mean) / self.std) @ self.coef[1:])

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "mean": self.mean.tolist(), "std": self.std.tolist(),
                "coef": self.coef.tolist()}


# -- samples: brief trainings, cached --------------------------------------------

@dataclass(frozen=True)
class SampleSettings:
    epochs: int = 1
    limit: int = 10000      # training images
    test_limit: int = 5000  # test images
    batch_size: int = 128
    lr: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class FlashSettings:
    """How many sample nets, where they are cached, how each is trained."""
    samples: int = 25                  # sample nets the predictor is fitted on
    cache: Path | None = None          # trained samples, reused across runs; None: OUT/samples
    sample: SampleSettings | None = None  # None: the defaults, seeded by SearchConfig.seed

    def validate(self) -> None:
        """Before any work: the predictor needs >= 5 samples, each trained >= 1 epoch on >= 1 image."""
        s = self.sample or SampleSettings()
        if self.samples < 5 or s.epochs < 1 or s.limit < 1:
            raise ValueError("--flash-samples must be >= 5, --sample-epochs and --sample-limit >= 1")


def random_plan(space: SearchSpace, rng: random.Random) -> Plan:
    choice = [[rng.choice(space.candidates) for _ in range(space.layers)] for _ in range(space.paths)]
    syncs = [l for l in range(space.layers) if rng.random() < 0.5]
    # drawn after the ops and syncs: a space without these choices samples the plans it always did
    residual = ([[rng.random() < 0.5 for _ in range(space.layers)] for _ in range(space.paths)]
                if space.searches_residual else None)
    width_idx = [rng.randrange(len(space.widths)) for _ in range(space.layers)] if len(space.widths) > 1 else None
    return _make_plan(space, choice, syncs, residual=residual, width_idx=width_idx)


def sample_plans(space: SearchSpace, count: int, seed: int) -> list[Plan]:
    """`count` distinct random plans of the space (fewer if the space is smaller)."""
    rng, seen, plans = random.Random(seed), set(), []
    for _ in range(count * 50):
        p = random_plan(space, rng)
        if p.to_json() not in seen:
            seen.add(p.to_json())
            plans.append(p)
            if len(plans) == count:
                break
    return plans


CACHE_FORMAT, CACHE_VERSION = "nasrt.flash-sample", 2  # 1: keyed by dataset name, unchecked (nasrt <= 0.2)
MAX_SAMPLE_BYTES = 1 << 20  # a cache entry is a plan and a few numbers


def data_digest(ds, s: SampleSettings) -> str:
    """SHA-256 of exactly the data a sample trains and is tested on (the first s.limit
    training and s.test_limit test images and labels, and the flip augmentation): two
    datasets share cached samples only if this is equal, whatever their names."""
    h = hashlib.sha256()
    parts = (("x_train", ds.x_train[:s.limit]), ("y_train", ds.y_train[:s.limit]),
             ("x_test", ds.x_test[:s.test_limit]), ("y_test", ds.y_test[:s.test_limit]))
    for name, a in parts:
        a = np.ascontiguousarray(a)
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.reshape(-1).view(np.uint8))
    h.update(f"flip:{bool(ds.flip)}".encode())
    return h.hexdigest()


def _key(plan: Plan, digest: str, s: SampleSettings) -> str:
    text = json.dumps({"plan": plan.to_dict(), "data_sha256": digest, "settings": s.__dict__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _entry(plan: Plan, digest: str, ds, s: SampleSettings, acc: float, secs: float) -> dict:
    return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "plan": plan.to_dict(), "data_sha256": digest,
            "dataset": ds.name, "settings": s.__dict__, "test_acc": acc, "seconds": secs}


def read_sample(path: Path, plan: Plan, digest: str, s: SampleSettings) -> tuple[float | None, str]:
    """(test accuracy, "") of a valid cache entry for exactly this plan, data and settings,
    else (None, why). Never raises for a bad entry: the caller trains the sample again."""
    try:
        d = read_json(path, DataError, "a FLASH sample", MAX_SAMPLE_BYTES)
    except NasrtError as e:
        return None, str(e)
    if not isinstance(d, dict) or d.get("format") != CACHE_FORMAT or d.get("version") != CACHE_VERSION:
        return None, f"{path}: not a sample of this cache format ({CACHE_FORMAT} {CACHE_VERSION})"
    for field, want in (("plan", plan.to_dict()), ("data_sha256", digest), ("settings", s.__dict__)):
        if d.get(field) != want:
            return None, f"{path}: {field}: not this sample's"
    acc, secs = d.get("test_acc"), d.get("seconds")
    if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0.0 <= acc <= 1.0:  # NaN fails too
        return None, f"{path}: test_acc: must be an accuracy in [0, 1], got {repr(acc)[:40]}"
    if isinstance(secs, bool) or not isinstance(secs, (int, float)) or not 0.0 <= secs < math.inf:
        return None, f"{path}: seconds: must be a finite number >= 0, got {repr(secs)[:40]}"
    return float(acc), ""


def _note_old_entries(cache: Path, log) -> None:
    """One note for entries of the old name-keyed format: never trusted, trained again."""
    old = 0
    for f in cache.glob("*.json"):
        try:
            d = read_json(f, DataError, "a FLASH sample", MAX_SAMPLE_BYTES)
        except NasrtError:
            continue
        if isinstance(d, dict) and "test_acc" in d and d.get("format") != CACHE_FORMAT:
            old += 1
    if old:
        log(f"{cache}: {old} sample(s) of an older cache format (keyed by dataset name, unchecked) are "
            "ignored; samples are trained again under content-hash keys")


def train_sample(plan: Plan, ds, s: SampleSettings) -> float:
    """Test accuracy of the plan's net after a brief training (the retrain recipe, shortened)."""
    import torch

    torch.manual_seed(s.seed)
    sub = dataclasses.replace(ds, x_train=ds.x_train[:s.limit], y_train=ds.y_train[:s.limit])
    net = build_net(plan).to(memory_format=torch.channels_last)
    steps = s.epochs * math.ceil(len(sub.x_train) / s.batch_size)
    opt = torch.optim.SGD(net.parameters(), lr=s.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for epoch in range(s.epochs):
        for xb, yb in batches(sub, s.batch_size, seed_epoch(s.seed, epoch)):
            loss = torch.nn.functional.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return evaluate(net, ds.x_test[:s.test_limit], ds.y_test[:s.test_limit])


def trained_samples(plans: list[Plan], ds, s: SampleSettings, cache: Path, log=print) -> tuple[list[float], float]:
    """Accuracy of every plan, training the ones not in the cache (one JSON per plan, data
    content hash and settings, written atomically, so an interrupted run keeps what it
    finished; docs/FORMATS.md). An entry that is damaged, of an older format, for other
    data or with an impossible accuracy is trained again. Returns (accuracies, seconds
    spent training now)."""
    cache.mkdir(parents=True, exist_ok=True)
    _note_old_entries(cache, log)
    digest = data_digest(ds, s)
    accs, spent = [], 0.0
    for i, plan in enumerate(plans):
        f = cache / f"{_key(plan, digest, s)}.json"
        if f.exists() or f.is_symlink():
            acc, why = read_sample(f, plan, digest, s)
            if acc is not None:
                accs.append(acc)
                continue
            log(f"{why}: training the sample again")
        t0 = time.time()
        acc = train_sample(plan, ds, s)
        secs = time.time() - t0
        spent += secs
        atomic_write_json(f, _entry(plan, digest, ds, s, acc, secs))
        log(f"sample {i + 1}/{len(plans)}: test acc {acc:.4f} ({secs:.1f} s)")
        accs.append(acc)
    return accs, spent


# -- SHGO over the relaxation ----------------------------------------------------

def _decode(x: np.ndarray, rx: Relaxation, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x = one value in [0, n-1] per layer, shared by its paths (choices ordered by MACs; a
    fraction interpolates between neighbours), then one in [0, 1] per sync -> soft choices."""
    sp = rx.space
    L, P, n = sp.layers, sp.paths, len(sp.candidates)
    op = np.zeros((L, P, n))
    for l in range(L):
        v = float(np.clip(x[l], 0, n - 1))
        lo = min(int(math.floor(v)), n - 1)
        hi, frac = min(lo + 1, n - 1), v - lo
        op[l, :, order[l, lo]] += 1 - frac
        op[l, :, order[l, hi]] += frac
    return op, np.clip(np.asarray(x[L:], dtype=np.float64), 0, 1)


def shgo_search(space: SearchSpace, predictor: Predictor, lut=None, budget_us: float | None = None,
                beta: float = 0.01, lse_tau: float = 2.0):
    """Maximises predicted accuracy - beta * normalised cost (latency with a table, else MACs),
    with predicted latency <= budget_us as a constraint. SHGO runs over 2L variables (per
    layer: the op position shared by the paths, and the sync): its simplicial sampling grows
    as 2^dims, so per-block variables (L*P + L) would take it from ~0.1 s to minutes. The
    rounded result is then refined block by block and sync by sync (greedy, hard plans).
    Returns (plan, info)."""
    import torch
    from scipy.optimize import shgo


    rx = Relaxation.of(space)
    L, P, n, W = space.layers, space.paths, len(space.candidates), len(space.widths)
    widest = space.widths.index(max(space.widths))
    order = np.argsort(rx.ops[:, widest, widest, :, 2], axis=1, kind="stable")  # by MACs per layer
    terms = latency_table(space, lut) if lut is not None else None
    top = max_latency(terms) if terms is not None else None
    # Residual and width choices are not SHGO variables (its sampling grows as 2^dims): it runs
    # with every block plain (residual "all": residual) at the widest widths; the refinement below
    # then flips them one block / layer at a time.
    res0 = np.full((L, P), 1.0 if space.residual == "all" else 0.0) if space.residual != "none" else None
    width0 = np.eye(W)[[widest] * L] if W > 1 else None
    all_res = np.ones((L, P)) if res0 is not None else None
    max_macs = 10 ** soft_features(rx, *_decode(np.array([n - 1.0] * L + [1.0] * L), rx, order), all_res, width0)[1]
    if budget_us is not None and terms is None:
        raise ValueError("budget_us: a latency budget needs a latency table (--lut)")

    seen: dict[bytes, float] = {}  # SHGO asks objective and constraint at the same points

    def t(a):
        return torch.from_numpy(a) if a is not None else None

    def latency(op, sync, res=res0, width=width0):
        key = b"".join(a.tobytes() for a in (op, sync, res, width) if a is not None)
        if key not in seen:
            s = np.stack([sync, 1 - sync], 1)
            seen[key] = float(expected_latency(t(op), t(s), terms, lse_tau, t(res), t(width)))
        return seen[key]

    def score(op, sync, res=res0, width=width0):  # to minimise
        f = soft_features(rx, op, sync, res, width)
        cost = latency(op, sync, res, width) / top if terms is not None else 10 ** f[1] / max_macs
        return -predictor(f) + beta * cost

    def feasible(op, sync, res=res0, width=width0):
        return budget_us is None or latency(op, sync, res, width) <= budget_us

    constraints = ()
    if budget_us is not None:
        constraints = ({"type": "ineq", "fun": lambda x: budget_us - latency(*_decode(x, rx, order))},)
    t0 = time.perf_counter()
    sol = shgo(lambda x: score(*_decode(x, rx, order)), [(0, n - 1)] * L + [(0, 1)] * L,
               constraints=constraints, sampling_method="simplicial", iters=1)
    shgo_s = time.perf_counter() - t0

    # round, then greedy refinement over hard plans (one block's op or residual, one layer's
    # width or one sync at a time)
    t1 = time.perf_counter()
    x = sol.x if sol.x is not None else np.zeros(2 * L)  # none feasible: start from the cheapest plan
    soft_op, soft_sync = _decode(x, rx, order)
    op = np.zeros_like(soft_op)
    for l in range(L):
        for p in range(P):
            op[l, p, int(soft_op[l, p].argmax())] = 1.0
    state = (op, (soft_sync > 0.5).astype(np.float64), res0, width0)
    best = score(*state) if feasible(*state) else math.inf
    improved = True
    while improved:
        improved = False
        op = state[0]
        moves = [("op", l, p, c) for l in range(L) for p in range(P) for c in range(n) if op[l, p, c] == 0]
        moves += [("sync", l, None, None) for l in range(L)]
        if space.searches_residual:
            moves += [("res", l, p, None) for l in range(L) for p in range(P)]
        if W > 1:
            moves += [("width", l, None, w) for l in range(L) for w in range(W) if state[3][l, w] == 0]
        for kind, l, p, c in moves:
            op2, sync2, res2, width2 = (a.copy() if a is not None else None for a in state)
            if kind == "op":
                op2[l, p] = 0.0
                op2[l, p, c] = 1.0
            elif kind == "sync":
                sync2[l] = 1.0 - sync2[l]
            elif kind == "res":
                res2[l, p] = 1.0 - res2[l, p]
            else:
                width2[l] = 0.0
                width2[l, c] = 1.0
            cand = (op2, sync2, res2, width2)
            if feasible(*cand) and score(*cand) < best - 1e-12:
                state, best, improved = cand, score(*cand), True
    op, sync, resb, width = state
    choice = [[space.candidates[int(op[l, p].argmax())] for l in range(L)] for p in range(P)]
    plan = _make_plan(space, choice, [l for l in range(L) if sync[l] > 0.5],
                      residual=[[bool(resb[l, p] > 0.5) for l in range(L)] for p in range(P)]
                      if resb is not None else None,
                      width_idx=[int(width[l].argmax()) for l in range(L)] if width is not None else None)
    changes = []
    if budget_us is not None:  # the smooth max over paths is not the model's max: repair under the model
        plan, changes = fit_budget(plan, space, lut, lut.threads, budget_us)
    info = {"shgo_seconds": shgo_s, "shgo_evaluations": int(sol.nfev), "shgo_success": bool(sol.success),
            "relaxed_objective": float(sol.fun) if sol.x is not None else None,
            "refine_seconds": time.perf_counter() - t1, "budget_changes": changes,
            "predicted_accuracy": predictor(soft_features(rx, *one_hot(space, plan)))}
    return plan, info


def run_flash(space: SearchSpace, ds, cfg, out: Path, samples_dir: Path | None = None, n_samples: int = 25,
              settings: SampleSettings | None = None, log=print) -> SearchResult:
    """The strategy end to end: sample nets (trained or from the cache), the predictor, SHGO,
    then the budget repair of the rounded plan. Writes out/plan.json and out/flash.json;
    returns the plan (no epochs: FLASH has none)."""
    if init().active:
        raise ValueError("--strategy flash: runs in one process (its sample trainings are small); "
                         "start it without torchrun")
    t_start = time.time()
    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    space = space.bind(ds.input_shape, ds.classes)
    if cfg.budget_macs is not None:
        check_macs(space, cfg.budget_macs)  # before the sample trainings
    settings = settings or SampleSettings(seed=cfg.seed)
    samples_dir = Path(samples_dir) if samples_dir else out / "samples"
    plans = sample_plans(space, n_samples, cfg.seed)
    if len(plans) < 5:
        raise ValueError(f"--strategy flash: the space has only {len(plans)} distinct plans; nothing to predict")
    accs, trained_s = trained_samples(plans, ds, settings, samples_dir, log)
    rx = Relaxation.of(space)
    X = np.array([soft_features(rx, *one_hot(space, p)) for p in plans])
    predictor = Predictor.fit(X, np.array(accs))
    lut = None
    if cfg.lut:
        lut = load_lut(cfg.lut)
    plan, info = shgo_search(space, predictor, lut, cfg.budget_us, cfg.beta, lse_tau=cfg.lse_tau)
    for c in info["budget_changes"]:
        log(f"budget {cfg.budget_us:g} us: {c}")
    if cfg.budget_macs is not None:  # SHGO bounds latency only: the MAC budget by repair
        plan, changes = fit_macs(plan, space, cfg.budget_macs)
        for c in changes:
            log(f"budget {cfg.budget_macs:,.0f} MACs: {c}")
    report = {"strategy": "flash", "samples": len(plans), "samples_dir": str(samples_dir),
              "sample_settings": settings.__dict__, "sample_training_seconds": trained_s,
              "predictor": predictor.to_dict(), **info,
              "total_seconds": time.time() - t_start, "dataset": ds.name}
    if lut is not None:
        report["latency"] = table_record(lut, str(cfg.lut))
        report["predicted_latency_us"] = {"1": predict_latency(plan, lut, 1),
                                          str(lut.threads): predict_latency(plan, lut, lut.threads)}
    plan = dataclasses.replace(plan, meta={"search": {**report, "space": space.to_dict(), "world_size": 1}})
    plan.save(out / "plan.json")
    atomic_write_json(out / "flash.json", report)
    log(f"flash: {len(plans)} samples ({trained_s:.0f} s training now), SHGO {info['shgo_seconds']:.2f} s, "
        f"predicted accuracy {info['predicted_accuracy']:.4f}, total {report['total_seconds']:.1f} s")
    if lut is not None:  # as the gradient search logs it
        pred, t = report["predicted_latency_us"], lut.threads
        log(f"predicted {lut.precision} latency (median of many calls; table {cfg.lut}): {pred[str(t)]:.1f} us "
            f"on {t} thread{'s' if t > 1 else ''}, "
            f"{pred['1']:.1f} us on 1" + (f"; budget {cfg.budget_us:g} us" if cfg.budget_us is not None else ""))
    return SearchResult(plan, (), (out / "plan.json", out / "flash.json"))
