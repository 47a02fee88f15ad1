"""The data-parallel training loop. `fit` reads top to bottom: the periodic work (progress, stop,
checkpoint) is plain `if` blocks in the order it runs, then the epoch's end (EpochEnd, in its order)."""
from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import mxnet as mx
from mxnet import autograd, gluon

from ..config import Recipe
from ..metrics import (DATA_WAIT, DEAD_FRACTION, EPOCH_S, IMG_PER_S, ITER_LOSS, LOSS_SCALE, LR, SKIPPED_STEPS,
                       TRAIN_BATCHES, TRAIN_LOSS, TRAIN_TOP1, VAL_LOSS, VAL_TOP1, VAL_TOP5)
from ..rundir.files import CHECKPOINTS, CURVES
from ..study.trial import NoTrial, StudyTrial
from . import health, precision
from .checkpoint import CheckpointWriter, NoCheckpoints, TrainState
from .evaluate import evaluate
from .health import DeadHead, NonFiniteLoss, Overflowing
from .modes import Modes
from .plots import CurvesWriter, NoCurves
from .report import Report
from .schedules import lr_at

if TYPE_CHECKING:
    from ..tracking import Tracker
    from .lifecycle import Lifecycle
    from .signals import FollowerStop, StopRequest

log = logging.getLogger("research.training")
Outcome = Literal["finished", "stopped", "paused", "pruned"]


@dataclass
class Setup:
    """What the loop works on; built by research.training.job.build_setup."""
    recipe: Recipe
    net: gluon.HybridBlock
    trainer: gluon.Trainer
    train_iter: mx.io.DataIter
    val_iter: mx.io.DataIter
    ctxs: list[mx.Context]
    global_batch: int          # images per update over all devices and workers
    base_lr: float             # lr after the linear scaling rule
    run_dir: Path
    modes: Modes = Modes()     # this process's rank among the workers (machines, each with len(ctxs) devices)
    lr_on_servers: bool = False   # several workers: the servers' optimizer follows lr_at (dist.workers.ScheduleLR)
    trial: StudyTrial | NoTrial = field(default_factory=NoTrial)   # a sweep's trial: reports each epoch, may be pruned

    @property
    def local_batch(self) -> int:
        """Images per update on this worker (over its devices)."""
        return self.global_batch // self.modes.num_workers


def fit(setup: Setup, state: TrainState, lifecycle: Lifecycle, stop: StopRequest | FollowerStop,
        steps: int | None = None) -> Outcome:
    """Train from `state` to the recipe's last epoch, reporting through `lifecycle` (the run's Lifecycle: its
    tracker and status.json). Returns "finished"; "stopped" (`stop.requested`, set by a signal: rank 0
    writes a checkpoint first); "pruned" (a sweep's trial its pruner stopped after an epoch's checkpoint:
    `setup.trial.verdict` says when and against what); or "paused" after `steps` more steps, with nothing
    written (the seam tools/benchmark.py measures the trainer through: fit again continues where it paused).

    Raises:
        NonFiniteLoss: the loss became NaN/inf; the last good checkpoint is kept.
        Overflowing: train.amp: health.MAX_SKIPPED_IN_A_ROW steps in a row had inf/NaN gradients (a step
            AMP's scaler skips is not counted in the loss, so one does not stop the run).
        DeadHead: the net's outputs stopped carrying information (research/training/health.py);
            the epoch that showed it is not checkpointed.
        CheckpointError: a checkpoint could not be written (full disk, permissions): training stops at
            the next batch rather than going on with nothing saved; the earlier checkpoints are kept.
    """
    recipe, net, trainer, ctxs, tracker = setup.recipe, setup.net, setup.trainer, setup.ctxs, lifecycle.tracker
    train = recipe.train
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    steps_per_epoch = setup.train_iter.num_samples // setup.local_batch
    writer, curves = rank_outputs(setup)
    report = Report(lifecycle, tracker, state, train.epochs, steps_per_epoch, setup.local_batch,
                    setup.modes.num_workers, logged_until=tracker.last_step(ITER_LOSS), enabled=setup.modes.rank0,
                    warn_data_wait=recipe.data.kind == "recordio")
    epoch_end = EpochEnd(setup, state, tracker, report, writer, curves, loss_fn, steps_per_epoch)
    until = None if steps is None else state.step + steps
    random_layers = _has_dropout(net)
    last_save, skipped_in_a_row = time.monotonic(), 0
    save_every_s = 60 * recipe.checkpoint.every_minutes      # the timed checkpoint inside an epoch; 0: none
    try:
        for epoch in range(state.epoch, train.epochs):
            start_epoch(setup, epoch)
            totals, tic, previous = EpochTotals(ctxs, state.epoch_totals), time.monotonic(), None
            report.start_epoch(epoch)
            for batch in batches_left(setup.train_iter, state.batch_in_epoch, steps_per_epoch):
                report.batch_arrived()
                if random_layers:    # Dropout draws from MXNet's RNG, whose state no checkpoint can hold: seeded
                    for ctx in ctxs:     # per step on the training devices, a resume draws alike
                        mx.random.seed((train.seed * 1_000_003 + state.step) % 2 ** 31, ctx=ctx)
                lr = lr_at(state.step / steps_per_epoch, setup.base_lr, train)
                loss = train_step(setup, batch, lr, loss_fn, totals)
                if loss is None:                           # train.amp: inf/NaN gradients, the update skipped
                    skipped_in_a_row += 1
                    problem = health.check_overflows(skipped_in_a_row, precision.loss_scale(trainer), state.step + 1)
                    if problem:
                        raise Overflowing(problem)
                else:
                    if previous is not None:
                        # Sync on the previous batch: the loop is back in Python every batch, so a stop signal
                        # is acted on within two, while this batch keeps the devices busy.
                        previous.wait_to_read()
                    previous, skipped_in_a_row = loss, 0
                state.step, state.batch_in_epoch = state.step + 1, state.batch_in_epoch + 1
                report.advance()
                if state.batch_in_epoch % train.log_every == 0:
                    train_loss = totals.loss(f"at epoch {epoch + 1}, step {state.step}")   # sync: the loss sums
                    report.interval(totals.seen, time.monotonic() - tic, train_loss, lr)
                    mx.nd.waitall()      # sync: every device idle now, so the wait for the next batch is data alone
                    report.synced()
                if writer.failed:                          # written in the background: seen after the next batch
                    raise writer.failed
                if stop.requested:                         # rank 0's alone: the others' FollowerStop never is
                    state.epoch_totals = totals.carried_on()      # sync: the epoch's sums go into the checkpoint
                    checkpoint_now(writer, state, setup)
                    log.warning("stopped %.1f s after %s, at epoch %d batch %d (step %d): checkpoint written",
                                time.monotonic() - stop.received_at, stop.signal_name, epoch + 1,
                                state.batch_in_epoch, state.step)
                    return "stopped"
                if state.step == until:
                    state.epoch_totals = totals.carried_on()      # the next fit goes on with the epoch's sums
                    return "paused"
                if save_every_s and time.monotonic() - last_save > save_every_s:
                    state.epoch_totals = totals.carried_on()
                    writer.save(state, net, trainer)
                    last_save = time.monotonic()

            if epoch_end(epoch, totals, tic):                  # a sweep's trial its pruner stopped
                return "pruned"
            last_save = time.monotonic()
        checkpoint_now(writer)                     # the last epoch's file on disk before the run is called done
        return "finished"
    finally:
        report.close()
        writer.close()                             # a checkpoint being written is finished, even on error
        curves.close()


class EpochEnd:
    """An epoch's end, in the order it runs: validate, guard, keep, checkpoint (MLflow's metrics once it is on
    disk), report (log line, status.json, pace), curves, the sweep's pruner."""

    def __init__(self, setup: Setup, state: TrainState, tracker: Tracker, report: Report,
                 writer: CheckpointWriter | NoCheckpoints, curves: CurvesWriter | NoCurves, loss_fn: gluon.loss.Loss,
                 steps_per_epoch: int):
        self.setup, self.state, self.tracker, self.report = setup, state, tracker, report
        self.writer, self.curves, self.loss_fn, self.steps_per_epoch = writer, curves, loss_fn, steps_per_epoch
        recipe = setup.recipe
        self.labels = getattr(setup.train_iter, "labels_in_data", recipe.net.classes)      # chance, for the guard
        self.head_activation = recipe.net.activation if recipe.net.name.startswith("squeezenet") else None
        # MLflow's record, ahead of the checkpoint's after a resume from an older one (a newer one was damaged)
        self.logged_epochs = tracker.last_step(VAL_TOP1) or 0

    def __call__(self, epoch: int, totals: EpochTotals, tic: float) -> bool:
        """Ends `epoch` (trained since `tic`); True when a sweep's pruner stops the trial (its checkpoint on disk)."""
        setup, state, train, writer = self.setup, self.state, self.setup.recipe.train, self.writer
        mx.nd.waitall()
        train_seconds = time.monotonic() - tic
        val = evaluate(setup.net, setup.val_iter, setup.ctxs, self.loss_fn, train.dtype)
        lr = lr_at((state.step - 1) / self.steps_per_epoch, setup.base_lr, train)     # the epoch's last batch's
        metrics = epoch_metrics(setup, totals, val, lr, train_seconds, time.monotonic() - tic, self.report, epoch)
        entry = {"epoch": epoch + 1, **metrics}
        problem = health.check(state.history + [entry], setup.recipe.net.classes, self.labels, train.chance_epochs,
                               train.stall_epochs, self.head_activation)
        if problem:                                    # before the epoch is kept or checkpointed
            raise DeadHead(f"{problem}. {health.advice(self.head_activation)}")
        state.epoch, state.batch_in_epoch, state.epoch_totals = epoch + 1, 0, None
        state.elapsed_s += metrics[EPOCH_S]
        state.history.append(entry)
        is_best = metrics[VAL_TOP1] > state.best_top1
        state.best_top1 = max(state.best_top1, metrics[VAL_TOP1])
        saved = writer.save(state, setup.net, setup.trainer, is_best)
        if state.epoch > self.logged_epochs:          # else MLflow has it from before a resume that went back
            self.tracker.log_metrics(metrics, step=state.epoch, after=saved)
        self.report.end_epoch(metrics, metrics[EPOCH_S])
        self.tracker.log_artifact(self.curves.path, after=self.curves.update(state.history))
        if setup.trial.report(state.epoch, metrics, last=state.epoch == train.epochs):   # a sweep's trial: pruned?
            checkpoint_now(writer)                     # the epoch's checkpoint on disk before it stops
            return True
        return False


class EpochTotals:
    """The epoch's running loss and correct counts, summed on the devices (no sync until read), over the
    images whose update ran (`counted`: train.amp skips some), and every image trained on (`seen`), since
    this pass over the epoch began; `carried`, the same sums of the batches trained before the checkpoint
    this pass resumed from (TrainState.epoch_totals), so that the epoch's figures cover all its batches."""

    def __init__(self, ctxs: list[mx.Context], carried: dict[str, float] | None = None):
        self.sums = [[mx.nd.zeros(1, ctx=c), mx.nd.zeros(1, ctx=c)] for c in ctxs]
        self.seen = self.counted = self.batches = 0
        self.carried = {**dict.fromkeys(CARRIED, 0), **(carried or {})}

    def add(self, outs: list[mx.nd.NDArray], ys: list[mx.nd.NDArray], losses: list[mx.nd.NDArray]) -> None:
        for (loss_sum, correct), out, y, loss in zip(self.sums, outs, ys, losses):
            loss_sum += loss.sum()
            correct += (out.argmax(axis=1) == y).sum()
        self.counted += sum(y.shape[0] for y in ys)

    def loss(self, where: str) -> float:
        """The mean train loss of this pass so far (a sync); NonFiniteLoss if it is NaN or infinite."""
        return _finite(self._total(0) / max(self.counted, 1), where)

    def carried_on(self) -> dict[str, float]:
        """The epoch's sums so far, this pass's added to those carried (a sync): what a checkpoint taken now
        holds, for the pass that resumes from it."""
        return {"loss_sum": self.carried["loss_sum"] + self._total(0),
                "correct": self.carried["correct"] + self._total(1),
                "counted": self.carried["counted"] + self.counted, "seen": self.carried["seen"] + self.seen,
                "batches": self.carried["batches"] + self.batches}

    def epoch(self, where: str) -> dict[str, float]:
        """The whole epoch's train figures: mean loss and top-1 over every batch it trained, carried ones
        included, and how many batches they cover; NonFiniteLoss if the loss is NaN or infinite."""
        sums = self.carried_on()
        counted = max(sums["counted"], 1)
        return {TRAIN_LOSS: _finite(sums["loss_sum"] / counted, where), TRAIN_TOP1: sums["correct"] / counted,
                TRAIN_BATCHES: sums["batches"], "skipped_images": sums["seen"] - sums["counted"]}

    def _total(self, index: int) -> float:
        return float(sum(device_sums[index].asscalar() for device_sums in self.sums))


CARRIED = ("loss_sum", "correct", "counted", "seen", "batches")     # TrainState.epoch_totals' keys


def _finite(loss: float, where: str) -> float:
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"train loss is {loss} {where}. Lower train.lr or check the data.")
    return loss


def batches_left(train_iter: mx.io.DataIter, done: int, steps_per_epoch: int):
    """The epoch's batches after the first `done`, which a resumed run trained before its checkpoint (they are
    read and dropped: the iterator has no seek). None is read when the checkpoint came after the last one."""
    if done >= steps_per_epoch:
        return iter(())
    return itertools.islice(train_iter, done, None)


def epoch_metrics(setup: Setup, totals: EpochTotals, val: dict[str, float], lr: float, train_seconds: float,
                  epoch_seconds: float, report: Report, epoch: int) -> dict[str, float]:
    """What the epoch logs (MLflow, the history, the guard); NonFiniteLoss if its train loss is not finite.

    The train figures cover every batch of the epoch, those before a mid-epoch resume included
    (`train/batches` says how many: fewer only after a resume from a checkpoint written before they were
    kept); speed covers this process's batches, over its time."""
    train_figures = totals.epoch(f"at the end of epoch {epoch + 1}")
    metrics = {
        TRAIN_LOSS: train_figures[TRAIN_LOSS], TRAIN_TOP1: train_figures[TRAIN_TOP1],
        TRAIN_BATCHES: train_figures[TRAIN_BATCHES],
        VAL_LOSS: val["loss"], VAL_TOP1: val["top1"], VAL_TOP5: val["top5"],
        LR: lr,                                # the last lr this epoch trained with
        IMG_PER_S: totals.seen / max(train_seconds, 1e-9) * setup.modes.num_workers,
        EPOCH_S: epoch_seconds,
        DATA_WAIT: report.epoch_wait_share(),  # the devices' estimated idle share, waiting on data
        DEAD_FRACTION: val["dead_fraction"],
    }
    if precision.has_scaler(setup.trainer):            # train.amp: the scale now, and the updates it skipped
        metrics.update({LOSS_SCALE: precision.loss_scale(setup.trainer),
                        SKIPPED_STEPS: train_figures["skipped_images"] // setup.local_batch})
    return metrics


def rank_outputs(setup: Setup) -> tuple[CheckpointWriter | NoCheckpoints, CurvesWriter | NoCurves]:
    """Rank 0's checkpoint writer and curves; on the other workers stand-ins that write nothing (decided here alone,
    as the Lifecycle, the tracker and the report are where the run is built)."""
    if not setup.modes.rank0:
        return NoCheckpoints(), NoCurves(setup.run_dir / CURVES, setup.recipe.name)
    return (CheckpointWriter(setup.run_dir / CHECKPOINTS, setup.recipe.checkpoint.keep_last),
            CurvesWriter(setup.run_dir / CURVES, setup.recipe.name))


def checkpoint_now(writer: CheckpointWriter | NoCheckpoints, state: TrainState | None = None,
                   setup: Setup | None = None) -> None:
    """Save `state` (when given) and wait until every queued checkpoint is on disk; the first failure raised."""
    if state is not None:
        writer.save(state, setup.net, setup.trainer)
    writer.wait()
    if writer.failed:
        raise writer.failed


def start_epoch(setup: Setup, epoch: int) -> None:
    """Seeds, frozen layers and the iterator's order for `epoch`: a resumed run draws as an uninterrupted one."""
    mx.random.seed(setup.recipe.train.seed + epoch)
    if setup.recipe.train.frozen_epochs:
        _set_frozen(setup.net, frozen=epoch < setup.recipe.train.frozen_epochs)
    if hasattr(setup.train_iter, "set_epoch"):
        setup.train_iter.set_epoch(epoch)
    else:
        setup.train_iter.reset()


def train_step(setup: Setup, batch: mx.io.DataBatch, lr: float, loss_fn: gluon.loss.Loss,
               totals: EpochTotals) -> mx.nd.NDArray | None:
    """One update at `lr`: forward and backward on every device, the gradients reduced and the weights
    stepped; the batch's loss and correct counts are added to `totals` on the devices. Queued, not waited
    for: returns the first device's loss, to sync on later. With train.amp, None when the loss scaler found
    inf/NaN gradients: the weights are unchanged and the batch is left out of the loss sums."""
    if not setup.lr_on_servers:
        setup.trainer.set_learning_rate(lr)
    dtype = setup.recipe.train.dtype
    xs = gluon.utils.split_and_load(batch.data[0], setup.ctxs, even_split=False)
    ys = gluon.utils.split_and_load(batch.label[0], setup.ctxs, even_split=False)
    totals.seen, totals.batches = totals.seen + batch.data[0].shape[0], totals.batches + 1
    with autograd.record():
        outs = [setup.net(x.astype(dtype, copy=False)).astype("float32", copy=False) for x in xs]
        losses = [loss_fn(out, y) for out, y in zip(outs, ys)]
        scaled = precision.scale(losses, setup.trainer)     # train.amp: times the loss scale; else the losses
    autograd.backward(scaled)
    setup.trainer.step(setup.global_batch)      # divides the summed gradients by the global batch (and the scale)
    if precision.skipped(setup.trainer):        # train.amp: the scaler's check synced on the gradients here
        return None
    totals.add(outs, ys, losses)
    return losses[0]


def _has_dropout(net: gluon.Block) -> bool:
    found = []
    net.apply(lambda block: found.append(block) if isinstance(block, gluon.nn.Dropout) else None)
    return bool(found)


def _set_frozen(net: gluon.Block, frozen: bool) -> None:
    """Fine-tuning: lr_mult 0 keeps every parameter outside `net.output` unchanged (wd included)."""
    head = set(net.output.collect_params().keys()) if hasattr(net, "output") else set()
    for name, param in net.collect_params().items():
        if name not in head:
            param.lr_mult = 0.0 if frozen else 1.0
