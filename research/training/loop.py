"""The data-parallel training loop. Periodic work is plain `if` blocks in the order it runs."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mxnet as mx
from mxnet import autograd, gluon

from ..config import Recipe
from ..durations import format_duration
from ..tracking import Tracker
from . import health
from .checkpoint import CheckpointError, CheckpointWriter, TrainState
from .evaluate import evaluate
from .pace import Pace
from .plots import plot_curves
from .progress import Progress
from .run_dir import write_status
from .schedules import lr_at

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class Setup:
    """What the loop works on; built by research.training.run."""
    recipe: Recipe
    net: gluon.HybridBlock
    trainer: gluon.Trainer
    train_iter: mx.io.DataIter
    val_iter: mx.io.DataIter
    ctxs: list[mx.Context]
    global_batch: int          # images per update over all devices and workers
    base_lr: float             # lr after the linear scaling rule
    run_dir: Path
    num_workers: int = 1       # distributed kvstore workers (machines), each with len(ctxs) devices
    is_logger: bool = True     # rank 0 only: tracks, checkpoints and prints
    lr_on_servers: bool = False   # dist kvstore: the servers' optimizer follows lr_at (set by kvstore.prepare_workers)

    @property
    def local_batch(self) -> int:
        """Images per update on this worker (over its devices)."""
        return self.global_batch // self.num_workers


def fit(setup: Setup, state: TrainState, tracker: Tracker, should_stop: Callable[[], bool],
        on_progress: Callable[..., None] = lambda state, *figures: None) -> str:
    """Train from `state` to the recipe's last epoch. Returns "finished" or "stopped".

    `on_progress(state, steps_per_epoch, images, seconds, loss, lr)` runs on rank 0 every
    train.log_every batches (figures since the epoch's first trained batch; must not block).

    Raises:
        NonFiniteLoss: the loss became NaN/inf; the last good checkpoint is kept.
        health.DeadHead: the net's outputs stopped carrying information (research/training/health.py);
            the epoch that showed it is not checkpointed.
        CheckpointError: a checkpoint could not be written (full disk, permissions): training stops at
            the next batch rather than going on with nothing saved; the earlier checkpoints are kept.
    """
    recipe = setup.recipe
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    steps_per_epoch = setup.train_iter.num_samples // setup.local_batch
    writer = CheckpointWriter(setup.run_dir / "checkpoints", recipe.checkpoint.keep_last)
    try:
        outcome = _epochs(setup, state, tracker, should_stop, on_progress, loss_fn, steps_per_epoch, writer)
    finally:
        writer.wait()                             # a checkpoint being written is finished, even on error
    if writer.failed:                             # the last one, or the one a stop asked for
        raise writer.failed
    return outcome


def _epochs(setup: Setup, state: TrainState, tracker: Tracker, should_stop: Callable[[], bool],
            on_progress: Callable[..., None], loss_fn: gluon.loss.Loss,
            steps_per_epoch: int, writer: CheckpointWriter) -> str:
    recipe, net, trainer, ctxs = setup.recipe, setup.net, setup.trainer, setup.ctxs
    train, dtype = recipe.train, recipe.train.dtype
    last_save = time.monotonic()
    pace = Pace(tracker, train.epochs, steps_per_epoch, setup.global_batch, enabled=setup.is_logger,
                warn_data_wait=recipe.data.kind == "recordio")
    pace.start(state)
    for epoch in range(state.epoch, train.epochs):
        mx.random.seed(train.seed + epoch)        # resumed and uninterrupted runs draw alike
        if train.frozen_epochs:
            _set_frozen(net, frozen=epoch < train.frozen_epochs)
        if hasattr(setup.train_iter, "set_epoch"):
            setup.train_iter.set_epoch(epoch)
        else:
            setup.train_iter.reset()
        skip, state.batch_in_epoch = state.batch_in_epoch, 0
        lr = lr_at(state.step / steps_per_epoch, setup.base_lr, train)
        sums = [[mx.nd.zeros(1, ctx=c), mx.nd.zeros(1, ctx=c)] for c in ctxs]   # loss, correct
        seen, tic = 0, time.monotonic()
        progress = Progress(epoch, train.epochs, steps_per_epoch, enabled=setup.is_logger)
        for batch in setup.train_iter:
            pace.batch_arrived()                   # after a log sync: how long the idle devices waited for data
            if skip:                               # resuming mid-epoch: these were trained on
                skip -= 1
                state.batch_in_epoch += 1
                continue
            lr = lr_at(state.step / steps_per_epoch, setup.base_lr, train)
            if not setup.lr_on_servers:
                trainer.set_learning_rate(lr)
            xs = gluon.utils.split_and_load(batch.data[0], ctxs, even_split=False)
            ys = gluon.utils.split_and_load(batch.label[0], ctxs, even_split=False)
            with autograd.record():
                outs = [net(x.astype(dtype, copy=False)).astype("float32", copy=False) for x in xs]
                losses = [loss_fn(out, y) for out, y in zip(outs, ys)]
            autograd.backward(losses)
            trainer.step(setup.global_batch)      # divides the summed gradients by the global batch
            for (loss_sum, correct), out, y, loss in zip(sums, outs, ys, losses):
                loss_sum += loss.sum()             # stays on the device: no sync here
                correct += (out.argmax(axis=1) == y).sum()
            state.step += 1
            state.batch_in_epoch += 1
            seen += batch.data[0].shape[0]
            if state.batch_in_epoch % train.log_every == 0:
                train_loss = _total(sums, 0) / seen              # the sync point, every log_every batches
                if not math.isfinite(train_loss):
                    raise NonFiniteLoss(f"train loss is {train_loss} at epoch {epoch + 1}, step {state.step}")
                progress.update(state.batch_in_epoch, seen / (time.monotonic() - tic), train_loss, lr)
                pace.interval(state, epoch, time.monotonic() - tic)
                if setup.is_logger:                # status.json and MLflow iter/ (queued: the loop never waits)
                    on_progress(state, steps_per_epoch, seen, time.monotonic() - tic, train_loss, lr)
            else:
                progress.tick(state.batch_in_epoch)
            if writer.failed:                      # written in the background: seen after the next batch
                progress.close()
                raise writer.failed
            if should_stop():
                progress.close()
                _save(writer, setup, state, tracker, is_best=False, wait=True)
                return "stopped"
            if (recipe.checkpoint.every_minutes
                    and time.monotonic() - last_save > 60 * recipe.checkpoint.every_minutes):
                _save(writer, setup, state, tracker, is_best=False)
                last_save = time.monotonic()
        progress.close()
        mx.nd.waitall()
        train_seconds = time.monotonic() - tic
        train_loss = _total(sums, 0) / max(seen, 1)
        if not math.isfinite(train_loss):
            raise NonFiniteLoss(f"train loss is {train_loss} at the end of epoch {epoch + 1}")
        val = evaluate(net, setup.val_iter, ctxs, loss_fn, dtype)
        epoch_seconds = time.monotonic() - tic
        state.elapsed_s += epoch_seconds
        metrics = {
            "train/loss": train_loss, "train/top1": _total(sums, 1) / max(seen, 1),
            "val/loss": val["loss"], "val/top1": val["top1"], "val/top5": val["top5"],
            "lr": lr,                                          # the last lr this epoch trained with
            "speed/img_per_s": seen / train_seconds * setup.num_workers, "time/epoch_s": epoch_seconds,
            "time/data_wait": pace.epoch_wait_share(),     # the devices' estimated idle share, waiting on data
            "health/dead_fraction": val["dead_fraction"],
        }
        entry = {"epoch": epoch + 1, **metrics}
        problem = health.check(state.history + [entry], recipe.net.classes, train.chance_epochs)
        if problem:                                # raised before the epoch is kept or checkpointed
            raise health.DeadHead(problem)
        state.epoch, state.batch_in_epoch = epoch + 1, 0
        state.history.append(entry)
        is_best = metrics["val/top1"] > state.best_top1
        state.best_top1 = max(state.best_top1, metrics["val/top1"])
        eta = (train.epochs - state.epoch) * state.elapsed_s / max(len(state.history), 1)
        if setup.is_logger:                       # the epoch end on rank 0, in the order it runs
            log.info("epoch %d/%d  train loss %.4f top1 %.4f | val loss %.4f top1 %.4f top5 %.4f | "
                     "lr %.3g | %.0f img/s | %.1f s | ETA %s", state.epoch, train.epochs,
                     metrics["train/loss"], metrics["train/top1"], metrics["val/loss"], metrics["val/top1"],
                     metrics["val/top5"], metrics["lr"], metrics["speed/img_per_s"], epoch_seconds,
                     format_duration(eta))
            pace.epoch_end(state)
            # the checkpoint, written in the background; MLflow gets the epoch's metrics once it is on
            # disk (`then`), so MLflow never shows an epoch that a resume would not start after
            _save(writer, setup, state, tracker, is_best,
                  then=lambda metrics=metrics, epoch=state.epoch: tracker.log_metrics(metrics, step=epoch))
            write_status(setup.run_dir, state, recipe, "running", tracker.run_id)      # tools/status.py
            history = [dict(entry) for entry in state.history]                       # curves.png, off the loop
            tracker.run_later(lambda: plot_curves(history, setup.run_dir / "curves.png", recipe.name))
            tracker.log_artifact(setup.run_dir / "curves.png")
        last_save = time.monotonic()
    return "finished"


def _save(writer: CheckpointWriter, setup: Setup, state: TrainState, tracker: Tracker, is_best: bool,
          then: Callable[[], None] = lambda: None, wait: bool = False) -> None:
    """Checkpoint on rank 0 (written in the background); a failed write is reported, training goes on."""
    if not setup.is_logger:
        return

    def on_error(err: CheckpointError) -> None:     # the loop stops on writer.failed
        tracker.set_tags({"checkpoint.error": str(err)[:500]})

    writer.save(state, setup.net, setup.trainer, is_best, then=then, on_error=on_error, wait=wait)


def _set_frozen(net: gluon.Block, frozen: bool) -> None:
    """Fine-tuning: lr_mult 0 keeps every parameter outside `net.output` unchanged (wd included)."""
    head = set(net.output.collect_params().keys()) if hasattr(net, "output") else set()
    for name, param in net.collect_params().items():
        if name not in head:
            param.lr_mult = 0.0 if frozen else 1.0


def _total(sums: list[list[mx.nd.NDArray]], index: int) -> float:
    return float(sum(device_sums[index].asscalar() for device_sums in sums))

