"""One lifecycle for every job that owns a run directory (a training run, the transfer job).

    with Lifecycle(run_dir, recipe, argv) as run:      # lock, leftovers of killed writes removed, train.log
        tracker = run.start_tracking(ctxs)               # the MLflow run run.json names, or a new one; run.json
        run.write_status("running", ...)                 # status.json for tools/status.py
        ...                                              # the job
        run.finish()                                     # or run.stopped(stop): FINISHED / KILLED, status.json
    return run.exit_code

However the block ends, the MLflow run, status.json and the exit status agree: FAILURES maps what
was raised to the exit status (research.errors.ExitCode), the traceback of an unexpected error is
kept in RUN_DIR/traceback.txt, and the lock and the file log are released (a notebook goes on).
"""
from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path

from .. import atomic
from ..cli import RESUME_COMMAND_ENV
from ..config import Recipe, dump_recipe
from ..errors import ExitCode, UserError
from ..metrics import IMG_PER_S, VAL_TOP1, VAL_TOP5
from ..rundir.files import CHECKPOINTS, MODEL, RECIPE, RUN_JSON, TRACEBACK, TRAIN_LOG
from ..rundir.lock import RunDirLock, remove_leftovers, set_aside
from ..rundir.run_json import read_run_json, write_run_json
from ..rundir.status import Status, read_status, write_status
from ..tracking import Tracker, record_changes, resume_run, run_url, serve_hint, start_run
from . import checkpoint
from .health import DeadHead, Unhealthy
from .logs import add_file_log, flush_logs, remove_file_log, setup_logging
from .modes import Modes
from .signals import FollowerStop, StopRequest, on_stop_signal_even_if_blocked

log = logging.getLogger("research.training")

# What a job raised -> its exit status; the MLflow run and status.json say "failed". Anything else
# raised is re-raised after the same marking (a UserError: one line; any other: a traceback).
FAILURES: dict[type[BaseException], ExitCode] = {
    Unhealthy: ExitCode.UNHEALTHY,                 # NaN loss, dead or stalled head (training.health)
    checkpoint.CheckpointError: ExitCode.SAVE_FAILED,   # full disk, no permission
}


def status_figures(state: checkpoint.TrainState, epochs: int) -> dict:
    """status.json's figures of a training run at the last epoch `state` counts."""
    last = state.history[-1] if state.history else {}
    return {"epoch": state.epoch, "epochs": epochs, "val_top1": last.get(VAL_TOP1),
            "img_per_s": last.get(IMG_PER_S)}


class _Silent:
    """A follower's `say`: rank 0 alone tells the user how the run goes."""

    def info(self, *args, **kwargs) -> None:
        pass

    warning = info


def lifecycle_for(run_dir: Path, recipe: Recipe, argv: list[str], modes: Modes) -> Lifecycle:
    """Rank 0's Lifecycle, or the stand-in of a distributed worker other than rank 0 (FollowerLifecycle)."""
    return (Lifecycle if modes.rank0 else FollowerLifecycle)(run_dir, recipe, argv, modes)


class Lifecycle:
    """The run directory, the MLflow run and the exit status of one job, from start to settled; what rank 0 says
    at a run's start and end (`say`), and its stop request. `modes` (decided once): "fresh" sets the old run
    aside; interactive (research.train in a notebook): a failure is raised after the run is marked, instead of
    becoming an exit status, and the messages name the Python call; several workers: the stop is also watched
    from a thread.
    """
    say = log                                # what rank 0 alone tells the user; a follower's says nothing

    def __init__(self, run_dir: Path, recipe: Recipe, argv: list[str], modes: Modes = Modes()):
        self.run_dir, self.recipe, self.argv, self.modes = Path(run_dir), recipe, argv, modes
        self.tracker = Tracker.disabled()
        self.state: checkpoint.TrainState | None = None     # a training run's position, for status.json
        self.figures: dict = {}              # a job's own status.json figures (the transfer job's accuracy)
        self.exit_code = ExitCode.OK
        self.started = False                 # status.json says running: from now on the run is settled at the end
        self._settled = False
        self._lock = RunDirLock(self.run_dir)
        self._end_watch = None

    # -- start ------------------------------------------------------------------------------
    def __enter__(self) -> Lifecycle:
        setup_logging()
        self._lock.acquire()                     # one owner per run directory
        if self.modes.resume == "fresh":
            set_aside(self.run_dir)
        remove_leftovers(self.run_dir)           # under the lock: no live writer owns them
        add_file_log(self.run_dir)
        return self

    def start_tracking(self, ctxs: list, resume_id: str | None = None, history: list[dict] = (),
                       tags: dict[str, str] | None = None, changes: dict | None = None) -> Tracker:
        """The directory's MLflow run: `resume_id` (a checkpoint's), else the one run.json names (a run killed
        before its first checkpoint restarts in it), resumed with the epochs of `history` it lacks and the
        recipe `changes` it continues with recorded; else a new run. Writes run.json and the recipe copy (also
        an artifact)."""
        atomic.write_text(self.run_dir / RECIPE, dump_recipe(self.recipe))
        if self.recipe.tracking.enabled:
            run_id = resume_id or read_run_json(self.run_dir).run_id
            tracker = resume_run(run_id, list(history), self.argv) if run_id else None
            if tracker is not None and tracker.enabled:
                record_changes(tracker, changes or {}, len(history), self.recipe, self.argv)
            if tracker is None or tracker.not_found:
                if run_id:
                    log.warning("MLflow run %s (named by %s) is not in this store: starting a new run", run_id,
                                self.run_dir / RUN_JSON)
                tracker = start_run(self.recipe, ctxs, self.argv, tags)
            self.tracker = tracker
            self.tracker.set_tags({"run_dir": str(self.run_dir.resolve())})    # where it is now (a column of compare)
            self._note_went_back(len(history))
        write_run_json(self.run_dir, self.tracker.run_id, self.tracker.experiment_id)
        self.tracker.log_artifact(self.run_dir / RECIPE)
        return self.tracker

    def _note_went_back(self, epochs: int) -> None:
        """A resume from a checkpoint older than MLflow's record (the newer ones damaged or gone): the epochs
        MLflow has are trained again but not logged twice (loop.fit), and the MLflow tag `resume.went_back`
        and status.json's `went_back` say from which epoch to which, and why."""
        logged = self.tracker.last_step(VAL_TOP1) or 0
        if logged <= epochs:
            return
        step = self.state.step if self.state is not None else 0
        why = checkpoint.unusable_after(self.run_dir / CHECKPOINTS, step)
        text = f"from epoch {logged} back to epoch {epochs}: {why}"
        log.warning("MLflow has this run's epochs up to %d, but the newest usable checkpoint is at epoch %d (%s). "
                    "Epochs %d-%d are trained again; MLflow keeps the figures it has for them.",
                    logged, epochs, why, epochs + 1, logged)
        self.tracker.set_tags({"resume.went_back": text[:5000]})
        self.figures["went_back"] = text

    def write_status(self, status: str, **figures) -> None:
        """status.json with the run's figures (its state's, the job's own, then these); `started` from now."""
        self.started = True
        own = status_figures(self.state, self.recipe.train.epochs) if self.state is not None else {}
        write_status(self.run_dir, Status(status, run_id=self.tracker.run_id, **{**own, **self.figures, **figures}))

    def stop_request(self) -> StopRequest:
        """Stop signals taken over until `restore`: the loop reads `requested` after every batch. With several
        workers the run is also marked KILLED from a thread at the first one, in case a dead peer keeps the main
        thread in C++ until the launcher's SIGKILL (it then never gets to `stopped`)."""
        stop = StopRequest(self.modes.interactive)
        stop.install()
        if self.modes.num_workers > 1:
            self._end_watch = on_stop_signal_even_if_blocked(self._mark_killed)
        return stop

    def already_finished(self, epochs: int, changes: dict | None = None) -> None:
        """The run directory holds this recipe's finished run: say how to train again or longer, and that the
        values this command changed (--resume) were not applied; change nothing."""
        again, extend = (("resume='fresh'", "overrides={'train.epochs': N}") if self.modes.interactive
                         else ("--fresh", "--set train.epochs=N"))
        unused = ", ".join(key for key in changes or {} if key != "train.epochs")
        print(f"{self.run_dir} already holds the finished run ({epochs} epochs). "
              f"Use {again} to train again, or {extend} to extend it." +
              (f" Nothing was trained, so {unused} was not applied." if unused else ""))
        self._settled = True

    # -- end --------------------------------------------------------------------------------
    def finish(self) -> None:
        """The job is done: FINISHED, status.json finished, exit status 0."""
        self._settle("FINISHED", "finished")

    def stopped(self, stop: StopRequest) -> None:
        """Stopped by a signal after its checkpoint: how to resume, then KILLED, status.json killed, exit 128+N."""
        self.say.warning("stopped by %s at epoch %d, step %d; checkpoint written. Resume with:\n  %s",
                         stop.signal_name, self.state.epoch, self.state.step, self.resume_command())
        self.exit_code = stop.exit_code
        self._settle("KILLED", "killed")

    def pruned(self, verdict) -> None:
        """A sweep's trial its pruner stopped after a checkpoint (research.study.trial.Pruned): FINISHED in
        MLflow (it did what its sweep asked; not FAILED) with the tags sweep.pruned_at_epoch and
        sweep.pruned_against, status.json pruned, exit status PRUNED."""
        self.tracker.set_tags({"sweep.pruned_at_epoch": str(verdict.epoch),
                               "sweep.pruned_against": verdict.against[:5000]})
        self.figures["pruned"] = f"at epoch {verdict.epoch}: {verdict.against}"
        self.exit_code = ExitCode.PRUNED
        self._settle("FINISHED", "pruned")

    def already_pruned(self) -> None:
        """The run directory holds a sweep's trial its pruner stopped: say how to train it on or start over; change
        nothing; exit status PRUNED."""
        again, fresh = ("resume='require'", "resume='fresh'") if self.modes.interactive else ("--resume", "--fresh")
        print(f"{self.run_dir} holds a sweep's trial its pruner stopped ({read_status(self.run_dir).pruned}). "
              f"Use {again} to train it on anyway, or {fresh} to start over.")
        self.exit_code = ExitCode.PRUNED
        self._settled = True
    def export_model(self, net) -> None:
        """The final weights as symbol + params (and ONNX where supported) in RUN_DIR/model, logged as artifacts and
        as the MLflow logged model. A failure is logged, not raised: the checkpoint has the weights."""
        from ..model.export import export_model
        model_dir = self.run_dir / MODEL
        try:
            export_model(net, model_dir, self.recipe)
            self.tracker.log_artifacts(model_dir, "model")
            self.tracker.log_model(model_dir, step=self.recipe.train.epochs)     # the UI's "Logged models"
        except Exception as err:  # noqa: BLE001 - the checkpoint has the weights; export is a convenience
            reason = atomic.explain(err.filename or model_dir, err) if isinstance(err, OSError) else str(err)
            log.error("model export failed (%s); %s", reason, self.newest_checkpoint().replace("last good", "final"))

    def summary(self) -> None:
        """The finished run's last figures, its folder and its MLflow run, printed."""
        last, tracker = self.state.history[-1], self.tracker
        print(f"\nval top-1 {last[VAL_TOP1]:.4f}, top-5 {last[VAL_TOP5]:.4f} after {self.state.epoch} epochs "
              f"({self.state.elapsed_s / 60:.1f} min). Run directory: {self.run_dir}")
        if tracker.enabled:
            print(f"MLflow run {tracker.run_id} in experiment '{self.recipe.tracking.experiment or self.recipe.name}'. "
                  f"Open the UI with:\n  {serve_hint()}\nthen browse {run_url(tracker.run_id, tracker.experiment_id)}")

    def __exit__(self, kind, err, tb) -> bool:
        try:
            if err is None:
                if not self._settled and self.started:
                    self.finish()
                return False
            return self._failed(err)
        finally:
            if self._end_watch is not None:
                self._end_watch()
            self._lock.release()
            remove_file_log()

    def _failed(self, err: BaseException) -> bool:
        """Mark the run for what was raised; True (swallowed, `exit_code` set) for a FAILURES entry outside a notebook."""
        if isinstance(err, KeyboardInterrupt):          # a second interrupt in a notebook: no checkpoint
            self._settle("KILLED", "killed")
            return False
        code = next((code for kind, code in FAILURES.items() if isinstance(err, kind)), None)
        if isinstance(err, checkpoint.CheckpointError):
            log.error("%s Stopped; %s. Once there is space, this resumes into the same MLflow run:\n  %s",
                      err, self.newest_checkpoint(), self.resume_command())
            saved = checkpoint.find_latest(self.run_dir / CHECKPOINTS)     # status.json claims no unsaved epoch
            self.state = saved[1]["state"] if saved else self.state
            self.tracker.set_tags({"checkpoint.error": str(err)[:500]})
        elif isinstance(err, Unhealthy):
            log.error("%s Stopped; %s", err, self._where_to_go_on(err))
            self.tracker.set_tags({"failure": str(err)[:500]})
        elif not isinstance(err, UserError) and self.started:
            try:
                atomic.write_text(self.run_dir / TRACEBACK, traceback.format_exc())
                self.tracker.log_artifact(self.run_dir / TRACEBACK)
            except OSError:
                pass                   # the traceback still reaches the console
        self._settle("FAILED", "failed")
        if code is None or self.modes.interactive:
            return False
        self.exit_code = code
        return True

    def _settle(self, mlflow_status: str, word: str) -> None:
        self._settled = True
        if not self.started:                         # a follower's never is; nor a job that failed before starting
            return
        flush_logs()
        self.tracker.log_artifact(self.run_dir / TRAIN_LOG)
        self.tracker.end(mlflow_status)
        self.write_status(word)                      # last: the run is settled

    def _mark_killed(self, signal_name: str) -> None:
        log.warning("%s: MLflow run marked KILLED now, in case a peer is dead and this process never gets back "
                    "to Python before the launcher ends it", signal_name)
        if self.tracker.enabled:
            try:
                self.tracker.client.set_terminated(self.tracker.run_id, "KILLED")
            except Exception as err:  # noqa: BLE001 - best effort, on a side thread
                log.warning("could not mark the MLflow run KILLED: %s", err)
        self.write_status("killed")

    # -- what the messages name -------------------------------------------------------------
    def newest_checkpoint(self) -> str:
        """'the last good checkpoint is PATH (epoch E, step S)', or that none was written yet."""
        latest = checkpoint.find_latest(self.run_dir / CHECKPOINTS)
        if latest is None:
            return "no checkpoint had been written yet"
        path, content = latest
        return f"the last good checkpoint is {path} (epoch {content['state'].epoch}, step {content['state'].step})"

    def _where_to_go_on(self, err: Unhealthy) -> str:
        """After the guard stopped the run: its good weights, and a resume only if there is a checkpoint."""
        folder = self.run_dir / CHECKPOINTS
        latest = checkpoint.find_latest(folder)
        if latest is None:
            return "no checkpoint had been written yet: make the change and run the command again (it starts afresh)."
        path, content = latest
        newest = f"the newest checkpoint is {path} (epoch {content['state'].epoch}, step {content['state'].step})"
        best = folder / checkpoint.BEST
        if isinstance(err, DeadHead) and best.exists() and self.state is not None:
            newest = (f"the best weights so far are in {best} (val top-1 {self.state.best_top1:.4f}, written before "
                      f"the head died) and {newest}")
        return (f"{newest}. After the change, the same command resumes from the newest checkpoint "
                f"({self.resume_command()}); --fresh starts over.")

    def resume_command(self) -> str:
        """How the user resumes this run: the command that started it (tools/launch.py's, which it passes as
        RESEARCH_RESUME_COMMAND; tools/launch_dist.py's with several workers), the same tools/train.py command
        (--resume, not --fresh), or the Python call."""
        if os.environ.get(RESUME_COMMAND_ENV):
            return os.environ[RESUME_COMMAND_ENV]
        if self.modes.num_workers > 1:
            return "rerun the same tools/launch_dist.py command"
        if self.modes.interactive:                           # research.train(...) from Python
            return f"{self.argv[0]} again (resume='auto' continues from the checkpoint)"
        args = [a for a in self.argv if a not in ("--fresh", "--resume")]
        return " ".join(["python"] + args + ["--resume"])


class FollowerLifecycle(Lifecycle):
    """The Lifecycle of a distributed worker other than rank 0: no lock, no files, no MLflow run, nothing said
    (rank 0 does it all); only the exit status, and a stop request that leaves the decision to rank 0."""
    say = _Silent()

    def __enter__(self) -> Lifecycle:
        setup_logging()
        add_file_log(None)
        return self

    def start_tracking(self, ctxs: list, resume_id: str | None = None, history: list[dict] = (),
                       tags: dict[str, str] | None = None, changes: dict | None = None) -> Tracker:
        return self.tracker                  # disabled

    def write_status(self, status: str, **figures) -> None:
        pass

    def stop_request(self) -> FollowerStop:
        stop = FollowerStop()
        stop.install()
        return stop

    def export_model(self, net) -> None:
        pass

    def summary(self) -> None:
        pass

