"""Data: one `get_iterators` for every recipe's `data.kind`.

Every iterator is an `mx.io.DataIter` yielding DataBatch(data=[x], label=[y], pad=n) and has
`num_samples` (images in one pass); train iterators also have `labels_in_data`, the distinct labels the
data holds (None for random labels), from which the guard counts chance. Train iterators give full batches only, the same number
on every distributed part; val iterators give every image exactly once, padding the last
batch (`pad`). An iterator with `set_epoch(epoch)` is re-ordered deterministically per epoch.
"""
from __future__ import annotations

from ..config import DigitsData, MnistData, RecordData, Recipe, SyntheticData


def get_iterators(recipe: Recipe, batch_size: int, num_parts: int = 1, part_index: int = 0):
    """(train_iter, val_iter) for the recipe's data section, `batch_size` images per batch."""
    data, seed = recipe.data, recipe.train.seed
    if isinstance(data, DigitsData):
        from .digits import get_digits_iterators
        return get_digits_iterators(data, batch_size, seed, num_parts, part_index)
    if isinstance(data, MnistData):
        from .mnist import get_mnist_iterators
        return get_mnist_iterators(data, batch_size, seed, num_parts, part_index)
    if isinstance(data, SyntheticData):
        from .synthetic import get_synthetic_iterators
        return get_synthetic_iterators(data, batch_size, recipe.net.classes, seed, num_parts, part_index)
    if isinstance(data, RecordData):
        from .recordio import get_rec_iterators
        return get_rec_iterators(data, batch_size, recipe.net.classes, seed, num_parts, part_index)
    raise TypeError(f"no iterators for data section {type(data).__name__}")
