"""Training images/s on synthetic data at a recipe's shape and batch, per device count:
a bare hybridized loop against the project's trainer, to tell model speed from data speed.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import mxnet as mx
from mxnet import autograd, gluon

from ..config import Recipe, SyntheticData
from ..errors import UserError
from ..nets import get_net
from ..tracking import Tracker
from .checkpoint import TrainState


def global_batch_size(recipe: Recipe, num_devices: int) -> int:
    train = recipe.train
    return train.batch_size * num_devices if train.batch_per == "device" else train.batch_size


def input_shape(recipe: Recipe) -> list[int]:
    shape = getattr(recipe.data, "data_shape", None)
    if shape is None:
        raise UserError(f"{recipe.source or recipe.name}: data.kind {recipe.data.kind} has no data_shape; "
                        f"the benchmark needs a recipe with data.kind recordio or synthetic.")
    return list(shape)


def benchmark_train(recipe: Recipe, ctx_lists: list[list[mx.Context]], steps: int, warmup: int) -> list[dict]:
    """Training images/s of the bare loop and of the project's trainer, per device set.

    Returns one row per entry of ctx_lists: {"devices", "global_batch", "bare_img_per_s",
    "trainer_img_per_s", "ratio"} (ratio = trainer / bare; the goal is >= 0.95).
    """
    if warmup < 1 or steps < 1:
        raise UserError(f"benchmark: steps ({steps}) and warmup ({warmup}) must be at least 1")
    rows = []
    for ctxs in ctx_lists:
        bare = bare_images_per_second(recipe, ctxs, steps, warmup)
        full = trainer_images_per_second(recipe, ctxs, steps, warmup)
        rows.append({"devices": ",".join(str(c) for c in ctxs), "global_batch": global_batch_size(recipe, len(ctxs)),
                     "bare_img_per_s": bare, "trainer_img_per_s": full, "ratio": full / bare})
    return rows


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
    shape = (batch,) + tuple(input_shape(recipe))
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


class RepeatIter(mx.io.DataIter):
    """One random batch served `num_batches` times: the trainer's work without any data cost."""

    def __init__(self, batch_size: int, shape: list[int], classes: int, num_batches: int):
        super().__init__(batch_size)
        x = mx.nd.random.uniform(-1, 1, (batch_size, *shape))
        y = mx.nd.random.randint(0, classes, (batch_size,)).astype("float32")
        self._batch = mx.io.DataBatch(data=[x], label=[y], pad=0)
        self.num_batches, self.num_samples = num_batches, num_batches * batch_size
        self._served = 0

    @property
    def provide_data(self):
        return [mx.io.DataDesc("data", self._batch.data[0].shape)]

    @property
    def provide_label(self):
        return [mx.io.DataDesc("softmax_label", self._batch.label[0].shape)]

    def reset(self) -> None:
        self._served = 0

    def next(self) -> mx.io.DataBatch:
        if self._served == self.num_batches:
            raise StopIteration
        self._served += 1
        return self._batch


def trainer_images_per_second(recipe: Recipe, ctxs: list[mx.Context], steps: int, warmup: int) -> float:
    """research.train.loop.fit, as tools/train.py builds it, on RepeatIter batches.

    The recipe's data section is swapped for a small synthetic one (build_setup needs an
    iterator) and the train iterator for RepeatIter; the run stops through `should_stop`
    after warmup + steps batches, all inside the first epoch (no evaluation or checkpoint in
    the measured window). Tracking is off: MLflow calls happen only at epoch ends anyway.
    """
    from .loop import fit
    from .run import build_setup

    batch = global_batch_size(recipe, len(ctxs))
    synthetic = SyntheticData(data_shape=input_shape(recipe), num_train=batch, num_val=batch)
    recipe = dataclasses.replace(recipe, data=synthetic, train=dataclasses.replace(recipe.train, epochs=1))
    with tempfile.TemporaryDirectory(prefix="benchmark-") as run_dir:
        setup = build_setup(recipe, ctxs, Path(run_dir), recipe.train.kvstore)
        setup = dataclasses.replace(setup, is_logger=False,   # no progress lines, no checkpoint at the stop
                                    train_iter=RepeatIter(batch, input_shape(recipe), recipe.net.classes,
                                                          warmup + steps + 1))
        done, marks = [0], {}

        def should_stop() -> bool:             # called after every batch, from inside the loop
            done[0] += 1
            if done[0] in (warmup, warmup + steps):
                mx.nd.waitall()                # the only syncs the benchmark adds: at the window's ends
                marks[done[0]] = time.perf_counter()
            return done[0] == warmup + steps

        fit(setup, TrainState(recipe=recipe.to_dict()), Tracker.disabled(), should_stop)
    return steps * batch / (marks[warmup + steps] - marks[warmup])
