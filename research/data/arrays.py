"""In-memory iterator for small datasets (digits, MNIST, synthetic), deterministic per epoch."""
from __future__ import annotations

import mxnet as mx
import numpy as np


class ArrayIter(mx.io.DataIter):
    """Batches of numpy arrays as DataBatch(data=[x], label=[y], pad=n).

    Train mode (`drop_last=True`): shuffled with `seed + epoch`, so a resumed run sees
    the same order as an uninterrupted one; the incomplete last batch is dropped so that
    every batch (and every distributed worker) has the same size.
    Eval mode: every sample exactly once; the last batch is padded and `pad` says by how much.
    Sharding (`num_parts`, `part_index`) takes a disjoint, equal-sized slice per worker.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, num_parts: int = 1, part_index: int = 0):
        super().__init__(batch_size)
        if len(x) != len(y):
            raise ValueError(f"{len(x)} samples but {len(y)} labels")
        if num_parts > 1:
            per_part = len(x) // num_parts          # equal parts: dist_sync needs equal batch counts
            x = x[part_index * per_part:(part_index + 1) * per_part]
            y = y[part_index * per_part:(part_index + 1) * per_part]
        self._x = np.ascontiguousarray(x, dtype=np.float32)
        self._y = np.asarray(y, dtype=np.float32)
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.epoch = 0
        self.num_batches = len(self._x) // batch_size if drop_last else -(-len(self._x) // batch_size)
        if self.num_batches == 0:
            raise ValueError(f"batch size {batch_size} is larger than the {len(self._x)} samples")
        self.num_samples = self.num_batches * batch_size if drop_last else len(self._x)
        self.labels_in_data: int | None = len(np.unique(self._y))     # what chance is for the guard
        self._order = np.arange(len(self._x))
        self._cursor = 0
        self.reset()

    @property
    def provide_data(self):
        return [mx.io.DataDesc("data", (self.batch_size,) + self._x.shape[1:])]

    @property
    def provide_label(self):
        return [mx.io.DataDesc("softmax_label", (self.batch_size,))]

    def set_epoch(self, epoch: int) -> None:
        """Order the next pass as epoch `epoch` of an uninterrupted run would be."""
        self.epoch = epoch
        self.reset()

    def reset(self) -> None:
        self._cursor = 0
        self._order = np.arange(len(self._x))
        if self.shuffle:
            np.random.RandomState(self.seed + self.epoch).shuffle(self._order)

    def next(self) -> mx.io.DataBatch:
        if self._cursor >= self.num_batches:
            raise StopIteration
        start = self._cursor * self.batch_size
        idx = self._order[start:start + self.batch_size]
        self._cursor += 1
        pad = self.batch_size - len(idx)
        if pad:
            idx = np.concatenate([idx, idx[:1].repeat(pad)])
        return mx.io.DataBatch(data=[mx.nd.array(self._x[idx])], label=[mx.nd.array(self._y[idx])],
                               pad=pad, index=idx)
