"""Top-1/top-5 with the centre crop and with 10-crop oversampling (Krizhevsky et al. 2012):
the 4 corners and the centre of each image, and their mirrors, softmax averaged over the 10.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import mxnet as mx
import numpy as np
from mxnet import gluon


def crop_offsets(height: int, width: int, crop_h: int, crop_w: int, crops: int) -> list[tuple[int, int]]:
    """(top, left) of each crop window; mirrors are taken of the same windows.

    crops=1: the centre only, at the offset MXNet's ImageRecordIter uses ((H - h) // 2), so that
    on an image already at crop size it is the identity. crops=10: centre + 4 corners.
    """
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop {crop_h}x{crop_w} is larger than the {height}x{width} images")
    centre = ((height - crop_h) // 2, (width - crop_w) // 2)
    if crops == 1:
        return [centre]
    if crops == 10:
        return [centre, (0, 0), (0, width - crop_w), (height - crop_h, 0), (height - crop_h, width - crop_w)]
    raise ValueError(f"crops must be 1 or 10, got {crops}")


def crop_views(x: mx.nd.NDArray, crop: tuple[int, int], crops: int) -> list[mx.nd.NDArray]:
    """The `crops` views of a batch x (N, C, H, W), each (N, C, crop_h, crop_w)."""
    (height, width), (crop_h, crop_w) = x.shape[2:], crop
    views = []
    for top, left in crop_offsets(height, width, crop_h, crop_w, crops):
        window = x[:, :, top:top + crop_h, left:left + crop_w]
        views.append(window)
        if crops == 10:
            views.append(mx.nd.flip(window, axis=3))
    return views


def predict_batches(net: gluon.Block, batches: Iterable[mx.io.DataBatch], ctxs: list[mx.Context],
                    crop: tuple[int, int], crops: int, dtype: str = "float32",
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (probabilities (n, classes), labels (n,)) per batch, padding removed.

    Each view is a forward pass of the whole batch split over `ctxs`, so memory stays at one
    batch however many crops; the softmax (not the logits) is averaged, as in Caffe's oversample.
    """
    for batch in batches:
        x, y = batch.data[0], batch.label[0]
        count = x.shape[0] - (batch.pad or 0)
        views = crop_views(x, crop, crops)
        total = 0
        for view in views:
            parts = gluon.utils.split_and_load(view.astype(dtype, copy=False), ctx_list=ctxs, even_split=False)
            probs = [mx.nd.softmax(net(part).astype("float32")).as_in_context(mx.cpu()) for part in parts]
            total = total + mx.nd.concat(*probs, dim=0)
        # asnumpy is the sync point: one per batch
        yield (total / len(views)).asnumpy()[:count], y.asnumpy()[:count].astype(np.int64)


def topk_correct(probs: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows have their label among the k most probable classes."""
    if k == 1:      # argmax, like the training loop's top-1, so that ties resolve the same way
        return int((probs.argmax(axis=1) == labels).sum())
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


def evaluate_crops(net: gluon.Block, batches: Iterable[mx.io.DataBatch], ctxs: list[mx.Context],
                   crop: tuple[int, int], crops: int, dtype: str = "float32") -> dict[str, float]:
    """{"top1", "top5" (fractions), "count"} over every image the batches hold."""
    top1 = top5 = count = 0
    for probs, labels in predict_batches(net, batches, ctxs, crop, crops, dtype):
        top1 += topk_correct(probs, labels, 1)
        top5 += topk_correct(probs, labels, 5)
        count += len(labels)
    if count == 0:
        raise ValueError("no images to evaluate: the record file is empty")
    return {"top1": top1 / count, "top5": top5 / count, "count": count}
