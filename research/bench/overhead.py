"""What checkpoints and tracking cost the training loop, per epoch, for a recipe's net."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import mxnet as mx
from mxnet import autograd, gluon

from ..config import Recipe
from ..metrics import DATA_WAIT, EPOCH_S, IMG_PER_S, LR, TRAIN_LOSS, TRAIN_TOP1, VAL_LOSS, VAL_TOP1, VAL_TOP5
from ..model.export import input_shape
from ..nets import build_net
from ..tracking import Tracker
from ..training.checkpoint import CheckpointWriter, TrainState, save_checkpoint


def benchmark_overhead(recipe: Recipe, repeats: int = 5, track: bool = True) -> dict[str, float]:
    """Seconds per epoch-end spent on the loop's thread (and in the background) for checkpoints and MLflow.

    Builds the recipe's net and optimizer on the CPU, takes one step so that momentum exists,
    then times `repeats` epoch-end checkpoints and metric logs into a temporary store.
    """
    net = build_net(recipe.net)
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    net.hybridize(static_alloc=True, static_shape=True)
    shape = (2, *input_shape(recipe))
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9})
    with autograd.record():
        loss = net(mx.nd.zeros(shape)).sum()
    loss.backward()
    trainer.step(2)
    mx.nd.waitall()
    history = [{"epoch": e, VAL_TOP1: 0.5, TRAIN_LOSS: 1.0} for e in range(recipe.train.epochs)]
    state = TrainState(epoch=recipe.train.epochs, step=1, history=history, recipe=recipe.to_dict())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        writer = CheckpointWriter(folder / "bg", keep_last=recipe.checkpoint.keep_last)
        loop_s, total_s = [], []
        for i in range(repeats):
            state.step = i + 1
            tic = time.perf_counter()
            writer.save(state, net, trainer, is_best=True)
            loop_s.append(time.perf_counter() - tic)
            writer.wait()
            total_s.append(time.perf_counter() - tic)
        sync_s = _median_time(lambda: save_checkpoint(folder / "sync", state, net, trainer, is_best=True), repeats)
        size = max(p.stat().st_size for p in (folder / "bg").glob("step-*.ckpt"))
        result = {"checkpoint_loop_s": statistics.median(loop_s), "checkpoint_total_s": statistics.median(total_s),
                  "checkpoint_sync_s": sync_s, "checkpoint_mb": size / 1e6}
        if track:
            result.update(_tracking_cost(folder, repeats, recipe))
    return result


def _tracking_cost(folder: Path, repeats: int, recipe: Recipe) -> dict[str, float]:
    import os
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        tracker = Tracker.start("overhead", "overhead")
        metrics = {k: 0.5 for k in (TRAIN_LOSS, TRAIN_TOP1, VAL_LOSS, VAL_TOP1, VAL_TOP5, LR,
                                    IMG_PER_S, EPOCH_S, DATA_WAIT)}
        tracker.flush()
        loop_s = _median_time(lambda: tracker.log_metrics(metrics, step=1), repeats)
        tic = time.perf_counter()
        for step in range(repeats):
            tracker.log_metrics(metrics, step=step)
        tracker.flush()
        store_s = (time.perf_counter() - tic) / repeats
        report_s = _report_cost(tracker, folder, recipe, repeats)
        tracker.end()
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return {"tracking_loop_s": loop_s, "tracking_store_s": store_s, "report_loop_s": report_s}


def _report_cost(tracker: Tracker, folder: Path, recipe: Recipe, repeats: int) -> float:
    """Seconds on the loop's thread for one in-epoch report (status.json rewritten, iter/ metrics queued),
    the work added every train.log_every batches; median over at least 20, the store busy meanwhile."""
    from ..training.lifecycle import Lifecycle
    from ..training.report import Report

    state = TrainState(epoch=0, step=0, recipe=recipe.to_dict())
    lifecycle = Lifecycle(folder, recipe, ["benchmark"])
    lifecycle.tracker, lifecycle.state = tracker, state
    report = Report(lifecycle, tracker, state, recipe.train.epochs, 10 ** 6, local_batch=32)
    report.start_epoch(0)

    def one() -> None:
        state.step = state.batch_in_epoch = state.step + 10
        report.interval(32 * state.step, 0.01 * state.step, 0.5, 0.1)
    seconds = _median_time(one, max(repeats, 20))
    report.close()
    tracker.flush()
    return seconds


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)
