"""The user's own data: image folders and .npz files, with one-line errors for bad input."""
import gzip
import shutil

import numpy as np
import pytest
from PIL import Image

from nasrt.data.builtin import load_dataset
from nasrt.data.user import parse_size
from nasrt.errors import DataError


def tree(root, split=True, classes=("cat", "dog", "owl"), n=6, size=(12, 10), mode="RGB"):
    """Images whose class is visible in their mean colour; DIR/{train,test}/<class>/ or DIR/<class>/."""
    rng = np.random.default_rng(0)
    parts = [("train", n), ("test", 2)] if split else [("", n + 2)]
    for part, count in parts:
        for k, c in enumerate(classes):
            d = root / part / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                px = (rng.integers(0, 40, (size[1], size[0], 3)) + 80 * k).astype(np.uint8)
                Image.fromarray(px).convert(mode).save(d / f"{i}.png")
    return root


def test_train_test_tree(tmp_path):
    ds = load_dataset("folder", tree(tmp_path))
    assert ds.x_train.shape == (18, 3, 10, 12) and ds.x_test.shape == (6, 3, 10, 12)
    assert ds.classes == 3 and ds.class_names == ("cat", "dog", "owl")
    assert sorted(set(ds.y_train.tolist())) == [0, 1, 2] and len(ds.mean) == 3
    assert abs(float(ds.x_train.mean())) < 1e-4  # normalised with the training statistics


def test_a_tree_read_by_class_is_shuffled_with_its_labels(tmp_path):
    """The first N images (--search-limit, FLASH's sample limits) hold every class, not the
    first classes, and every image keeps its label (the class is visible in its brightness)."""
    ds = load_dataset("folder", tree(tmp_path, n=12))
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert len(set(y[:len(y) // 3].tolist())) >= 2  # class-sorted, the first third was one class
        means = x.reshape(len(x), -1).mean(1)
        assert all(means[y == k].max() < means[y == k + 1].min() for k in range(2))
    again = load_dataset("folder", tmp_path)
    np.testing.assert_array_equal(ds.y_train, again.y_train)  # a fixed order, run after run


def test_one_tree_split_by_fraction_is_fixed(tmp_path):
    a = load_dataset("folder", tree(tmp_path, split=False), val_split=0.25)
    b = load_dataset("folder", tmp_path, val_split=0.25)
    assert len(a.x_test) == 6 and len(a.x_train) == 18
    np.testing.assert_array_equal(a.y_test, b.y_test)


def test_gray_images_give_one_channel_and_input_size_resizes(tmp_path):
    ds = load_dataset("folder", tree(tmp_path, mode="L"), input_size=parse_size("8x6"))
    assert ds.x_train.shape[1:] == (1, 8, 6)


def test_mixed_sizes_need_input_size(tmp_path):
    tree(tmp_path)
    Image.new("RGB", (20, 20)).save(tmp_path / "train" / "dog" / "big.png")
    with pytest.raises(DataError, match=r"big.png: 20x20 but .* is 10x12: images differ in size, give --input-size"):
        load_dataset("folder", tmp_path)
    assert load_dataset("folder", tmp_path, input_size=(16, 16)).x_train.shape[2:] == (16, 16)


def test_bad_trees_give_one_line_errors(tmp_path):
    tree(tmp_path)
    (tmp_path / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        load_dataset("folder", tmp_path)
    (tmp_path / "train" / "dog" / "broken.png").unlink()
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="empty: empty class"):
        load_dataset("folder", tmp_path)
    one = tmp_path / "one"
    tree(one, split=False, classes=("only",))
    with pytest.raises(DataError, match="needs at least 2 class folders"):
        load_dataset("folder", one)
    with pytest.raises(DataError, match="no such directory"):
        load_dataset("folder", tmp_path / "missing")
    with pytest.raises(DataError, match="--input-size"):
        parse_size("big")


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "d.npz"
    np.savez(p, x_train=rng.integers(0, 255, (20, 9, 9, 3), dtype=np.uint8), y_train=rng.integers(0, 4, 20),
             x_test=rng.integers(0, 255, (5, 9, 9, 3), dtype=np.uint8), y_test=rng.integers(0, 4, 5))
    ds = load_dataset("npz", p)
    assert ds.x_train.shape == (20, 3, 9, 9) and ds.classes == int(max(ds.y_train.max(), ds.y_test.max())) + 1
    np.savez(p, x_train=np.zeros((4, 5, 5)), y_train=np.zeros(4))
    with pytest.raises(DataError, match="missing array x_test"):
        load_dataset("npz", p)
    np.savez(p, x_train=np.zeros((4, 5, 5)), y_train=np.zeros(4), x_test=np.zeros((2, 5, 5)), y_test=np.zeros(2))
    with pytest.raises(DataError, match="y_train: expected 4 integer labels"):
        load_dataset("npz", p)


def test_uncompressed_idx_is_read_like_gz(tmp_path):
    src = "/usr/share/datasets/fashion-mnist"
    from nasrt.data.builtin import FASHION_FILES
    for f in FASHION_FILES:
        with gzip.open(f"{src}/{f}", "rb") as a, open(tmp_path / f[:-3], "wb") as b:
            shutil.copyfileobj(a, b)
    ds = load_dataset("fashion-mnist", tmp_path, limit=100)
    ref = load_dataset("fashion-mnist", src, limit=100)
    np.testing.assert_array_equal(ds.x_train, ref.x_train)


def test_search_and_train_on_a_folder_from_the_cli(tmp_path):
    pytest.importorskip("torch")
    from nasrt.cli import main
    tree(tmp_path / "data", n=8)
    out = tmp_path / "run"
    assert main(["search", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--input-size", "8x8",
                 "--epochs", "1", "--paths", "2", "--channels", "4,8", "--strides", "1,2", "--batch-size", "8",
                 "--out", str(out), "--quiet"]) == 0
    assert main(["train", str(out / "plan.json"), "--dataset", "folder", "--data-dir", str(tmp_path / "data"),
                 "--input-size", "8x8", "--epochs", "1", "--batch-size", "8", "--quiet"]) == 0
    import json

    import nasrt
    rt = nasrt.Runtime(out / "model.nasrt")
    assert json.loads(rt.metadata["nasrt.class_names"]) == ["cat", "dog", "owl"]
    img = tmp_path / "data" / "test" / "owl" / "0.png"
    assert main(["run", str(out / "model.nasrt"), str(img)]) == 0  # resized and normalised from the metadata


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_nasrt_run_preprocesses_an_image_exactly_as_training_did(tmp_path, mode):
    """Train/serve skew: `nasrt run` used Pillow's default resize filter (training:
    bilinear). The same file must reach the model as the same array."""
    import json

    from nasrt.runtime.inputs import read_input
    root = tree(tmp_path / "imgs", size=(37, 23), mode=mode)
    ds = load_dataset("folder", root, input_size=(16, 16))
    meta = {"nasrt.input_mean": json.dumps(list(ds.mean)), "nasrt.input_std": json.dumps(list(ds.std))}
    files = sorted((root / "test").glob("*/*.png"))
    assert len(files) == len(ds.x_test)
    for f in files:
        served = read_input(f, ds.input_shape, meta)
        same = [i for i in range(len(ds.x_test)) if np.array_equal(ds.x_test[i], served)]
        assert same, f"{f}: no training-side sample is bitwise what nasrt run feeds the model"
    # A model without statistics (trained on synthetic data): [0, 1] pixels, no per-image
    # standardisation (it used to standardise each image by its own mean and std).
    px = np.asarray(Image.open(files[0]).convert(mode).resize((16, 16), Image.BILINEAR), np.float32) / 255
    assert np.array_equal(read_input(files[0], ds.input_shape, {}), px.reshape(16, 16, -1).transpose(2, 0, 1))


def test_nasrt_run_inputs_are_read_with_bounds(tmp_path, capsys):
    """A .npy whose header claims terabytes and an image over the pixel bound: one line each
    from `nasrt run`, nothing allocated (np.load and Pillow used to be called directly)."""
    from nasrt.cli import main
    from nasrt.runtime.bench import paper_sized_plan, write_random_model
    model = tmp_path / "m.nasrt"
    write_random_model(paper_sized_plan(), model)
    npy = tmp_path / "huge.npy"
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 3, 32, 32000), }"
    npy.write_bytes(b"\x93NUMPY\x01\x00" + len(header.ljust(118) + "\n").to_bytes(2, "little")
                    + (header.ljust(118) + "\n").encode() + b"\0" * 64)
    bomb = tmp_path / "bomb.png"
    Image.new("L", (20000, 20000)).save(bomb)  # 400 M pixels > Pillow's 179 M bound
    for f, msg in ((npy, "header says shape"), (bomb, "pixels")):
        assert main(["run", str(model), str(f)]) != 0
        err = capsys.readouterr().err.strip()
        assert msg in err and str(f) in err and "Traceback" not in err and "\n" not in err, err


CIFAR_ORDER = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_cifar10_image_folder_tree_is_read_as_cifar10(tmp_path):
    """The layout of ../shared/data/cifar10-jpg (train/<class>/NNNN.jpg, test/<class>/NNNN.jpg),
    generated tiny: --dataset cifar10 reads it, labels in CIFAR-10's class order, flips on."""
    tree(tmp_path, classes=CIFAR_ORDER, n=3, size=(32, 32))
    for f in list(tmp_path.rglob("*.png")):  # the shared set is JPEG: decode that path too
        Image.open(f).save(f.with_suffix(".jpg"), quality=75)
        f.unlink()
    ds = load_dataset("cifar10", tmp_path)
    assert ds.name == "cifar10" and ds.flip and ds.class_names == CIFAR_ORDER
    assert ds.x_train.shape == (30, 3, 32, 32) and ds.x_test.shape == (20, 3, 32, 32)
    # The tree's classes differ in brightness by 80 per index: the mean orders the labels.
    means = [float(ds.x_train[ds.y_train == k].mean()) for k in range(3)]
    assert means == sorted(means) and np.bincount(ds.y_train).tolist() == [3] * 10


def test_cifar10_image_folder_errors_name_the_folder(tmp_path):
    tree(tmp_path / "few", classes=CIFAR_ORDER[:9], n=1, size=(32, 32))
    with pytest.raises(DataError, match=r"few/train: class folders .*CIFAR-10 has"):
        load_dataset("cifar10", tmp_path / "few")
    tree(tmp_path / "small", classes=CIFAR_ORDER, n=1, size=(28, 28))
    with pytest.raises(DataError, match=r"small: images are 28x28 .*32x32 RGB"):
        load_dataset("cifar10", tmp_path / "small")
    with pytest.raises(DataError, match=r"nowhere: not a CIFAR-10 directory: .*data_batch_1.* or image folders train/<class>/"):
        load_dataset("cifar10", tmp_path / "nowhere")
