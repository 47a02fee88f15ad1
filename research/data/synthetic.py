"""Random images and labels at a recipe's shape: model speed without data loading, smoke tests."""
from __future__ import annotations

import numpy as np

from ..config import SyntheticData
from .arrays import ArrayIter


def get_synthetic_iterators(data: SyntheticData, batch_size: int, classes: int, seed: int = 0,
                            num_parts: int = 1, part_index: int = 0):
    rng = np.random.RandomState(1234)      # fixed: every worker must see the same dataset
    shape = tuple(data.data_shape)
    x_train = rng.uniform(-1, 1, (data.num_train,) + shape).astype(np.float32)
    y_train = rng.randint(0, classes, data.num_train)
    x_val = rng.uniform(-1, 1, (data.num_val,) + shape).astype(np.float32)
    y_val = rng.randint(0, classes, data.num_val)
    train = ArrayIter(x_train, y_train, batch_size, shuffle=True, drop_last=True, seed=seed,
                      num_parts=num_parts, part_index=part_index)
    train.labels_in_data = None         # random labels: nothing to learn, so the guard does not expect learning
    return train, ArrayIter(x_val, y_val, batch_size)
