"""One training run end to end: run directory, resume, net, trainer, tracking, signals, export."""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import platform
import socket
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

import mxnet as mx
from mxnet import gluon

from .. import atomic, distributed
from ..config import Recipe, RecipeError, TrainConfig, dump_recipe
from ..data import get_iterators
from ..data.describe import describe_datasets
from ..nets import build_net
from ..plots import plot_curves
from ..tracking import REPO, Tracker, environment_tags, tracking_uri, ui_command
from . import checkpoint
from .health import DeadHead
from .lock import LOCK, RunDirLock
from .loop import NonFiniteLoss, Setup, fit
from .progress import InEpochReport
from .schedules import scaled_lr
from .signals import StopRequest, on_stop_signal_even_if_blocked

log = logging.getLogger("research.train")
LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
DIST = ("dist_sync", "dist_device_sync", "dist_async")
SAVE_FAILED = 4        # exit status: a checkpoint could not be written (full disk); tools/train.py --help says so


def default_run_dir(recipe: Recipe) -> Path:
    return REPO / "runs" / recipe.name


def prepare_run_dir(run_dir: Path, recipe: Recipe, resume: bool, fresh: bool) -> dict | None:
    """Decide between a new run and a resumed one; return the checkpoint to resume or None.

    Raises:
        RecipeError: --resume without a checkpoint, or a folder holding another recipe's run.
    """
    kept = [p for p in run_dir.iterdir() if p.name != LOCK] if run_dir.is_dir() else []
    if fresh and kept:
        aside = run_dir.with_name(f"{run_dir.name}.old-{datetime.now():%Y%m%d-%H%M%S}")
        aside.mkdir()
        for path in kept:                  # item by item: the lock file (and the lock) stay with the folder
            path.rename(aside / path.name)
        print(f"--fresh: the previous contents of {run_dir} were moved to {aside}")
    latest = None if fresh else checkpoint.find_latest(run_dir / "checkpoints")
    if latest is None:
        if resume:
            raise RecipeError(f"--resume: no valid checkpoint in {run_dir / 'checkpoints'}. "
                              f"Drop --resume to start a new run.")
        return None
    path, content = latest
    saved = content["state"].recipe
    if saved.get("name") != recipe.name or saved.get("net") != recipe.to_dict()["net"]:
        raise RecipeError(f"{run_dir} holds a run of recipe '{saved.get('name')}' (net {saved.get('net')}). "
                          f"Use --output for another folder, or --fresh to set the old run aside.")
    log.info("resuming from %s (epoch %d, step %d)", path, content["state"].epoch, content["state"].step)
    return content


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes: a notebook's current cell, pytest's capture."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging() -> None:
    """Console logging now (once per process: a notebook cell run twice does not print lines twice);
    records are also buffered until `add_file_log` knows the run dir."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(getattr(h, "_research", None) == "console" for h in root.handlers):
        console = _StderrHandler()
        console.setFormatter(LOG_FORMAT)
        console._research = "console"
        root.addHandler(console)
    if not any(getattr(h, "_research", None) == "buffer" for h in root.handlers):
        buffer = logging.handlers.MemoryHandler(capacity=10000, flushLevel=logging.CRITICAL + 1)
        buffer._research = "buffer"
        root.addHandler(buffer)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def add_file_log(run_dir: Path, is_logger: bool) -> None:
    """Append to run_dir/train.log (rank 0 only), starting with what was logged before."""
    root = logging.getLogger()
    buffers = [h for h in root.handlers if getattr(h, "_research", None) == "buffer"]
    target = None
    remove_file_log()                       # a previous run in this process (a notebook) logged elsewhere
    if is_logger:
        target = _RunLog(run_dir / "train.log")
        target.setFormatter(LOG_FORMAT)
        target._research = "file"
        root.addHandler(target)
    for buffer in buffers:
        if target is not None:
            for record in buffer.buffer:
                target.handle(record)
        root.removeHandler(buffer)


def remove_file_log() -> None:
    """Close the run's train.log handler: the run is over, later records belong elsewhere."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_research", None) == "file"]:
        root.removeHandler(handler)
        handler.close()


class _RunLog(logging.FileHandler):
    """train.log that, on a full disk, says so once on the console instead of a traceback per record."""
    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if not self.failed and isinstance(err, OSError):
            self.failed = True
            sys.stderr.write(f"train.log not written: {atomic.explain(self.baseFilename, err)}\n")
        elif not isinstance(err, OSError):
            super().handleError(record)


def global_batch_size(train: TrainConfig, devices: int) -> int:
    """Images per update over all devices: train.batch_size is per device or global (train.batch_per)."""
    return train.batch_size * devices if train.batch_per == "device" else train.batch_size


def create_kvstore(recipe: Recipe):
    """A kvstore object for distributed training (it tells rank and worker count), else its name."""
    return distributed.create_kvstore(recipe.train.kvstore)


def build_setup(recipe: Recipe, ctxs: list, run_dir: Path, kv) -> Setup:
    """Data, net (initialised on every context, hybridized) and trainer with its kvstore."""
    train = recipe.train
    num_workers, rank = (kv.num_workers, kv.rank) if train.kvstore in DIST else (1, 0)
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


def write_status(run_dir: Path, state: checkpoint.TrainState, recipe: Recipe, status: str,
                 run_id: str | None, in_epoch: dict | None = None) -> None:
    """run_dir/status.json for tools/status.py: written atomically, read without locks.

    `in_epoch` (batch, batches, step, train_loss, img_per_s, eta_epoch_s, eta_s) comes every
    train.log_every batches from InEpochReport; without it the figures are the last epoch's.
    """
    last = state.history[-1] if state.history else {}
    done = len(state.history)
    info = {"status": status, "epoch": state.epoch, "epochs": recipe.train.epochs,
            "val_top1": last.get("val/top1"), "img_per_s": last.get("speed/img_per_s"),
            "eta_s": (recipe.train.epochs - state.epoch) * state.elapsed_s / done if done else None,
            "run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(), "updated": time.time(),
            **(in_epoch or {})}
    try:
        atomic.write_text(run_dir / "status.json", json.dumps(info, indent=1))
    except OSError as err:          # a full disk: the run stops on its checkpoint, not on the status file
        if not write_status.failed:
            log.error("status not updated: %s", atomic.explain(run_dir / "status.json", err))
        write_status.failed = True


write_status.failed = False        # said once: it is retried every log_every batches


def start_tracking(recipe: Recipe, state: checkpoint.TrainState, ctxs: list, argv: list[str]) -> Tracker:
    """A new MLflow run, or the checkpoint's run continued with any missing epochs re-logged."""
    if not recipe.tracking.enabled:
        return Tracker.disabled()
    if state.run_id:
        tracker = Tracker.resume(state.run_id)
        logged = tracker.logged_steps("val/top1")
        for entry in state.history:           # epochs checkpointed but not yet in MLflow (killed in between)
            if entry["epoch"] not in logged:
                tracker.log_metrics({k: v for k, v in entry.items() if k != "epoch"}, step=entry["epoch"])
        tracker.set_tags({f"resumed.{int(time.time())}": " ".join(argv)})
    else:
        tracker = start_new_run(recipe, ctxs, argv)
    if recipe.tracking.system_metrics:
        tracker.start_system_metrics(recipe.tracking.system_metrics_every_s, resumed=bool(state.run_id))
    return tracker


def start_new_run(recipe: Recipe, ctxs: list, argv: list[str], tags: dict[str, str] | None = None) -> Tracker:
    """A new MLflow run named "<recipe> <date> <4 hex>", tagged and described by its command, params logged."""
    name = f"{recipe.name} {datetime.now():%Y-%m-%d %H:%M} {os.urandom(2).hex()}"
    tracker = Tracker.start(recipe.tracking.experiment or recipe.name, name,
                            tags={**environment_tags(ctxs, argv), "recipe": recipe.name, **(tags or {})},
                            description=f"`{' '.join(argv)}` on {platform.node()}")
    tracker.log_params(recipe.flat())
    return tracker


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
    kv = create_kvstore(recipe)
    is_logger = recipe.train.kvstore not in DIST or kv.rank == 0
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
    if recipe.train.kvstore in DIST:       # rank 0's weights and position on every worker, lr schedule on the servers
        distributed.prepare_workers(kv, setup, state)
    if state.epoch >= recipe.train.epochs:
        again, extend = (("resume='fresh'", "overrides={'train.epochs': N}") if interactive
                         else ("--fresh", "--set train.epochs=N"))
        print(f"{run_dir} already holds the finished run ({state.epoch} epochs). "
              f"Use {again} to train again, or {extend} to extend it.")
        return 0
    if not setup.is_logger:
        return _run_loop(setup, state, Tracker.disabled(), argv, interactive)
    atomic.write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
    tracker = start_tracking(recipe, state, ctxs, argv)
    state.run_id = tracker.run_id or state.run_id     # a store that is down must not orphan the run id
    atomic.write_text(run_dir / "run.json", json.dumps({"run_id": tracker.run_id, "experiment_id": tracker.experiment_id,
                                                        "tracking_uri": tracking_uri()}, indent=1))
    tracker.log_artifact(run_dir / "recipe.yaml")
    tracker.log_datasets(lambda: describe_datasets(recipe, setup.train_iter.num_samples, setup.val_iter.num_samples))
    log.info("run %s: %s on %s, global batch %d, lr %.4g, output %s", tracker.run_id or "(untracked)",
             recipe.name, ",".join(map(str, ctxs)), setup.global_batch, setup.base_lr, run_dir)
    return _run_loop(setup, state, tracker, argv, interactive)


def _run_loop(setup: Setup, state: checkpoint.TrainState, tracker: Tracker, argv: list[str],
              interactive: bool = False) -> int:
    # rank 0 decides when a job stops
    stop = StopRequest(interactive) if setup.is_logger else distributed.FollowerStop()
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

    def on_epoch_end(state: checkpoint.TrainState) -> None:
        write_status(run_dir, state, recipe, "running", tracker.run_id)
        history = [dict(entry) for entry in state.history]
        tracker.run_later(lambda: plot_curves(history, run_dir / "curves.png", recipe.name))
        tracker.log_artifact(run_dir / "curves.png")

    def write_in_epoch(figures: dict) -> None:
        write_status(run_dir, state, recipe, "running", tracker.run_id, figures)

    report = InEpochReport(tracker, write_in_epoch, recipe.train.epochs, setup.global_batch // setup.num_workers,
                           setup.num_workers, logged_until=tracker.last_step("iter/loss") if state.run_id else None)
    if setup.is_logger:
        write_status(run_dir, state, recipe, "running", tracker.run_id)
    try:
        outcome = fit(setup, state, tracker, stop, on_epoch_end, report)
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
        log.info("final weights sha256 %s", distributed.weights_digest(setup.net))
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
                  f"Open the UI with:\n  {ui_command()}\nthen browse http://127.0.0.1:5000/#/experiments/"
                  f"{tracker.experiment_id}/runs/{tracker.run_id}")
    return 0


def export_final(setup: Setup, tracker: Tracker) -> None:
    """Final weights as symbol + params (and ONNX where supported), logged as artifacts."""
    from ..export import export_model
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
    for handler in logging.getLogger().handlers:
        handler.flush()
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
