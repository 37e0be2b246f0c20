"""Search front-end: cost formulas, derive, the beta extremes, resume, data, bad input."""
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nasrt.contract.space import SearchSpace, parse_candidate  # noqa: E402
from nasrt.data.builtin import CIFAR_CLASSES, load_dataset  # noqa: E402
from nasrt.data.dataset import Dataset  # noqa: E402
from nasrt.errors import DataError  # noqa: E402
from nasrt.search.config import SearchConfig  # noqa: E402
from nasrt.search.cost import flop_table, loss_ops, loss_sync, total_loss  # noqa: E402
from nasrt.search.gradient import run_search  # noqa: E402
from nasrt.search.supernet import SuperNet, choice_weights, derive  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CIFAR = SHARED / "data" / "cifar10-subset"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def small_space(**kw):
    d = dict(paths=2, channels=(4, 8), strides=(1, 2), ops=("conv3x3", "conv5x5"), stem_kernel=3,
             stem_out=4, hidden=(8,))
    d.update(kw)
    return SearchSpace(**d)


# -- cost ---------------------------------------------------------------------

def test_flop_table_by_hand():
    sp = SearchSpace().bind((1, 28, 28), 10)
    t = flop_table(sp)
    ops = t.op_flops[:, 0, 0]  # one width: (L, n_ops)
    # layer 0: 8 -> 8 at 28x28, stride 1: mult k^2*Di*Wo*Ho*Do, adds (k^2*Di-1)*Wo*Ho*Do.
    assert ops[0, 0] == 9 * 8 * 28 * 28 * 8 + (9 * 8 - 1) * 28 * 28 * 8
    assert ops[0, 1] == 25 * 8 * 28 * 28 * 8 + (25 * 8 - 1) * 28 * 28 * 8
    # layer 3: 32 -> 64, stride 2, 7x7 in -> 4x4 out.
    assert ops[3, 1] == 25 * 32 * 4 * 4 * 64 + (25 * 32 - 1) * 4 * 4 * 64
    # sync after layer 1: conv1x1 over 2x16 channels at 14x14 -> 16.
    assert t.sync_flops[1, 0] == 32 * 14 * 14 * 16 + 31 * 14 * 14 * 16
    sp_sum = SearchSpace(merge="sum").bind((1, 28, 28), 10)
    assert flop_table(sp_sum).sync_flops[0, 0] == 1 * 8 * 28 * 28  # (P-1) adds per element
    sep = SearchSpace(ops=("sepconv5x5",)).bind((3, 32, 32), 10)
    dw = 25 * 32 * 32 * 8 + 24 * 32 * 32 * 8
    pw = 8 * 32 * 32 * 8 + 7 * 32 * 32 * 8
    assert flop_table(sep).op_flops[0, 0, 0, 0] == dw + pw


def test_loss_terms_on_planted_probabilities():
    sp = SearchSpace().bind((1, 28, 28), 10)
    t = flop_table(sp)
    L, P = sp.layers, sp.paths
    cheap = torch.zeros(L, P, 2)
    cheap[..., 0] = 1
    expensive = 1 - cheap
    assert float(loss_ops(expensive, t)) == pytest.approx(1.0)
    assert float(loss_ops(cheap, t)) == pytest.approx(float(t.op_flops[:, 0, 0, 0].sum() * P / t.max_ops))
    half = torch.full((L, P, 2), 0.5)
    assert float(loss_ops(half, t)) == pytest.approx(float(t.op_flops.sum() * P / 2 / t.max_ops))
    sync = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert float(loss_sync(sync, t)) == pytest.approx(float((t.sync_flops[0, 0] + t.sync_flops[3, 0]) / t.sync_flops.sum()))
    assert float(total_loss(torch.tensor(2.0), torch.tensor(0.5), torch.tensor(0.25), 0.28, 0.01)) == pytest.approx(
        0.28 * 2 + 0.01 * 0.75)


# -- derive ---------------------------------------------------------------------

def test_derive_on_planted_decision_variables():
    sp = SearchSpace(ops=("conv3x3", "conv5x5", "sepconv7x7")).bind((1, 28, 28), 10)
    op_logits = torch.zeros(4, 2, 3)
    op_logits[0, 0, 2] = op_logits[0, 1, 1] = 1.0
    op_logits[1, :, 0] = 1.0
    op_logits[2, 0, 1] = op_logits[2, 1, 2] = 3.0
    op_logits[3, :, 1] = 0.5
    sync_logits = torch.tensor([[0.2, 0.1], [0.0, 0.3], [0.0, 0.0], [1.0, -1.0]])
    plan = derive(sp, op_logits, sync_logits)
    ops = [[f"{b.op}{b.kernel}" for b in p] for p in plan.paths]
    assert ops == [["sepconv7", "conv3", "conv5", "conv5"], ["conv5", "conv3", "sepconv7", "conv5"]]
    assert [s.after for s in plan.syncs] == [0, 3]  # a tie (layer 2) is not kept
    assert all(s.merge == "conv1x1" for s in plan.syncs)
    assert [b.out for b in plan.paths[0]] == [8, 16, 32, 64] and [b.stride for b in plan.paths[1]] == [1, 2, 2, 2]
    with pytest.raises(ValueError, match="decision variables have shapes"):
        derive(sp, torch.zeros(4, 3, 3), sync_logits)


def test_supernet_forward_matches_mixture_definition():
    sp = small_space().bind((1, 8, 8), 3)
    torch.manual_seed(0)
    net = SuperNet(sp).eval()
    with torch.no_grad():
        net.op_logits.normal_()
        net.sync_logits.normal_()
        x = torch.randn(2, 1, 8, 8)
        s = net.stem(x)
        w = torch.softmax(net.op_logits, -1)
        blk = net.blocks[0][1]
        expected = blk.ops[0](s) * w[0, 1, 0] + blk.ops[1](s) * w[0, 1, 1]
        assert torch.allclose(blk(s, w[0, 1]), expected)
        assert net(x).shape == (2, 3)


# -- the beta extremes ------------------------------------------------------------

def stripes(n, seed):
    """Horizontal vs vertical stripes: the same pixel values, only orientation differs,
    so 1x1 convs + global pooling cannot tell them apart; a 5x5 conv can."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    base = np.where(np.arange(12) % 2 == 0, 1.0, -1.0)
    x = np.empty((n, 1, 12, 12), np.float32)
    for i in range(n):
        pat = np.tile(np.roll(base, rng.integers(0, 2)), (12, 1))
        x[i, 0] = pat if y[i] else pat.T
    x += 0.3 * rng.standard_normal(x.shape).astype(np.float32)
    return x, y.astype(np.int64)


def test_beta_zero_keeps_the_op_the_task_needs(tmp_path):
    xtr, ytr = stripes(768, 0)
    xte, yte = stripes(256, 1)
    ds = Dataset("stripes", xtr, ytr, xte, yte, 2, flip=False)
    for paths in (1, 2):
        sp = SearchSpace(paths=paths, channels=(4,), strides=(1,), ops=("conv1x1", "conv5x5"),
                         stem_kernel=None, hidden=(8,))
        plan = run_search(sp, ds, SearchConfig(epochs=6, beta=0.0, batch_size=64, seed=0), tmp_path / str(paths),
                          show_progress=False, log=lambda *a: None).plan
        kernels = [p[0].kernel for p in plan.paths]
        # One path needs the 5x5; with two, a sync can share one path's 5x5 features with the other.
        assert 5 in kernels and (paths == 1 or kernels == [5, 5] or plan.syncs), plan.summary()


def test_huge_beta_gives_the_cheapest_plan(tmp_path):
    ds = load_dataset("synthetic")
    sp = small_space(ops=("conv5x5", "sepconv3x3", "conv3x3"))
    plan = run_search(sp, ds, SearchConfig(epochs=3, beta=100.0, batch_size=64, seed=0), tmp_path,
                      show_progress=False, log=lambda *a: None).plan
    bound = sp.bind(ds.input_shape, ds.classes)
    t = flop_table(bound)
    cheapest = [bound.candidates[int(i)] for i in t.op_flops[:, 0, 0].argmin(-1)]
    for path in plan.paths:
        assert [(b.op, b.kernel) for b in path] == cheapest, plan.summary()
    assert plan.syncs == ()


# -- resume -----------------------------------------------------------------------

def test_resume_after_interruption_gives_the_same_plan(tmp_path):
    ds = load_dataset("synthetic")
    cfg = SearchConfig(epochs=3, batch_size=64, seed=3, beta=0.05)
    full = run_search(small_space(), ds, cfg, tmp_path / "a", show_progress=False, log=lambda *a: None).plan

    def interrupt_after_epoch_2(msg):
        if msg.startswith("search epoch 2/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(small_space(), ds, cfg, tmp_path / "b", show_progress=False, log=interrupt_after_epoch_2)
    assert not (tmp_path / "b" / "plan.json").exists()
    resumed = run_search(small_space(), ds, cfg, tmp_path / "b", resume=True, show_progress=False, log=lambda *a: None).plan
    assert resumed.to_dict() == full.to_dict()  # meta holds the final probabilities: exact equality
    log_a = (tmp_path / "a" / "search_log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "b" / "search_log.jsonl").read_text().splitlines()
    assert len(log_b) == 3
    import json
    assert [json.loads(r)["op_probs"] for r in log_a] == [json.loads(r)["op_probs"] for r in log_b]
    with pytest.raises(ValueError, match="another space or settings"):
        run_search(small_space(), ds, SearchConfig(epochs=3, batch_size=64, seed=4), tmp_path / "b",
                   resume=True, show_progress=False, log=lambda *a: None)


def test_gumbel_sampling_statistics():
    torch.manual_seed(0)
    logits = torch.tensor([1.0, 0.0, -1.0])
    samples = torch.stack([choice_weights(logits, gumbel_tau=0.1) for _ in range(4000)])
    freq = torch.bincount(samples.argmax(-1), minlength=3).float() / 4000
    assert torch.allclose(freq, torch.softmax(logits, -1), atol=0.03)
    assert torch.allclose(samples.sum(-1), torch.ones(4000))
    hot = torch.stack([choice_weights(logits, gumbel_tau=0.01) for _ in range(100)])
    assert (hot.max(-1).values > 0.99).float().mean() >= 0.95  # low temperature: nearly one-hot


# -- data ---------------------------------------------------------------------------

@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_loader():
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == np.float32 and abs(float(ds.x_train.mean())) < 1e-3
    assert abs(float(ds.x_train.std()) - 1) < 1e-2
    assert sorted(np.unique(ds.y_train)) == list(range(10))
    assert np.bincount(ds.y_test).tolist() == [1000] * 10


@pytest.mark.skipif(not CIFAR.is_dir(), reason="../shared/data/cifar10-subset not present")
def test_cifar10_subset_loader():
    ds = load_dataset("cifar10", CIFAR)
    assert ds.x_train.shape == (5085, 3, 32, 32) and ds.x_test.shape == (1017, 3, 32, 32)
    assert len(ds.y_train) == 5085 and set(np.unique(ds.y_train)) == set(range(10))
    assert np.allclose(ds.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-3)


def _cifar_tree(root, classes=None, size=(32, 32), per_class=2):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes or CIFAR_CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                px = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(px).save(root / split / c / f"{i:04d}.jpg", quality=75)
    return root


def test_cifar10_from_an_image_folder_tree(tmp_path):
    """--dataset cifar10 --data-dir DIR takes the JPEG image-folder layout too (the full set in
    ../shared/data/cifar10-jpg): labels by CIFAR-10's class order, flips on, statistics stored."""
    from PIL import Image
    root = _cifar_tree(tmp_path / "c10")
    ds = load_dataset("cifar10", root)
    assert ds.name == "cifar10" and ds.flip and ds.class_names == CIFAR_CLASSES
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (20, 3, 32, 32)
    assert np.bincount(ds.y_train).tolist() == [2] * 10  # in a fixed shuffled order (test_userdata.py)
    assert len(ds.mean) == 3 and len(ds.std) == 3
    # label 3 is "cat": its first training image, decoded as the folder loader does, is one of the two
    px = np.asarray(Image.open(root / "train" / "cat" / "0000.jpg").convert("RGB"), np.float32) / 255
    want = (px.transpose(2, 0, 1) - np.float32(ds.mean)[:, None, None]) / np.float32(ds.std)[:, None, None]
    assert sum(np.allclose(x, want, atol=1e-6) for x in ds.x_train[ds.y_train == 3]) == 1


def test_cifar10_folder_tree_must_be_cifar10(tmp_path):
    with pytest.raises(DataError, match=r"class folders a, b: CIFAR-10 has airplane"):
        load_dataset("cifar10", _cifar_tree(tmp_path / "ab", classes=("a", "b")))
    with pytest.raises(DataError, match=r"images are 16x16 .*32x32 RGB"):
        load_dataset("cifar10", _cifar_tree(tmp_path / "small", size=(16, 16), per_class=1))


def test_bad_dataset_directories(tmp_path):
    with pytest.raises(DataError, match=r"missing train-images-idx3-ubyte.gz.*expected files"):
        load_dataset("fashion-mnist", tmp_path)
    with pytest.raises(DataError, match="data_batch_1"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("cifar10")
    for f in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (tmp_path / f).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_1: not a CIFAR-10 python batch"):
        load_dataset("cifar10", tmp_path)


def test_cifar_loader_refuses_executable_pickles(tmp_path):
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    for f in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (tmp_path / f).write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="forbidden object"):
        load_dataset("cifar10", tmp_path)


def test_bad_space_and_config():
    with pytest.raises(ValueError, match="unknown candidate op 'conv4x4'"):
        SearchSpace(ops=("conv3x3", "conv4x4"))
    with pytest.raises(ValueError, match="space.strides"):
        SearchSpace(channels=(8, 16), strides=(1,))
    with pytest.raises(ValueError, match="space.merge"):
        SearchSpace(merge="concat")
    assert parse_candidate("sepconv7x7") == ("sepconv", 7)
    with pytest.MonkeyPatch.context() as mp, pytest.warns(UserWarning, match="exceeds this machine"):
        mp.setattr("os.cpu_count", lambda: 2)
        SearchSpace(paths=4)  # up to plan-v1's limit of 64 a warning; more paths are an error (below)
    with pytest.raises(ValueError, match=r"space.paths: must be an integer in \[1, 64\]"):
        SearchSpace(paths=1024)
    with pytest.raises(ValueError, match="preset"):
        SearchConfig(preset="fast").validate()


def test_normalisation_statistics_are_exact_on_large_sets():
    """float32 accumulation saturated at 2^24: on full CIFAR-10 (51 M values per channel)
    every channel's mean came out 0.32768. 20 M values of 0.9 per channel here."""
    from nasrt.data.preprocess import normalise
    x = np.full((20000, 2, 32, 32), 0.9, np.float32)
    x[:, 1] = 0.1
    _, _, mean, std = normalise(x, x[:2])
    assert np.allclose(mean, (0.9, 0.1), atol=1e-6) and np.allclose(std, (1e-6, 1e-6), atol=1e-6)
