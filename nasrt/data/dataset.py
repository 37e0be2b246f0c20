"""The Dataset every loader returns (built-in sets in nasrt/data/builtin.py, the user's own in
nasrt/data/user.py), and the limits readers enforce (preprocessing: nasrt/data/preprocess.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nasrt.contract.plan import MAX_CHANNELS

MAX_CLASSES = MAX_CHANNELS  # a plan's limit on classes: more would be refused after the search
DEFLATE_RATIO = 1032  # deflate's largest expansion: a stream of n bytes holds at most ~1032 n


@dataclass
class Dataset:
    """Normalised float32 images (N, C, H, W) and int64 labels, train and test."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    flip: bool  # horizontal flips are a valid augmentation for this data
    mean: tuple[float, ...] = ()  # per-channel statistics of [0, 1] pixels used to normalise
    std: tuple[float, ...] = ()
    class_names: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])
