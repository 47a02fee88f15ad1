"""Training images/s on synthetic data at a recipe's shape and batch, per device count:
a bare hybridized loop against the project's trainer, to tell model speed from data speed.
"""
from __future__ import annotations

import time

import mxnet as mx
from mxnet import autograd, gluon

from ..config import Recipe
from ..nets import get_net


def global_batch_size(recipe: Recipe, num_devices: int) -> int:
    train = recipe.train
    return train.batch_size * num_devices if train.batch_per == "device" else train.batch_size


def bare_images_per_second(recipe: Recipe, ctxs: list[mx.Context], steps: int, warmup: int) -> float:
    """forward/backward/trainer.step of the recipe's net on device-resident random data.

    Nothing else runs in the loop (no data loading, lr updates, metrics or logging): this is
    the ceiling any trainer can reach for this net, batch and device set.
    """
    batch = global_batch_size(recipe, len(ctxs))
    net = get_net(recipe.net.name, classes=recipe.net.classes)
    net.initialize(mx.init.Xavier(), ctx=ctxs)
    if recipe.train.dtype != "float32":
        net.cast(recipe.train.dtype)
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": 1e-3, "momentum": recipe.train.momentum, "wd": recipe.train.wd,
                             "multi_precision": recipe.train.dtype == "float16"},
                            kvstore=recipe.train.kvstore)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    shape = (batch,) + tuple(recipe.data.data_shape)
    x = mx.nd.random.uniform(-1, 1, shape, dtype=recipe.train.dtype)
    y = mx.nd.random.randint(0, recipe.net.classes, (batch,)).astype("float32")
    xs = gluon.utils.split_and_load(x, ctxs, even_split=False)
    ys = gluon.utils.split_and_load(y, ctxs, even_split=False)

    def run(count: int) -> None:
        for _ in range(count):
            with autograd.record():
                losses = [loss_fn(net(xi), yi) for xi, yi in zip(xs, ys)]
            autograd.backward(losses)
            trainer.step(batch)
        mx.nd.waitall()                  # the sync point: MXNet runs asynchronously

    run(warmup)
    start = time.perf_counter()
    run(steps)
    return steps * batch / (time.perf_counter() - start)
