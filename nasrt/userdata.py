"""The user's own data: an image-folder tree or an .npz of arrays, decoded with
Pillow / numpy into the same normalised Dataset as the built-in sets."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nasrt.data import DataError, Dataset, normalise

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def parse_size(text: str) -> tuple[int, int]:
    """'32x32' or '28' -> (height, width)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except ValueError:
        raise DataError(f"--input-size: expected HxW (e.g. 32x32), got {text!r}") from None
    if len(parts) > 2 or not (1 <= h <= 4096 and 1 <= w <= 4096):
        raise DataError(f"--input-size: expected HxW with sides in 1..4096, got {text!r}")
    return h, w


def _class_dirs(root: Path) -> dict[str, list[Path]]:
    classes = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{d}: empty class (no {'/'.join(sorted(IMAGE_SUFFIXES))} images)")
        classes[d.name] = files
    if len(classes) < 2:
        raise DataError(f"{root}: needs at least 2 class folders (<class>/*.png|jpg), found {len(classes)}")
    return classes


def _decode(files: list[Path], size: tuple[int, int] | None):
    """(uint8 array (N, H, W, 3) or (N, H, W, 1), channels) of the images, one size."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("the folder dataset needs Pillow: pip install pillow") from None
    imgs, first = [], None
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                imgs.append(im.copy())
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DataError(f"{f}: not a readable image ({type(e).__name__}: {str(e)[:80]})") from None
        if size is None:
            if first is None:
                first = (f, imgs[-1].size)
            elif imgs[-1].size != first[1]:
                raise DataError(f"{f}: {imgs[-1].size[1]}x{imgs[-1].size[0]} but {first[0]} is "
                                f"{first[1][1]}x{first[1][0]}: images differ in size, give --input-size HxW")
    gray = all(im.mode in ("1", "L", "LA", "I", "I;16", "F") for im in imgs)
    mode = "L" if gray else "RGB"
    out = []
    for im in imgs:
        im = im.convert(mode)
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        out.append(np.asarray(im, np.uint8))
    x = np.stack(out)
    return (x[..., None] if gray else x), (1 if gray else 3)


def load_folder(root: str | Path, size: tuple[int, int] | None = None, val_split: float | None = None,
                seed: int = 0) -> Dataset:
    """DIR/train/<class>/* and DIR/test/<class>/*, or DIR/<class>/* split by `val_split`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory (expected DIR/train/<class>/*.png or DIR/<class>/*.png)")
    if (root / "train").is_dir():
        train = _class_dirs(root / "train")
        if not (root / "test").is_dir():
            if val_split is None:
                raise DataError(f"{root}: has train/ but no test/: add test/<class>/ or give --val-split")
            test = None
        else:
            test = _class_dirs(root / "test")
            extra = sorted(set(test) - set(train))
            if extra:
                raise DataError(f"{root / 'test' / extra[0]}: class not in train/")
    else:
        train, test = _class_dirs(root), None
    names = sorted(train)
    files = [f for n in names for f in train[n]]
    labels = np.array([i for i, n in enumerate(names) for _ in train[n]], np.int64)
    if test is None:
        frac = 0.2 if val_split is None else val_split
        if not 0 < frac < 1:
            raise DataError(f"--val-split: must be in (0, 1), got {frac}")
        order = np.random.default_rng(seed).permutation(len(files))  # fixed seed: the same split every run
        n_test = max(1, int(round(frac * len(files))))
        test_idx, train_idx = order[:n_test], order[n_test:]
        test_files, y_test = [files[i] for i in test_idx], labels[test_idx]
        files, labels = [files[i] for i in train_idx], labels[train_idx]
    else:
        test_files = [f for n in names for f in test.get(n, [])]
        y_test = np.array([i for i, n in enumerate(names) for _ in test.get(n, [])], np.int64)
    x_all, c = _decode(files + test_files, size)
    x = x_all.transpose(0, 3, 1, 2).astype(np.float32) / 255  # (N, C, H, W)
    x_train, x_test, mean, std = normalise(x[:len(files)], x[len(files):])
    return Dataset(f"folder:{root.name}", x_train, labels, x_test, y_test, len(names), flip=False,
                   mean=mean, std=std, class_names=tuple(names))


def _nchw(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    elif x.ndim != 4:
        raise DataError(f"{path}: {key}: expected (N, H, W), (N, H, W, C) or (N, C, H, W), got {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255
    if x.dtype.kind != "f":
        raise DataError(f"{path}: {key}: dtype {x.dtype}, expected uint8 pixels or floats in [0, 1]")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: {key}: holds NaN or infinite values")
    return x


def load_npz(path: str | Path) -> Dataset:
    """x_train, y_train, x_test, y_test arrays (uint8 pixels or floats in [0, 1])."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz file ({str(e)[:80]})") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array {missing[0]} (expected x_train, y_train, x_test, y_test)")
    xtr, xte = _nchw(arrays["x_train"], "x_train", path), _nchw(arrays["x_test"], "x_test", path)
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"{path}: x_test: shape {xte.shape[1:]} differs from x_train's {xtr.shape[1:]}")
    ys = []
    for key, n in (("y_train", len(xtr)), ("y_test", len(xte))):
        y = arrays[key]
        if y.ndim != 1 or len(y) != n or y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
            raise DataError(f"{path}: {key}: expected {n} integer labels >= 0")
        ys.append(y.astype(np.int64))
    classes = int(max(ys[0].max(initial=0), ys[1].max(initial=0))) + 1
    if classes < 2:
        raise DataError(f"{path}: y_train: needs at least 2 classes")
    x_train, x_test, mean, std = normalise(xtr, xte)
    return Dataset(f"npz:{path.stem}", x_train, ys[0], x_test, ys[1], classes, flip=False, mean=mean, std=std)
