"""Datasets as in-memory tensors, from local files only (no downloads):
Fashion-MNIST (IDX, .gz or not), CIFAR-10 (cifar-10-batches-py), synthetic,
and the user's own (nasrt/data/user.py: image folders, .npz)."""
from __future__ import annotations

import dataclasses
import gzip
import io
import math
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

from nasrt._io import open_regular, read_regular
from nasrt.contract.plan import MAX_SIDE
from nasrt.data.dataset import DEFLATE_RATIO, Dataset
from nasrt.data.preprocess import normalise, unit_pixels
from nasrt.data.user import load_folder, load_npz
from nasrt.errors import DataError

DEFAULT_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}
DATASETS = ("fashion-mnist", "cifar10", "synthetic", "folder", "npz")
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


MAX_CIFAR_BATCH = 1 << 30  # a real batch is 30 MiB


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _read_idx(path: Path, kind: int) -> np.ndarray:
    """An IDX array of `kind` dimensions (uint8). The header's sizes are checked against
    what the file can hold before anything is allocated."""
    head_len = 4 + 4 * kind
    f, size = open_regular(path, DataError, "an IDX file")
    try:
        with f, (gzip.GzipFile(fileobj=f, mode="rb") if path.suffix == ".gz" else f) as g:
            head = g.read(head_len)
            if len(head) < head_len:
                raise DataError(f"{path}: truncated IDX file (header needs {head_len} bytes, got {len(head)})")
            magic, *dims = struct.unpack(f">I{kind}I", head)
            if magic != 0x0800 + kind:
                raise DataError(f"{path}: bad IDX magic {magic:#x} (expected {0x0800 + kind:#x})")
            expected = math.prod(dims)
            room = DEFLATE_RATIO * size if path.suffix == ".gz" else size - head_len
            if expected > room:
                raise DataError(f"{path}: header says {' x '.join(map(str, dims))} = {expected:,} bytes of data, "
                                f"more than the {size:,}-byte file can hold")
            data = g.read(expected + 1)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: not a readable IDX file ({type(e).__name__}: {str(e)[:80]!r})") from None
    if len(data) != expected:
        raise DataError(f"{path}: holds {len(data) if len(data) <= expected else 'more'} bytes of data, "
                        f"header says {expected}")
    if dims[0] < 1 or any(not 1 <= d <= MAX_SIDE for d in dims[1:]):
        raise DataError(f"{path}: header: {' x '.join(map(str, dims))}: needs >= 1 items of sides 1..{MAX_SIDE}")
    return np.frombuffer(data, np.uint8).reshape(dims)


def _check_labels(path, y: np.ndarray, classes: int, field: str = "labels") -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise DataError(f"{path}: {field}: must be in [0, {classes - 1}], got values in "
                        f"[{int(y.min())}, {int(y.max())}]")


def _idx_file(root: Path, name: str) -> Path:
    """The .gz file, or the uncompressed one beside it."""
    gz = root / name
    return gz if gz.is_file() or not (root / name[:-3]).is_file() else root / name[:-3]


def _check_dir(root: Path, files: tuple[str, ...], name: str) -> None:
    missing = [f for f in files if not (root / f).is_file() and not (f.endswith(".gz") and (root / f[:-3]).is_file())]
    if missing:
        raise DataError(f"{root}: not a {name} directory: missing {', '.join(missing)} "
                        f"(expected files: {', '.join(files)})")


def load_fashion_mnist(root: str | Path) -> Dataset:
    root = Path(root)
    _check_dir(root, FASHION_FILES, "Fashion-MNIST (IDX .gz; Debian package dataset-fashion-mnist)")
    files = [_idx_file(root, f) for f in FASHION_FILES]
    xtr, ytr, xte, yte = (_read_idx(f, k) for f, k in zip(files, (3, 1, 3, 1)))
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise DataError(f"{root}: image and label counts differ")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"{files[2]}: images are {xte.shape[1]}x{xte.shape[2]}, the training images "
                        f"{xtr.shape[1]}x{xtr.shape[2]}")
    _check_labels(files[1], ytr, 10)
    _check_labels(files[3], yte, 10)
    x_train, x_test, mean, std = normalise(unit_pixels(xtr[:, None]), unit_pixels(xte[:, None]))
    return Dataset("fashion-mnist", x_train, ytr.astype(np.int64), x_test, yte.astype(np.int64), 10, flip=True,
                   mean=mean, std=std, class_names=FASHION_CLASSES)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow only what numpy arrays need, nothing executable."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden object {module}.{name}")


def _check_pickle(raw: bytes, path: Path) -> None:
    """The C unpickler allocates what opcodes claim: a FRAME's length, or a memo table
    up to a PUT's index (16 bytes per slot: 5 bytes of LONG_BINPUT ask for 64 GiB). A
    pass of pickletools over the opcodes (lengths checked against the data) first."""
    import pickletools
    ops = 0
    try:
        for op, arg, pos in pickletools.genops(raw):
            ops += 1
            assert pos is not None  # genops over bytes always knows the position
            if op.name == "FRAME" and isinstance(arg, int) and arg > len(raw) - pos:
                raise DataError(f"{path}: not a CIFAR-10 python batch (a pickle frame of {arg:,} bytes at "
                                f"byte {pos}, the file has {len(raw):,})")
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and isinstance(arg, int) and not 0 <= arg <= ops:
                raise DataError(f"{path}: not a CIFAR-10 python batch (pickle memo index {arg:,} at byte {pos})")
    except DataError:
        raise
    except (ValueError, TypeError, IndexError, struct.error, OverflowError) as e:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {str(e)[:80]!r})") from None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = read_regular(path, MAX_CIFAR_BATCH, DataError, "a CIFAR-10 python batch")
    _check_pickle(raw, path)
    try:
        d = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except MemoryError:
        raise
    except Exception as e:  # unpickling hostile bytes raises almost any type
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {str(e)[:80]!r})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DataError(f"{path}: not a CIFAR-10 python batch (expected a dict with data and labels)")
    data, labels = d[b"data"], d[b"labels"]
    # Types first: np.asarray of nested lists that share references could grow exponentially.
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: data: expected a uint8 array (N, 3072), got "
                        f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
        labels = labels.astype(np.int64)
    elif isinstance(labels, list) and all(type(v) is int and 0 <= v < 10 for v in labels):
        labels = np.array(labels, np.int64)
    else:
        raise DataError(f"{path}: labels: expected a list of integers in [0, 9]")
    if len(labels) != len(data) or not len(data):
        raise DataError(f"{path}: expected data (N, 3072) and N labels, N >= 1, got {data.shape} and {len(labels)}")
    _check_labels(path, labels, 10)
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root: str | Path) -> Dataset:
    root = Path(root)
    _check_dir(root, CIFAR_FILES, "CIFAR-10 (cifar-10-batches-py)")
    parts = [_read_cifar_batch(root / f) for f in CIFAR_FILES[:5]]
    xte, yte = _read_cifar_batch(root / "test_batch")
    xtr = unit_pixels(np.concatenate([p[0] for p in parts]))
    ytr = np.concatenate([p[1] for p in parts])
    x_train, x_test, mean, std = normalise(xtr, unit_pixels(xte))
    return Dataset("cifar10", x_train, ytr, x_test, yte, 10, flip=True, mean=mean, std=std,
                   class_names=CIFAR_CLASSES)


def load_cifar10_folder(root: Path) -> Dataset:
    """CIFAR-10 as JPEG/PNG image folders, train/<class>/ and test/<class>/ with the ten
    classes (alphabetical order is CIFAR-10's label order): the folder loader, checked
    and labelled as CIFAR-10 (flips are valid augmentation)."""
    ds = load_folder(root)
    if ds.class_names != CIFAR_CLASSES:
        raise DataError(f"{root / 'train'}: class folders {', '.join(ds.class_names)}: CIFAR-10 has "
                        f"{', '.join(CIFAR_CLASSES)} (use --dataset folder for other image trees)")
    if ds.input_shape != (3, 32, 32):
        raise DataError(f"{root}: images are {ds.input_shape[1]}x{ds.input_shape[2]} with {ds.input_shape[0]} "
                        "channel(s), CIFAR-10's are 32x32 RGB")
    return dataclasses.replace(ds, name="cifar10", flip=True)


def make_synthetic(n_train: int = 512, n_test: int = 256, shape=(1, 12, 12), classes: int = 4,
                   seed: int = 0) -> Dataset:
    """A small learnable task: each class is a fixed random pattern plus noise."""
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((classes, *shape)).astype(np.float32)

    def draw(n):
        y = rng.integers(0, classes, n)
        return (protos[y] + 0.8 * rng.standard_normal((n, *shape))).astype(np.float32), y.astype(np.int64)

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return Dataset("synthetic", xtr, ytr, xte, yte, classes, flip=False)


def load_dataset(name: str, root: str | Path | None = None, limit: int | None = None,
                 input_size: tuple[int, int] | None = None, val_split: float | None = None) -> Dataset:
    """Loads a dataset by name; ``limit`` keeps the first N training images (quick runs).

    folder: ``root`` is an image tree (train/ and test/ of <class>/ folders, or <class>/
    folders split by ``val_split``), resized to ``input_size`` (H, W) if given; npz:
    ``root`` is the .npz file."""
    try:
        ds = _load(name, root, input_size, val_split)
    except MemoryError:
        raise DataError(f"{root or name}: the dataset does not fit in this machine's memory") from None
    if limit:
        ds.x_train, ds.y_train = ds.x_train[:limit], ds.y_train[:limit]
    return ds


def _load(name: str, root, input_size, val_split) -> Dataset:
    if name in ("folder", "npz") and root is None:
        raise DataError(f"{name}: give the {'image folder' if name == 'folder' else '.npz file'} with --data-dir")
    if name == "folder":
        ds = load_folder(root, input_size, val_split)
    elif name == "npz":
        ds = load_npz(root)
    elif name == "synthetic":
        ds = make_synthetic()
    elif name == "fashion-mnist":
        ds = load_fashion_mnist(root or DEFAULT_DIRS["fashion-mnist"])
    elif name == "cifar10":
        if root is None:
            raise DataError("cifar10: give the cifar-10-batches-py directory (expected files: "
                            f"{', '.join(CIFAR_FILES)}) or an image tree with train/ and test/ with --data-dir")
        root = Path(root)
        if (root / "train").is_dir():
            ds = load_cifar10_folder(root)
        elif any((root / f).exists() for f in CIFAR_FILES):
            ds = load_cifar10(root)
        else:
            raise DataError(f"{root}: not a CIFAR-10 directory: expected the cifar-10-batches-py files "
                            f"({', '.join(CIFAR_FILES)}) or image folders train/<class>/ and test/<class>/")
    else:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    return ds
