"""One training run: build it (data, net, trainer, kvstore), resume it, run the loop, export the model."""
from __future__ import annotations

import logging
import traceback
from pathlib import Path

import mxnet as mx
from mxnet import gluon

from .. import atomic
from ..config import Recipe, RecipeError, TrainConfig, dump_recipe
from ..data import get_iterators
from ..data.describe import describe_datasets
from ..nets import build_net
from ..tracking import Tracker, resume_run, run_url, start_run, ui_command
from . import checkpoint, kvstore
from .health import DeadHead
from .lock import RunDirLock
from .logs import add_file_log, flush_logs, remove_file_log, setup_logging
from .loop import NonFiniteLoss, Setup, fit
from .progress import InEpochReport
from .run_dir import prepare_run_dir, write_run_json, write_status
from .schedules import scaled_lr
from .signals import FollowerStop, StopRequest, on_stop_signal_even_if_blocked

log = logging.getLogger("research.training")
SAVE_FAILED = 4        # exit status: a checkpoint could not be written (full disk); tools/train.py --help says so


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
    optimizer_params = {"learning_rate": base_lr, "wd": train.wd, "multi_precision": train.dtype == "float16"}
    if train.optimizer in ("sgd", "nag"):
        optimizer_params["momentum"] = train.momentum
    if train.clip_gradient > 0:        # a guard against loss spikes; the reference run used none
        optimizer_params["clip_gradient"] = train.clip_gradient
    trainer = gluon.Trainer(net.collect_params(), train.optimizer, optimizer_params, kvstore=kv)
    return Setup(recipe, net, trainer, train_iter, val_iter, ctxs, global_batch, base_lr, run_dir,
                 num_workers=num_workers, is_logger=rank == 0)


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


def train(recipe: Recipe, ctxs: list, run_dir: Path, resume: bool, fresh: bool, argv: list[str],
          interactive: bool = False) -> int:
    """Run or resume `recipe`; returns the process exit code.

    `interactive` (research.train in a notebook): a second Ctrl-C raises KeyboardInterrupt instead
    of exiting the process, the resume hint names the Python call, and a NaN loss or a dead head
    raises NonFiniteLoss / DeadHead (after the run is marked FAILED) instead of returning 3.
    """
    lock = RunDirLock(run_dir)         # taken by rank 0 in _train; released here however it ends (a notebook goes on)
    try:
        return _train(recipe, ctxs, run_dir, resume, fresh, argv, interactive, lock)
    finally:
        lock.release()
        remove_file_log()


def _train(recipe: Recipe, ctxs: list, run_dir: Path, resume: bool, fresh: bool, argv: list[str],
           interactive: bool, lock: RunDirLock) -> int:
    setup_logging()
    kv = kvstore.create_kvstore(recipe.train.kvstore)
    distributed = kvstore.is_distributed(recipe.train.kvstore)
    is_logger = not distributed or kv.rank == 0
    if is_logger:
        lock.acquire()                     # one trainer per run directory
    content = prepare_run_dir(run_dir, recipe, resume, fresh and is_logger)
    run_dir.mkdir(parents=True, exist_ok=True)
    add_file_log(run_dir, is_logger)
    setup = build_setup(recipe, ctxs, run_dir, kv)
    state = checkpoint.TrainState(recipe=recipe.to_dict())
    if content is not None:
        state = _restore(content, setup, run_dir)
        state.recipe = recipe.to_dict()
    if distributed:       # rank 0's weights and position on every worker, lr schedule on the servers
        kvstore.prepare_workers(kv, setup, state)
    if state.epoch >= recipe.train.epochs:
        again, extend = (("resume='fresh'", "overrides={'train.epochs': N}") if interactive
                         else ("--fresh", "--set train.epochs=N"))
        print(f"{run_dir} already holds the finished run ({state.epoch} epochs). "
              f"Use {again} to train again, or {extend} to extend it.")
        return 0
    if not setup.is_logger:
        return _run_loop(setup, state, Tracker.disabled(), argv, interactive)
    atomic.write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
    if not recipe.tracking.enabled:
        tracker = Tracker.disabled()
    elif state.run_id:
        tracker = resume_run(state.run_id, state.history, argv)
    else:
        tracker = start_run(recipe, ctxs, argv)
    if recipe.tracking.system_metrics:
        tracker.start_system_metrics(recipe.tracking.system_metrics_every_s, resumed=bool(state.run_id))
    state.run_id = tracker.run_id or state.run_id     # a store that is down must not orphan the run id
    write_run_json(run_dir, tracker.run_id, tracker.experiment_id)
    tracker.log_artifact(run_dir / "recipe.yaml")
    tracker.log_datasets(lambda: describe_datasets(recipe, setup.train_iter.num_samples, setup.val_iter.num_samples))
    log.info("run %s: %s on %s, global batch %d, lr %.4g, output %s", tracker.run_id or "(untracked)",
             recipe.name, ",".join(map(str, ctxs)), setup.global_batch, setup.base_lr, run_dir)
    return _run_loop(setup, state, tracker, argv, interactive)


def _run_loop(setup: Setup, state: checkpoint.TrainState, tracker: Tracker, argv: list[str],
              interactive: bool = False) -> int:
    # rank 0 decides when a job stops
    stop = StopRequest(interactive) if setup.is_logger else FollowerStop()
    stop.install()
    end_watch = lambda: None  # noqa: E731
    if setup.is_logger and setup.num_workers > 1:   # the launcher SIGKILLs a rank 0 stuck on a dead worker
        end_watch = on_stop_signal_even_if_blocked(lambda name: _mark_killed(setup, state, tracker, name))
    try:
        return _fit_and_finish(setup, state, tracker, argv, stop, interactive)
    finally:
        end_watch()
        if setup.is_logger:
            stop.restore()


def _fit_and_finish(setup: Setup, state: checkpoint.TrainState, tracker: Tracker, argv: list[str],
                    stop: StopRequest, interactive: bool) -> int:
    recipe, run_dir = setup.recipe, setup.run_dir

    def write_in_epoch(figures: dict) -> None:
        write_status(run_dir, state, recipe, "running", tracker.run_id, figures)

    report = InEpochReport(tracker, write_in_epoch, recipe.train.epochs, setup.local_batch,
                           setup.num_workers, logged_until=tracker.last_step("iter/loss") if state.run_id else None)
    if setup.is_logger:
        write_status(run_dir, state, recipe, "running", tracker.run_id)
    try:
        outcome = fit(setup, state, tracker, stop, report)
    except NonFiniteLoss as err:
        log.error("%s. Stopped; %s. Lower train.lr or check the data.", err, _newest_saved(run_dir))
        _finish(setup, state, tracker, "FAILED", "failed")
        if interactive:                    # research.train raises what the tools report as exit status 3
            raise
        return 3
    except DeadHead as err:
        log.error("%s. Stopped; %s. Lower train.lr, add a warm-up (train.warmup_epochs) or use net.activation: "
                  "elu (docs/squeezenet-stability.md), then resume from that checkpoint or start afresh.",
                  err, _last_good(run_dir, state))
        tracker.set_tags({"failure": str(err)[:500]})
        _finish(setup, state, tracker, "FAILED", "failed")
        if interactive:
            raise
        return 3
    except checkpoint.CheckpointError as err:      # full disk or no permission: stop now, nothing unsaved claimed
        log.error("%s Stopped at step %d; %s. Once there is space, this resumes into the same MLflow run:\n  %s",
                  err, state.step, _newest_saved(run_dir), _resume_command(argv))
        saved = checkpoint.find_latest(run_dir / "checkpoints")   # status.json claims no epoch that was not saved
        _finish(setup, saved[1]["state"] if saved else state, tracker, "FAILED", "failed")
        if interactive:
            raise
        return SAVE_FAILED
    except BaseException:
        if setup.is_logger:
            try:
                atomic.write_text(run_dir / "traceback.txt", traceback.format_exc())
                tracker.log_artifact(run_dir / "traceback.txt")
            except OSError:
                pass                   # the traceback still reaches the console
        _finish(setup, state, tracker, "FAILED", "failed")
        raise
    if setup.num_workers > 1:              # equal on every worker when the kvstore kept them in sync
        log.info("final weights sha256 %s", kvstore.weights_digest(setup.net))
    if outcome == "stopped":
        if setup.is_logger:
            how = ("rerun the same tools/launch_dist.py command" if setup.num_workers > 1
                   else _resume_command(argv))
            log.warning("stopped by %s at epoch %d, step %d; checkpoint written. Resume with:\n  %s",
                        stop.signal_name, state.epoch, state.step, how)
        _finish(setup, state, tracker, "KILLED", "killed")
        return stop.exit_code
    if setup.is_logger:
        export_final(setup, tracker)
    _finish(setup, state, tracker, "FINISHED", "finished")
    if setup.is_logger:
        last = state.history[-1]
        print(f"\nval top-1 {last['val/top1']:.4f}, top-5 {last['val/top5']:.4f} after {state.epoch} epochs "
              f"({_minutes(state.elapsed_s)}). Run directory: {run_dir}")
        if tracker.enabled:
            print(f"MLflow run {tracker.run_id} in experiment '{recipe.tracking.experiment or recipe.name}'. "
                  f"Open the UI with:\n  {ui_command()}\nthen browse {run_url(tracker.run_id, tracker.experiment_id)}")
    return 0


def export_final(setup: Setup, tracker: Tracker) -> None:
    """Final weights as symbol + params (and ONNX where supported), logged as artifacts."""
    from ..model.export import export_model
    model_dir = setup.run_dir / "model"
    try:
        export_model(setup.net, model_dir, setup.recipe)
        tracker.log_artifacts(model_dir, "model")
        tracker.log_model(model_dir, step=setup.recipe.train.epochs)     # the UI's "Logged models"
    except Exception as err:  # noqa: BLE001 - the checkpoint has the weights; export is a convenience
        reason = atomic.explain(err.filename or model_dir, err) if isinstance(err, OSError) else str(err)
        log.error("model export failed (%s); %s", reason,
                  _newest_saved(setup.run_dir).replace("last good", "final"))


def _mark_killed(setup: Setup, state: checkpoint.TrainState, tracker: Tracker, signal_name: str) -> None:
    """From the signal thread, at once: KILLED in MLflow and status.json, in case rank 0 never gets to
    _finish. If it does (it was not blocked), it ends the run the usual way, KILLED again."""
    log.warning("%s: MLflow run marked KILLED now, in case a peer is dead and this process never gets back "
                "to Python before the launcher ends it", signal_name)
    if tracker.enabled:
        try:
            tracker.client.set_terminated(tracker.run_id, "KILLED")
        except Exception as err:  # noqa: BLE001 - best effort, on a side thread
            log.warning("could not mark the MLflow run KILLED: %s", err)
    write_status(setup.run_dir, state, setup.recipe, "killed", tracker.run_id)


def _finish(setup: Setup, state: checkpoint.TrainState, tracker: Tracker, status: str, word: str) -> None:
    if not setup.is_logger:
        return
    flush_logs()
    tracker.log_artifact(setup.run_dir / "train.log")
    tracker.end(status)
    write_status(setup.run_dir, state, setup.recipe, word, tracker.run_id)   # last: the run is settled


def _last_good(run_dir: Path, state: checkpoint.TrainState) -> str:
    """The best checkpoint by val top-1: written before the head died, unlike the newest ones."""
    best = run_dir / "checkpoints" / checkpoint.BEST
    if not best.exists():
        return "no checkpoint had been written yet"
    return f"the last good checkpoint is {best} (best val top-1 {state.best_top1:.4f})"


def _newest_saved(run_dir: Path) -> str:
    latest = checkpoint.find_latest(run_dir / "checkpoints")
    if latest is None:
        return "no checkpoint had been written yet"
    path, content = latest
    return f"the last good checkpoint is {path} (epoch {content['state'].epoch}, step {content['state'].step})"


def _resume_command(argv: list[str]) -> str:
    if not argv[0].endswith(".py"):                 # research.train(...) from Python
        return f"{argv[0]} again (resume='auto' continues from the checkpoint)"
    args = [a for a in argv if a not in ("--fresh", "--resume")]
    return " ".join(["python"] + args + ["--resume"])


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"
