"""Validation metrics over a padded iterator: loss, top-1, top-5, each image counted once."""
from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet import gluon

from .health import dead_fraction


def evaluate(net: gluon.Block, val_iter: mx.io.DataIter, ctxs: list[mx.Context],
             loss_fn: gluon.loss.Loss | None = None, dtype: str = "float32") -> dict[str, float]:
    """Return {"loss", "top1", "top5"} (fractions) and "dead_fraction" over one pass of `val_iter`.

    dead_fraction: the share of the net's outputs that had the same value for every image
    (research.training.health). Sums stay on the devices and are read once at the end: one sync
    per evaluation. Padded samples of the last batch (`batch.pad`) are masked out of the sums;
    they do count in the outputs' ranges, where they cannot make a dead output look alive.
    """
    loss_fn = loss_fn or gluon.loss.SoftmaxCrossEntropyLoss()
    sums = {c: [mx.nd.zeros(1, ctx=c) for _ in range(3)] for c in ctxs}
    ranges = {}                                                       # ctx -> [per-output min, max]
    count = 0
    val_iter.reset()
    for batch in val_iter:
        size = batch.data[0].shape[0]
        weights = mx.nd.ones(size)
        if batch.pad:
            weights[size - batch.pad:] = 0
        xs = gluon.utils.split_and_load(batch.data[0], ctxs, even_split=False)
        ys = gluon.utils.split_and_load(batch.label[0], ctxs, even_split=False)
        ws = gluon.utils.split_and_load(weights, ctxs, even_split=False)
        for x, y, w in zip(xs, ys, ws):
            out = net(x.astype(dtype, copy=False)).astype("float32", copy=False)
            loss_sum, top1_sum, top5_sum = sums[x.context]
            loss_sum += (loss_fn(out, y) * w).sum()
            k = min(5, out.shape[1])
            topk = mx.nd.topk(out, k=k, axis=1)                      # (batch, k) class ids
            hits = (topk == y.reshape((-1, 1)).astype(topk.dtype))
            top1_sum += (hits[:, 0] * w).sum()
            top5_sum += (hits.sum(axis=1) * w).sum()
            low, high = out.min(axis=0), out.max(axis=0)
            if x.context in ranges:
                low, high = mx.nd.minimum(low, ranges[x.context][0]), mx.nd.maximum(high, ranges[x.context][1])
            ranges[x.context] = [low, high]
        count += size - batch.pad
    totals = [sum(sums[c][i].asscalar() for c in ctxs) for i in range(3)]   # the sync point
    if count == 0:
        raise ValueError("the validation iterator yielded no images")
    low = np.min([r[0].asnumpy() for r in ranges.values()], axis=0)
    high = np.max([r[1].asnumpy() for r in ranges.values()], axis=0)
    return {"loss": totals[0] / count, "top1": totals[1] / count, "top5": totals[2] / count,
            "dead_fraction": dead_fraction(low.tolist(), high.tolist())}
