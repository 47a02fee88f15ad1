"""Training images/s on synthetic data at a recipe's shape and batch, per device count:
a bare hybridized loop against the project's trainer, to tell model speed from data speed.
"""
from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import mxnet as mx
from mxnet import autograd, gluon

from ..config import Recipe, SyntheticData
from ..errors import UserError
from ..model.export import input_shape
from ..preflight import check_recipe
from ..training.checkpoint import TrainState
from ..training.lifecycle import Lifecycle
from ..training.loop import Setup, fit
from ..training.signals import StopRequest
from ..training.trainer import build_setup, global_batch_size


def benchmark_train(recipe: Recipe, ctx_lists: list[list[mx.Context]], steps: int, warmup: int,
                    windows: int = 1) -> list[dict]:
    """Training images/s of the bare loop and of the project's trainer, per device set.

    Returns one row per entry of ctx_lists: {"devices", "global_batch", "bare_img_per_s",
    "trainer_img_per_s", "ratio"}; ratio = trainer / bare speed, the goal is >= 0.95.
    The `steps` after `warmup` are cut into `windows`; see `measure` for how they alternate.
    """
    if warmup < 1 or windows < 1 or steps < windows:
        raise UserError(f"benchmark: warmup ({warmup}) and windows ({windows}) must be >= 1 and "
                        f"steps ({steps}) at least one per window")
    synthetic = SyntheticData(data_shape=list(input_shape(recipe)))
    for ctxs in ctx_lists:          # the recipe's checks (float16 on a CPU...), not its data files
        check_recipe(dataclasses.replace(recipe, data=synthetic), ctxs)
    return [measure(recipe, ctxs, steps, warmup, windows) for ctxs in ctx_lists]


class BareLoop:
    """forward/backward/trainer.step and nothing else (no data loading, lr updates, metrics,
    logging) on device-resident random data: the ceiling any trainer can reach. `step(batch)`
    does the same on a real batch, for `plan`'s data and model together."""

    def __init__(self, setup: Setup):
        shape = (setup.global_batch, *input_shape(setup.recipe))
        dtype = setup.recipe.train.dtype
        x = mx.nd.random.uniform(-1, 1, shape).astype(dtype)
        y = mx.nd.random.randint(0, setup.recipe.net.classes, (setup.global_batch,)).astype("float32")
        self.xs = gluon.utils.split_and_load(x, setup.ctxs, even_split=False)
        self.ys = gluon.utils.split_and_load(y, setup.ctxs, even_split=False)
        self.setup = setup
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def step(self, batch: mx.io.DataBatch | None = None) -> list[mx.nd.NDArray]:
        """One update on the random data, or on `batch` (split over the devices as the loop does)."""
        setup, xs, ys = self.setup, self.xs, self.ys
        if batch is not None:
            xs = [x.astype(setup.recipe.train.dtype, copy=False)
                  for x in gluon.utils.split_and_load(batch.data[0], setup.ctxs, even_split=False)]
            ys = gluon.utils.split_and_load(batch.label[0], setup.ctxs, even_split=False)
        with autograd.record():
            losses = [self.loss_fn(setup.net(x), y) for x, y in zip(xs, ys)]
        autograd.backward(losses)
        setup.trainer.step(setup.global_batch)
        return losses


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


def _synced_time() -> float:
    mx.nd.waitall()                  # MXNet runs asynchronously: the clock means nothing without a sync
    return time.perf_counter()


def measure(recipe: Recipe, ctxs: list[mx.Context], steps: int, warmup: int, windows: int) -> dict:
    """Windows of research.training.loop.fit as tools/train.py builds it, alternating with windows of
    the bare loop on the same net and trainer (no second copy in device memory).

    The recipe's data is swapped for RepeatIter batches (build_setup gets a small synthetic section),
    and `fit(..., steps=N)` trains N steps and returns, inside the first epoch: the seam through which
    the trainer is measured, with its progress reports, stop check and lr updates, and no evaluation
    or checkpoint in the measured steps. The two loops alternate under the same load (on a shared
    machine one loop alone swung 12-410 img/s between runs here). Each side's speed is the median over
    windows, the ratio the median of the per-window ratios. The syncs closing each window stop MXNet
    from overlapping Python work with the next window's compute, which, if anything, counts the
    trainer's extra Python work in full.
    """
    batch = global_batch_size(recipe.train, len(ctxs))
    synthetic = SyntheticData(data_shape=list(input_shape(recipe)), num_train=batch, num_val=batch)
    recipe = dataclasses.replace(recipe, data=synthetic, train=dataclasses.replace(recipe.train, epochs=1),
                                 tracking=dataclasses.replace(recipe.tracking, enabled=False))
    per_window = steps // windows
    with tempfile.TemporaryDirectory(prefix="benchmark-") as run_dir:
        setup = build_setup(recipe, ctxs, Path(run_dir), recipe.train.kvstore)
        setup = dataclasses.replace(setup, train_iter=RepeatIter(batch, input_shape(recipe), recipe.net.classes,
                                                                 warmup + windows * per_window + 1))
        run = Lifecycle(Path(run_dir), recipe, ["benchmark"])          # not entered: no lock, no MLflow run
        state, stop = TrainState(recipe=recipe.to_dict()), StopRequest()   # a stop never requested
        bare = BareLoop(setup)
        bare.run(warmup)
        fit(setup, state, run, stop, steps=warmup)
        pairs = []
        for _ in range(windows):
            start = _synced_time()
            fit(setup, state, run, stop, steps=per_window)
            middle = _synced_time()
            bare.run(per_window)
            pairs.append((_synced_time() - middle, middle - start))
    images = per_window * batch
    return {"devices": ",".join(str(c) for c in ctxs), "global_batch": batch,
            "bare_img_per_s": images / statistics.median(b for b, _ in pairs),
            "trainer_img_per_s": images / statistics.median(t for _, t in pairs),
            "ratio": statistics.median(b / t for b, t in pairs)}


def device_sets(ctxs: list[mx.Context]) -> list[list[mx.Context]]:
    """Each device count up to the given devices: [gpu0], [gpu0, gpu1], ..."""
    return [ctxs[:count] for count in range(1, len(ctxs) + 1)]


def format_rows(rows: list[dict]) -> str:
    """The table tools/benchmark.py prints."""
    lines = [f"{'devices':<24} {'batch':>6} {'bare img/s':>11} {'trainer img/s':>14} {'trainer/bare':>13}"]
    for row in rows:
        lines.append(f"{row['devices']:<24} {row['global_batch']:>6} {row['bare_img_per_s']:>11.1f} "
                     f"{row['trainer_img_per_s']:>14.1f} {row['ratio']:>13.2f}")
    return "\n".join(lines)
