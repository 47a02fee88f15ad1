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
from ..metrics import IMG_PER_S, VAL_TOP1
from ..rundir.files import CHECKPOINTS, RECIPE, RUN_JSON, TRACEBACK, TRAIN_LOG
from ..rundir.lock import RunDirLock, remove_leftovers, set_aside
from ..rundir.run_json import read_run_json, write_run_json
from ..rundir.status import Status, write_status
from ..tracking import Tracker, resume_run, start_run
from . import checkpoint
from .health import DeadHead, Unhealthy
from .logs import add_file_log, flush_logs, remove_file_log, setup_logging
from .signals import on_stop_signal_even_if_blocked

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


class Lifecycle:
    """The run directory, the MLflow run and the exit status of one job, from start to settled.

    `rank0` False (a distributed worker other than rank 0): no lock, no files, no MLflow run; only
    the exit status. `interactive` (research.train in a notebook): a failure is raised after the
    run is marked, instead of becoming an exit status.
    """

    def __init__(self, run_dir: Path, recipe: Recipe, argv: list[str], *, fresh: bool = False, rank0: bool = True,
                 interactive: bool = False):
        self.run_dir, self.recipe, self.argv = Path(run_dir), recipe, argv
        self.fresh, self.rank0, self.interactive = fresh, rank0, interactive
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
        if self.rank0:
            self._lock.acquire()                 # one owner per run directory
            if self.fresh:
                set_aside(self.run_dir)
            remove_leftovers(self.run_dir)       # under the lock: no live writer owns them
        add_file_log(self.run_dir, self.rank0)
        return self

    def start_tracking(self, ctxs: list, resume_id: str | None = None, history: list[dict] = (),
                       tags: dict[str, str] | None = None) -> Tracker:
        """The directory's MLflow run: `resume_id` (a checkpoint's), else the one run.json names (a run killed
        before its first checkpoint restarts in it), resumed with the epochs of `history` it lacks; else a
        new run. Writes run.json and the recipe copy (also an artifact)."""
        if not self.rank0:
            return self.tracker
        atomic.write_text(self.run_dir / RECIPE, dump_recipe(self.recipe))
        if self.recipe.tracking.enabled:
            run_id = resume_id or read_run_json(self.run_dir).run_id
            tracker = resume_run(run_id, list(history), self.argv) if run_id else None
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
        if not self.rank0:
            return
        self.started = True
        own = status_figures(self.state, self.recipe.train.epochs) if self.state is not None else {}
        write_status(self.run_dir, Status(status, run_id=self.tracker.run_id, **{**own, **self.figures, **figures}))

    def watch_for_blocked_stop(self) -> None:
        """Several workers: mark the run KILLED from a thread at the first stop signal, in case a dead peer
        keeps the main thread in C++ until the launcher's SIGKILL (it then never gets to `stopped`)."""
        if self.rank0:
            self._end_watch = on_stop_signal_even_if_blocked(self._mark_killed)

    # -- end --------------------------------------------------------------------------------
    def finish(self) -> None:
        """The job is done: FINISHED, status.json finished, exit status 0."""
        self._settle("FINISHED", "finished")

    def stopped(self, signal_name: str, exit_code: int) -> None:
        """Stopped by a signal after its checkpoint: KILLED, status.json killed, exit status 128+N."""
        self.exit_code = exit_code
        self._settle("KILLED", "killed")

    def pruned(self, verdict) -> None:
        """A sweep's trial its pruner stopped after a checkpoint (research.study.trial.Pruned): FINISHED in
        MLflow (it did what its sweep asked; not FAILED) with the tags sweep.pruned_at_epoch and
        sweep.pruned_against, status.json pruned, exit status PRUNED."""
        self.tracker.set_tags({"sweep.pruned_at_epoch": str(verdict.epoch), "sweep.pruned_against": verdict.against[:5000]})
        self.figures["pruned"] = f"at epoch {verdict.epoch}: {verdict.against}"
        self.exit_code = ExitCode.PRUNED
        self._settle("FINISHED", "pruned")

    def leave_as_is(self) -> None:
        """Nothing was done (the run had finished already): the directory and MLflow run stay as they were."""
        self._settled = True

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
        elif not isinstance(err, UserError) and self.rank0 and self.started:
            try:
                atomic.write_text(self.run_dir / TRACEBACK, traceback.format_exc())
                self.tracker.log_artifact(self.run_dir / TRACEBACK)
            except OSError:
                pass                   # the traceback still reaches the console
        self._settle("FAILED", "failed")
        if code is None or self.interactive:
            return False
        self.exit_code = code
        return True

    def _settle(self, mlflow_status: str, word: str) -> None:
        self._settled = True
        if not self.rank0 or not self.started:
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
        RESEARCH_RESUME_COMMAND), the same tools/train.py command (--resume, not --fresh), or the Python call."""
        if os.environ.get(RESUME_COMMAND_ENV):
            return os.environ[RESUME_COMMAND_ENV]
        if not self.argv[0].endswith(".py"):                 # research.train(...) from Python
            return f"{self.argv[0]} again (resume='auto' continues from the checkpoint)"
        args = [a for a in self.argv if a not in ("--fresh", "--resume")]
        return " ".join(["python"] + args + ["--resume"])
