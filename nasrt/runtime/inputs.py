"""The model's input from a user's file (`nasrt run`): a normalised float32 .npy, uint8
pixels (.npy) or an image, preprocessed as training did (nasrt.data.preprocess) with the
statistics the model stores. ModelError / DataError name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nasrt.contract.modelfile import input_normalisation
from nasrt.data.preprocess import pixels_input
from nasrt.data.user import image_input, read_npy
from nasrt.errors import ModelError


def read_input(path: Path, shape, metadata: dict, source=""):
    """The model's input from a .npy array (float: used as is, already normalised;
    uint8: pixels, preprocessed like an image) or an image file, by the preprocessing
    training used (nasrt.data.preprocess) and the statistics stored at export."""
    if not path.is_file():
        raise ModelError(f"{path}: no such input file")
    mean, std = input_normalisation(metadata, shape[0], source) or (None, None)
    if path.suffix != ".npy":
        return image_input(path, shape, mean, std)
    x = read_npy(path)
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise ModelError(f"{path}: dtype {x.dtype}: expected float32 (normalised) or uint8 (pixels)")
    if tuple(x.shape[-3:]) != tuple(shape) or x.ndim not in (3, 4):
        dims = ", ".join(map(str, shape))
        raise ModelError(f"{path}: shape {list(x.shape)}, expected [{dims}] or [N, {dims}] (C, H, W)")
    if x.size == 0:
        raise ModelError(f"{path}: an empty batch (shape {list(x.shape)}): nothing to classify")
    # uint8: raw pixels, the same preprocessing as an image
    x = pixels_input(x, mean, std) if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ModelError(f"{path}: holds NaN or infinite values")
    return x
