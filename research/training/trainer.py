"""One training run end to end: build it (data, net, trainer, kvstore), resume it, run the loop, export
the model; its run directory, MLflow run and exit status through the Lifecycle."""
from __future__ import annotations

import logging
from pathlib import Path

import mxnet as mx
from mxnet import gluon

from .. import atomic
from ..config import Recipe, RecipeError, TrainConfig
from ..data import get_iterators
from ..data.describe import describe_datasets
from ..errors import ExitCode
from ..nets import build_net
from ..rundir.files import MODEL
from ..rundir.status import read_status, run_state
from ..study.trial import trial_from_environment
from ..tracking import run_url, serve_hint
from . import checkpoint, kvstore, precision
from .lifecycle import Lifecycle
from .loop import Setup, fit
from .resume import find_resume
from .schedules import scaled_lr
from .signals import FollowerStop, StopRequest

log = logging.getLogger("research.training")


def train(recipe: Recipe, ctxs: list, run_dir: Path, resume: bool, fresh: bool, argv: list[str],
          interactive: bool = False) -> int:
    """Run or resume `recipe` in `run_dir`; returns the process exit status (research.errors.ExitCode).

    `interactive` (research.train in a notebook): a second Ctrl-C raises KeyboardInterrupt instead
    of exiting the process, the resume hint names the Python call, and a NaN loss, a dead head or a
    failed checkpoint raise (after the run is marked FAILED) instead of returning 3 or 4.
    """
    kv = kvstore.create_kvstore(recipe.train.kvstore)
    rank = kv.rank if kvstore.is_distributed(recipe.train.kvstore) else 0
    with Lifecycle(run_dir, recipe, argv, fresh=fresh and rank == 0, rank0=rank == 0, interactive=interactive) as run:
        content = find_resume(run_dir, recipe, resume) if rank == 0 or not fresh else None
        setup = build_setup(recipe, ctxs, run_dir, kv)
        state = checkpoint.TrainState(recipe=recipe.to_dict())
        if content is not None:
            state = _restore(content, setup, run_dir)
            state.recipe = recipe.to_dict()
        run.state = state
        labels = getattr(setup.train_iter, "labels_in_data", None)
        if setup.rank0 and labels is not None and labels < recipe.net.classes:
            log.warning("net.classes is %d but the training data holds %d labels: the other %d outputs are never the "
                        "answer (a fine-tuning head left at its old size? a subset of the classes?). Chance is 1/%d, "
                        "and the guard counts it so.", recipe.net.classes, labels, recipe.net.classes - labels, labels)
        if setup.num_workers > 1:     # rank 0's weights and position on every worker, lr schedule on the servers
            kvstore.prepare_workers(kv, setup, state)
        if state.epoch >= recipe.train.epochs and run_state(run_dir) == "finished":
            again, extend = (("resume='fresh'", "overrides={'train.epochs': N}") if interactive
                             else ("--fresh", "--set train.epochs=N"))
            print(f"{run_dir} already holds the finished run ({state.epoch} epochs). "
                  f"Use {again} to train again, or {extend} to extend it.")
            run.leave_as_is()
            return run.exit_code
        if not resume and run_state(run_dir) == "pruned":
            again, fresh = ("resume='require'", "resume='fresh'") if interactive else ("--resume", "--fresh")
            print(f"{run_dir} holds a sweep's trial its pruner stopped ({read_status(run_dir).pruned}). "
                  f"Use {again} to train it on anyway, or {fresh} to start over.")
            run.leave_as_is()
            return ExitCode.PRUNED
        tracker = run.start_tracking(ctxs, state.run_id, state.history)
        state.run_id = tracker.run_id or state.run_id     # a store that is down must not orphan the run id
        if recipe.tracking.enabled and recipe.tracking.system_metrics:
            tracker.start_system_metrics(recipe.tracking.system_metrics_every_s, resumed=bool(state.history))
        tracker.log_datasets(lambda: describe_datasets(recipe, setup.train_iter.num_samples,
                                                       setup.val_iter.num_samples))
        if setup.rank0:
            log.info("run %s: %s on %s, global batch %d, lr %.4g, output %s", tracker.run_id or "(untracked)",
                     recipe.name, ",".join(map(str, ctxs)), setup.global_batch, setup.base_lr, run_dir)
        run.write_status("running")
        if setup.trial.start(state.history):       # a sweep's trial pruned before a kill: not trained on
            run.pruned(setup.trial.verdict)
            return run.exit_code
        stop = StopRequest(interactive) if setup.rank0 else FollowerStop()   # rank 0 decides when a job stops
        stop.install()
        if setup.num_workers > 1:
            run.watch_for_blocked_stop()
        try:
            outcome = fit(setup, state, run, stop)
        finally:
            if setup.rank0:
                stop.restore()
        if setup.num_workers > 1:              # equal on every worker when the kvstore kept them in sync
            log.info("final weights sha256 %s", kvstore.weights_digest(setup.net))
        if outcome == "stopped":
            if setup.rank0:
                how = "rerun the same tools/launch_dist.py command" if setup.num_workers > 1 else run.resume_command()
                log.warning("stopped by %s at epoch %d, step %d; checkpoint written. Resume with:\n  %s",
                            stop.signal_name, state.epoch, state.step, how)
            run.stopped(stop.signal_name, stop.exit_code)
            return run.exit_code
        if outcome == "pruned":
            log.warning("pruned by the sweep after epoch %d (%s); checkpoint written", setup.trial.verdict.epoch,
                        setup.trial.verdict.against)
            run.pruned(setup.trial.verdict)
            return run.exit_code
        if setup.rank0:
            export_final(setup, run)
        run.finish()
        if setup.rank0:
            _print_summary(setup, state, run)
    return run.exit_code


def global_batch_size(train: TrainConfig, devices: int) -> int:
    """Images per update over all devices: train.batch_size is per device or global (train.batch_per)."""
    return train.batch_size * devices if train.batch_per == "device" else train.batch_size


def build_setup(recipe: Recipe, ctxs: list, run_dir: Path, kv) -> Setup:
    """Data, net (initialised on every context, hybridized) and trainer with its kvstore."""
    train = recipe.train
    num_workers, rank = (kv.num_workers, kv.rank) if kvstore.is_distributed(train.kvstore) else (1, 0)
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
    return Setup(recipe, net, trainer, train_iter, val_iter, ctxs, global_batch, base_lr, run_dir,
                 num_workers=num_workers, rank=rank, trial=trial_from_environment(rank0=rank == 0))


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


def export_final(setup: Setup, run: Lifecycle) -> None:
    """Final weights as symbol + params (and ONNX where supported), logged as artifacts and as the
    MLflow logged model. A failure is logged, not raised: the checkpoint has the weights."""
    from ..model.export import export_model
    model_dir = setup.run_dir / MODEL
    try:
        export_model(setup.net, model_dir, setup.recipe)
        run.tracker.log_artifacts(model_dir, "model")
        run.tracker.log_model(model_dir, step=setup.recipe.train.epochs)     # the UI's "Logged models"
    except Exception as err:  # noqa: BLE001 - the checkpoint has the weights; export is a convenience
        reason = atomic.explain(err.filename or model_dir, err) if isinstance(err, OSError) else str(err)
        log.error("model export failed (%s); %s", reason, run.newest_checkpoint().replace("last good", "final"))


def _print_summary(setup: Setup, state: checkpoint.TrainState, run: Lifecycle) -> None:
    last, tracker = state.history[-1], run.tracker
    print(f"\nval top-1 {last['val/top1']:.4f}, top-5 {last['val/top5']:.4f} after {state.epoch} epochs "
          f"({state.elapsed_s / 60:.1f} min). Run directory: {setup.run_dir}")
    if tracker.enabled:
        print(f"MLflow run {tracker.run_id} in experiment '{setup.recipe.tracking.experiment or setup.recipe.name}'. "
              f"Open the UI with:\n  {serve_hint()}\nthen browse {run_url(tracker.run_id, tracker.experiment_id)}")
