"""The user's own data: an image-folder tree or an .npz of arrays, decoded with
Pillow / numpy into the same normalised Dataset as the built-in sets."""
from __future__ import annotations

import io
import math
import struct
import tokenize
import zlib
from pathlib import Path

import numpy as np

from nasrt._io import open_regular, read_regular
from nasrt.contract.plan import MAX_CHANNELS, MAX_SIDE
from nasrt.data.dataset import DEFLATE_RATIO, MAX_CLASSES, Dataset
from nasrt.data.preprocess import normalise, pixels_input, unit_pixels
from nasrt.errors import DataError

MAX_IMAGE_FILE = 256 << 20  # bytes of one image file
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
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"{root}: cannot list the class folders ({e.strerror or e})") from None
    if len(dirs) > MAX_CLASSES:
        raise DataError(f"{root}: {len(dirs):,} class folders, more than the {MAX_CLASSES:,} classes a plan may have")
    for d in dirs:
        files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{d}: empty class (no {'/'.join(sorted(IMAGE_SUFFIXES))} images)")
        classes[d.name] = files
    if len(classes) < 2:
        raise DataError(f"{root}: needs at least 2 class folders (<class>/*.png|jpg), found {len(classes)}")
    return classes


def _open_image(f: Path, Image):
    """The image opened lazily (header only); DataError for anything Pillow cannot read.
    Its decoders raise many types on hostile bytes (OSError, SyntaxError, struct.error,
    IndexError, DecompressionBombError, ...): all mean "not a readable image"."""
    # From memory, not the file: Pillow's plugins read(n) with n from chunk headers, and a
    # file's read(n) allocates n up front (2 GiB for a hostile PNG); BytesIO returns what it has.
    data = read_regular(f, MAX_IMAGE_FILE, DataError, "an image file")
    try:
        return Image.open(io.BytesIO(data))
    except MemoryError:
        raise
    except Image.DecompressionBombError:
        raise DataError(f"{f}: too many pixels, more than the {Image.MAX_IMAGE_PIXELS or 0:,} an image may "
                        "have") from None
    except Exception as e:
        raise DataError(f"{f}: not a readable image ({type(e).__name__}: {str(e)[:80]!r})") from None


def _decode(files: list[Path], size: tuple[int, int] | None):
    """(uint8 array (N, H, W, 3) or (N, H, W, 1), channels) of the images, one size.
    Two passes: the headers first (sizes, modes, and a pixel bound before any decoding),
    then each image decoded, converted and resized at once, so memory holds the output
    and one source image."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError("the folder dataset needs Pillow: pip install pillow") from None
    limit = Image.MAX_IMAGE_PIXELS or 1 << 28  # Pillow's decompression-bomb bound
    first: tuple[Path, tuple[int, int]] | None = None
    gray = True
    for f in files:
        with _open_image(f, Image) as im:
            w, h = im.size
            if not (1 <= w <= 1 << 16 and 1 <= h <= 1 << 16) or w * h > limit:
                raise DataError(f"{f}: {h}x{w} pixels, more than the {limit:,} an image may have")
            gray = gray and im.mode in ("1", "L", "LA", "I", "I;16", "F")
        if size is None:
            if first is None:
                first = (f, (w, h))
            elif (w, h) != first[1]:
                raise DataError(f"{f}: {h}x{w} but {first[0]} is "
                                f"{first[1][1]}x{first[1][0]}: images differ in size, give --input-size HxW")
    mode = "L" if gray else "RGB"
    if size is None:
        assert first is not None  # files is never empty here
        size = (first[1][1], first[1][0])
    oh, ow = size
    if ow > MAX_SIDE or oh > MAX_SIDE:
        raise DataError(f"{files[0]}: {oh}x{ow}: sides over {MAX_SIDE}, give a smaller --input-size")
    x = np.empty((len(files), oh, ow, 1 if gray else 3), np.uint8)
    for i, f in enumerate(files):
        x[i] = _pixels(f, mode, (oh, ow), Image)
    return x, (1 if gray else 3)


def _pixels(f: Path, mode: str, size: tuple[int, int], Image) -> np.ndarray:
    """uint8 (H, W, C) of one image in `mode` ("L" or "RGB"), resized to size = (H, W)
    bilinearly: the one decoding that training and `nasrt run` share."""
    oh, ow = size
    with _open_image(f, Image) as im:
        try:
            im = im.convert(mode)
            if im.size != (ow, oh):
                im = im.resize((ow, oh), Image.BILINEAR)
            return np.asarray(im, np.uint8).reshape(oh, ow, -1)
        except MemoryError:
            raise
        except Exception as e:
            raise DataError(f"{f}: not a readable image ({type(e).__name__}: {str(e)[:80]!r})") from None


def read_image(path: str | Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image as the folder loader decodes it for training: uint8 (channels, H, W),
    grey for 1 channel, RGB for 3, resized bilinearly to size = (H, W), the pixel bound
    checked before decoding. DataError names the file."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{path}: images need Pillow (pip install pillow); or pass a .npy array") from None
    path = Path(path)
    limit = Image.MAX_IMAGE_PIXELS or 1 << 28
    with _open_image(path, Image) as im:
        w, h = im.size
        if not (1 <= w <= 1 << 16 and 1 <= h <= 1 << 16) or w * h > limit:
            raise DataError(f"{path}: {h}x{w} pixels, more than the {limit:,} an image may have")
    return _pixels(path, "L" if channels == 1 else "RGB", size, Image).transpose(2, 0, 1)


def image_input(path: str | Path, shape: tuple[int, int, int], mean=None, std=None) -> np.ndarray:
    """An image file -> the model's input (C, H, W), float32: decoded and resized as
    load_folder does for training, then pixels_input (the training statistics)."""
    c, h, w = shape
    return pixels_input(read_image(path, c, (h, w)), mean, std)


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
        # Reading by class sorts the images by label: shuffle both sets (fixed seed), so that
        # the first N images (--search-limit, FLASH's sample limits, limit=) hold every class.
        # Before, a CIFAR-10 search on the first 20,000 images saw four classes.
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(files))
        files, labels = [files[i] for i in order], labels[order]
        order = rng.permutation(len(test_files))
        test_files, y_test = [test_files[i] for i in order], y_test[order]
    x_all, c = _decode(files + test_files, size)
    x = unit_pixels(x_all.transpose(0, 3, 1, 2))  # (N, C, H, W)
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
    n, c, h, w = x.shape
    if n < 1 or not 1 <= c <= MAX_CHANNELS or not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise DataError(f"{path}: {key}: shape {x.shape}: needs >= 1 images, 1..{MAX_CHANNELS} channels "
                        f"and sides 1..{MAX_SIDE}")
    if x.dtype == np.uint8:
        return unit_pixels(x)
    if x.dtype.kind != "f":
        raise DataError(f"{path}: {key}: dtype {x.dtype}, expected uint8 pixels or floats in [0, 1]")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: {key}: holds NaN or infinite values (or values beyond float32)")
    return x


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _npz_member(zf, info, path: Path, key: str) -> np.ndarray:
    """One .npy member, its header's size checked against the member before allocating."""
    import zipfile
    where = f"{path}: {key}"
    if info.flag_bits & 0x1:
        raise DataError(f"{where}: encrypted member")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise DataError(f"{where}: compression method {info.compress_type} (numpy writes stored or deflated)")
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_RATIO
    if info.file_size > ratio * info.compress_size + 64:
        raise DataError(f"{where}: claims {info.file_size:,} bytes from {info.compress_size:,} compressed")
    with zf.open(info) as f:
        return _npy_body(f, info.file_size, where)


def _npy_body(f, size: int, where: str) -> np.ndarray:
    """The array of an .npy stream of `size` bytes, its header's shape checked against
    the bytes there before allocating (np.load allocates whatever a header claims)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise DataError(f"{where}: .npy format version {version} (expected 1.0 or 2.0)")
    if dtype.hasobject or dtype.kind not in "uif" or dtype.shape:
        raise DataError(f"{where}: dtype {str(dtype)[:40]}: expected uint8 pixels, floats or integer labels")
    nbytes = math.prod(shape) * dtype.itemsize
    held = size - f.tell()
    if nbytes != held:
        raise DataError(f"{where}: header says shape {shape[:8]} ({nbytes:,} bytes), the file holds {held:,}")
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise DataError(f"{where}: truncated ({len(data):,} of {nbytes:,} bytes)")
    x = np.frombuffer(data, dtype)
    return x.reshape(shape[::-1]).T if fortran else x.reshape(shape)


def read_npy(path: str | Path) -> np.ndarray:
    """An .npy file, bounded like the .npz members; DataError names the file."""
    path = Path(path)
    f, size = open_regular(path, DataError, "an .npy file")
    try:
        with f:
            return _npy_body(f, size, str(path))
    except (DataError, MemoryError):
        raise
    except (OSError, EOFError, ValueError, struct.error, SyntaxError, tokenize.TokenError, OverflowError) as e:
        raise DataError(f"{path}: not a readable .npy array ({type(e).__name__}: {str(e)[:80]!r})") from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """x_train, y_train, x_test, y_test of an .npz, read member by member with bounds
    (np.load allocates what a header claims: a 300-byte file could ask for terabytes)."""
    import zipfile
    f, _ = open_regular(path, DataError, "an .npz file")
    arrays = {}
    try:
        with f, zipfile.ZipFile(f) as zf:
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key not in NPZ_KEYS:
                    continue  # other members are not read
                if key in arrays:
                    raise DataError(f"{path}: {key}: more than one member of that name")
                arrays[key] = _npz_member(zf, info, path, key)
    except DataError:
        raise
    except MemoryError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, ValueError, struct.error,
            NotImplementedError, RuntimeError, KeyError, OverflowError, SyntaxError, tokenize.TokenError) as e:
        # numpy parses the npy header with tokenize/ast: TokenError and SyntaxError for a damaged one
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {str(e)[:80]!r})") from None
    return arrays


def load_npz(path: str | Path) -> Dataset:
    """x_train, y_train, x_test, y_test arrays (uint8 pixels or floats in [0, 1])."""
    path = Path(path)
    arrays = _read_npz(path)
    missing = [k for k in NPZ_KEYS if k not in arrays]
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
        if int(y.max()) >= MAX_CLASSES:
            raise DataError(f"{path}: {key}: label {int(y.max())}: at most {MAX_CLASSES:,} classes (labels "
                            f"0..{MAX_CLASSES - 1})")
        ys.append(y.astype(np.int64))
    classes = int(max(ys[0].max(initial=0), ys[1].max(initial=0))) + 1
    if classes < 2:
        raise DataError(f"{path}: y_train: needs at least 2 classes")
    x_train, x_test, mean, std = normalise(xtr, xte)
    return Dataset(f"npz:{path.stem}", x_train, ys[0], x_test, ys[1], classes, flip=False, mean=mean, std=std)
