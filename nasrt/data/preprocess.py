"""The one input preprocessing: raw pixels -> what the model was trained on. Every
loader (training) and `nasrt run` (inference; images via nasrt.data.user.image_input,
which decodes and resizes exactly as the folder loader) go through these functions, so
the same image reaches the model as the same array (bitwise; tests/test_userdata.py).
The native `nasrt-run` does the same float32 arithmetic for uint8 .npy input."""
from __future__ import annotations

import numpy as np


def unit_pixels(px: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]."""
    return px.astype(np.float32) / 255


def standardise(x: np.ndarray, mean, std) -> np.ndarray:
    """Per-channel (x - mean) / std of (..., C, H, W) float32 [0, 1] pixels, with the
    training set's statistics (float32 arithmetic, as training did it)."""
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    return ((x - m) / s).astype(np.float32)


def normalise(x_train: np.ndarray, x_test: np.ndarray):
    """Standardise both splits with the training split's per-channel statistics; returns
    (x_train, x_test, mean, std), the statistics as tuples (stored in the model file)."""
    m, sd = _channel_stats(x_train)
    mean = tuple(float(np.float32(v)) for v in m)
    std = tuple(float(np.float32(v) + np.float32(1e-6)) for v in sd)
    return standardise(x_train, mean, std), standardise(x_test, mean, std), mean, std


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of (N, C, H, W), accumulated in float64 a
    chunk of images at a time: a float32 sum stops growing at 2^24 (full CIFAR-10 has 51 M
    values per channel: every mean came out 2^24 / 51.2e6 = 0.32768), and a float64 copy of
    the whole set would be 1.2 GB."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for i in range(0, len(x), chunk):
        b = x[i:i + chunk].astype(np.float64)
        total += b.sum(axis=(0, 2, 3))
        squares += np.square(b).sum(axis=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    return mean, np.sqrt(np.maximum(squares / n - mean * mean, 0.0))


def pixels_input(px: np.ndarray, mean=None, std=None) -> np.ndarray:
    """uint8 pixels (C, H, W) or (N, C, H, W) -> the model's input: scaled to [0, 1] and,
    when the model stores its training statistics, standardised with them. (A model
    without statistics was trained on data nasrt did not normalise: [0, 1] only.)"""
    x = unit_pixels(px)
    return standardise(x, mean, std) if mean is not None else x
