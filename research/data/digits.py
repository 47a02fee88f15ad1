"""scikit-learn's bundled handwritten digits (1,797 8x8 images), upscaled: no download needed."""
from __future__ import annotations

import numpy as np

from ..config import DigitsData
from .arrays import ArrayIter


def load_digits(size: int = 28, val_fraction: float = 0.2, split_seed: int = 0):
    """Return (x_train, y_train, x_val, y_val); x is float32 (N, 1, size, size) in [0, 1].

    The split is stratified and fixed by `split_seed`, so val accuracy is comparable across runs.
    """
    import cv2
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = (bunch.images / 16.0).astype(np.float32)          # pixel values are 0..16
    images = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in images])
    x = images[:, None, :, :]
    x_train, x_val, y_train, y_val = train_test_split(
        x, bunch.target, test_size=val_fraction, stratify=bunch.target, random_state=split_seed)
    return x_train, y_train, x_val, y_val


def get_digits_iterators(data: DigitsData, batch_size: int, seed: int = 0,
                         num_parts: int = 1, part_index: int = 0):
    x_train, y_train, x_val, y_val = load_digits(data.size, data.val_fraction, data.split_seed)
    train = ArrayIter(x_train, y_train, batch_size, shuffle=True, drop_last=True, seed=seed,
                      num_parts=num_parts, part_index=part_index)
    val = ArrayIter(x_val, y_val, batch_size)
    return train, val
