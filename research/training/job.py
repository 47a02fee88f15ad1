"""The training job (research/transfer/job.py is the transfer job's), one run end to end: decide its modes, build
it (data, net, trainer, kvstore), resume it, run the loop, export the model; its run directory, MLflow run and exit
status through the Lifecycle (a stand-in that writes nothing on a distributed worker other than rank 0)."""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import mxnet as mx
from mxnet import gluon

from ..cli import Resume
from ..config import Recipe, RecipeError, TrainConfig
from ..data import get_iterators
from ..data.describe import describe_datasets
from ..dist import workers
from ..nets import build_net
from ..rundir.status import run_state
from ..study.trial import trial_from_environment
from . import checkpoint, precision
from .lifecycle import lifecycle_for
from .loop import Setup, fit
from .modes import Modes
from .resume import find_resume
from .schedules import lr_at, scaled_lr

log = logging.getLogger("research.training")


def train(recipe: Recipe, ctxs: list, run_dir: Path, argv: list[str], resume: Resume = "auto",
          interactive: bool = False) -> int:
    """Run or resume `recipe` in `run_dir`; returns the process exit status (research.errors.ExitCode).

    `resume`: "auto" continues a checkpoint of the same recipe, "require" insists on one (--resume), "fresh"
    sets the old run aside first (--fresh). `interactive` (research.train in a notebook): a second Ctrl-C
    raises KeyboardInterrupt instead of exiting the process, the resume hint names the Python call, and a NaN
    loss, a dead head or a failed checkpoint raise (after the run is marked FAILED) instead of returning 3 or 4.
    """
    kv = workers.create_kvstore(recipe.train.kvstore)
    modes = Modes(resume, interactive, *workers.placement(kv))       # decided here once; below, only read
    with lifecycle_for(run_dir, recipe, argv, modes) as lifecycle:   # a worker other than rank 0: a stand-in
        # what this command changes in the directory's run (train.epochs, how it runs, anything with --resume) is
        # recorded in MLflow
        content, changes = (None, {}) if resume == "fresh" else find_resume(run_dir, recipe, resume == "require")
        setup = build_setup(recipe, ctxs, run_dir, kv, modes)
        state = checkpoint.TrainState(recipe=recipe.to_dict())
        if content is not None:
            state = _restore(content, setup, run_dir)
            state.recipe = recipe.to_dict()
        lifecycle.state = state
        labels = getattr(setup.train_iter, "labels_in_data", None)
        if labels is not None and labels < recipe.net.classes:
            lifecycle.say.warning("net.classes is %d but the training data holds %d labels: the other %d outputs are "
                                  "never the answer (a fine-tuning head left at its old size? a subset of the "
                                  "classes?). Chance is 1/%d, and the guard counts it so.", recipe.net.classes, labels,
                                  recipe.net.classes - labels, labels)
        _join_workers(kv, setup, state)      # several: rank 0's weights and position everywhere, the lr on the servers
        if state.epoch >= recipe.train.epochs and run_state(run_dir) == "finished":
            lifecycle.already_finished(state.epoch, changes)
            return lifecycle.exit_code
        if resume != "require" and run_state(run_dir) == "pruned":    # --fresh set it aside already
            lifecycle.already_pruned()
            return lifecycle.exit_code
        tracker = lifecycle.start_tracking(ctxs, state.run_id, state.history, changes=changes)
        state.run_id = tracker.run_id or state.run_id     # a store that is down must not orphan the run id
        if recipe.tracking.enabled and recipe.tracking.system_metrics:
            tracker.start_system_metrics(recipe.tracking.system_metrics_every_s, resumed=bool(state.history))
        tracker.log_datasets(lambda: describe_datasets(recipe, setup.train_iter.num_samples,
                                                       setup.val_iter.num_samples))
        lifecycle.say.info("run %s: %s on %s, global batch %d, lr %.4g, output %s", tracker.run_id or "(untracked)",
                           recipe.name, ",".join(map(str, ctxs)), setup.global_batch, setup.base_lr, run_dir)
        lifecycle.write_status("running")
        if setup.trial.start(state.history):       # a sweep's trial pruned before a kill: not trained on
            lifecycle.pruned(setup.trial.verdict)
            return lifecycle.exit_code
        stop = lifecycle.stop_request()      # rank 0 decides when a job stops; the others' FollowerStop trains on
        try:
            outcome = fit(setup, state, lifecycle, stop)
        finally:
            stop.restore()
        workers.log_final_digest(kv, setup.net)     # several workers: equal on every one when they kept in sync
        if outcome == "stopped":
            lifecycle.stopped(stop)
            return lifecycle.exit_code
        if outcome == "pruned":
            lifecycle.say.warning("pruned by the sweep after epoch %d (%s); checkpoint written",
                                  setup.trial.verdict.epoch, setup.trial.verdict.against)
            lifecycle.pruned(setup.trial.verdict)
            return lifecycle.exit_code
        lifecycle.export_model(setup.net)
        lifecycle.finish()
        lifecycle.summary()
    return lifecycle.exit_code


def _join_workers(kv, setup: Setup, state: checkpoint.TrainState) -> None:
    """Several workers (research/dist/workers.py): every one starts at rank 0's position with rank 0's weights, and
    the servers' optimizer follows the recipe's lr. One worker: nothing."""
    train = setup.recipe.train
    position = (state.epoch, state.batch_in_epoch, state.step)
    agreed = workers.prepare_workers(
        kv, setup.trainer, setup.net, position, lr_at_epoch=partial(lr_at, base_lr=setup.base_lr, train=train),
        steps_per_epoch=setup.train_iter.num_samples // setup.local_batch, global_batch=setup.global_batch,
        frozen_epochs=train.frozen_epochs,
        layout=f"{len(setup.ctxs)} device(s), batch {setup.local_batch} per worker, global batch {setup.global_batch}, "
               f"lr {setup.base_lr:.4g} (recipe {train.lr:.4g} for batch {train.base_batch_size or train.batch_size})")
    if agreed != position:
        state.epoch, state.batch_in_epoch, state.step = agreed
        state.epoch_totals = None    # its own checkpoint's sums belong to another position (this worker's
                                     # train figures are not logged: rank 0's are)


def global_batch_size(train: TrainConfig, devices: int) -> int:
    """Images per update over all devices: train.batch_size is per device or global (train.batch_per)."""
    return train.batch_size * devices if train.batch_per == "device" else train.batch_size


def build_setup(recipe: Recipe, ctxs: list, run_dir: Path, kv, modes: Modes = Modes()) -> Setup:
    """Data, net (initialised on every context, hybridized) and trainer with its kvstore; `modes` (rank and workers)
    as train decided them from `kv`."""
    train = recipe.train
    num_workers, rank = modes.num_workers, modes.rank
    devices = len(ctxs) * num_workers
    global_batch = global_batch_size(train, devices)
    if global_batch % devices:
        raise RecipeError(f"train.batch_size {train.batch_size} (global) does not split evenly over "
                          f"{devices} devices: use a multiple of {devices} or train.batch_per: device.")
    train_iter, val_iter = get_iterators(recipe, global_batch // num_workers, num_parts=num_workers,
                                         part_index=rank)
    base_lr = scaled_lr(train, global_batch)
    if base_lr != train.lr:
        log.info("linear scaling rule: global batch %d vs base batch %d -> lr %.4g (recipe lr %.4g)",
                 global_batch, train.base_batch_size or train.batch_size, base_lr, train.lr)

    mx.random.seed(train.seed)                     # every worker and device starts from the same weights
    precision.init(train.amp)                      # before the net is built: AMP casts inside its graph
    net = build_net(recipe.net)
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2), ctx=ctxs)
    if recipe.net.pretrained:
        from ..nets.pretrained import load_pretrained
        load_pretrained(net, recipe.net.pretrained, ctxs)
    if train.dtype == "float16":
        net.cast("float16")
    if train.hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    shape = train_iter.provide_data[0].shape
    per_device = (shape[0] // len(ctxs),) + tuple(shape[1:])
    for ctx in ctxs:                               # finishes deferred init and builds the cached graph
        net(mx.nd.zeros(per_device, ctx=ctx, dtype=train.dtype))
    trainer = gluon.Trainer(net.collect_params(), train.optimizer, optimizer_params(train, base_lr), kvstore=kv,
                            update_on_kvstore=False if train.amp != "off" else None)
    precision.attach_scaler(trainer, train.amp)
    return Setup(recipe, net, trainer, train_iter, val_iter, ctxs, global_batch, base_lr, run_dir, modes,
                 lr_on_servers=num_workers > 1,      # dist.workers.prepare_workers gives the servers the schedule
                 trial=trial_from_environment(rank0=modes.rank0))   # a sweep's trial: the study it reports to


def optimizer_params(train: TrainConfig, base_lr: float) -> dict:
    """The Trainer's optimizer arguments from the recipe (tools/benchmark.py gives its GluonCV peer the same)."""
    params = {"learning_rate": base_lr, "wd": train.wd, "multi_precision": train.dtype == "float16"}
    if train.optimizer in ("sgd", "nag"):
        params["momentum"] = train.momentum
    if train.clip_gradient > 0:        # a guard against loss spikes; the reference run used none
        params["clip_gradient"] = train.clip_gradient
    return params


def _restore(content: dict, setup: Setup, run_dir: Path) -> checkpoint.TrainState:
    """checkpoint.restore, with a recipe change that altered a shape (data.size, net.classes...) told as such."""
    try:
        return checkpoint.restore(content, setup.net, setup.trainer)
    except checkpoint.CheckpointError as err:
        changed = ", ".join(_changes(content["state"].recipe, setup.recipe.to_dict())) or "none"
        raise RecipeError(f"{run_dir} holds a checkpoint this recipe cannot resume: {err}. Keys changed since: "
                          f"{changed}. Undo the change, or start over with --fresh (the old run is set aside) "
                          f"or --output for another folder.") from None


def _changes(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """'data.size 28 -> 32' for every key whose value differs between two recipe dicts."""
    out = []
    for key in sorted(set(saved) | set(now)):
        old, new = saved.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += _changes(old, new, f"{prefix}{key}.")
        elif old != new:
            out.append(f"{prefix}{key} {old!r} -> {new!r}")
    return out
