"""Running a sweep (research/sweeps/spec.py): its folder locked, its parent MLflow run opened (or continued),
the trials that are not done started as tools/train.py subprocesses on free device slots, their outcomes
kept in sweep.json, then the summary. A stop signal reaches every trial (each checkpoints); a kill -9 of the
sweep sends them SIGTERM (the kernel's parent-death signal): the same command again continues all of it."""
from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import load_recipe
from ..detached.launch import Launch, check_session_free, require_tmux, session_name, start_session
from ..errors import ExitCode
from ..paths import TOOLS
from ..tracking import Tracker
from ..tracking.names import label
from ..tracking.sweeps import child_tags, continue_parent, start_parent
from ..training.run_dir import RunDirBusy, RunDirLock, read_run_json, read_status, set_aside, write_status
from ..training.signals import StopSignals
from . import summary
from .spec import (Slot, SweepSpec, Trial, check_same_sweep, default_sweep_dir, device_slots, make_trials,
                   outcome, read_state, stamp, trial_command, trial_env, write_state)

STATUS_EVERY_S = 30.0          # the sweep's status.json between trial events (tools/status.py: alive)
ORPHAN_WAIT_S = 300.0          # a trial of a killed sweep may still be writing its checkpoint: wait this long


@dataclass
class SweepResult:
    """What a sweep left: its folder, its parent MLflow run, each trial's row (summary.summary_rows) and
    the best one; `exit_code` 0 when it ran to its end, 128+N when stopped by signal N."""
    sweep_dir: Path
    parent_run_id: str | None
    experiment_id: str | None
    rows: list[dict]
    best: dict | None
    exit_code: int


class SweepStop(StopSignals):
    """SIGINT, SIGTERM, SIGHUP: the first stops the sweep (every trial sent SIGTERM: it checkpoints); a
    second SIGINT ends the trials at once (SIGINT again, which a trainer takes as 'exit now')."""

    def __init__(self):
        super().__init__()
        self.hard = False

    def _handle(self, signum: int, frame) -> None:
        if not self._first(signum) and signum == signal.SIGINT:
            self.hard = True


def run_sweep(spec: SweepSpec, output: str | Path | None = None, gpus: str | None = None, gpus_per_trial: int = 1,
              parallel: int | None = None, fresh: bool = False, argv: list[str] = ()) -> SweepResult:
    """Run (or continue) the sweep `spec` in `output` (default runs/<recipe>-sweep-<keys>/).

    Raises:
        SweepError, RecipeError: a bad option or a trial's recipe (nothing started); RunDirBusy: another process
            runs this sweep.
    """
    trials = make_trials(spec)
    slots = device_slots(gpus, gpus_per_trial, parallel)
    sweep_dir = Path(output) if output else default_sweep_dir(spec)
    for name in ("mlflow", "alembic"):           # creating a store: a dozen INFO lines
        logging.getLogger(name).setLevel(logging.WARNING)
    lock = RunDirLock(sweep_dir).acquire()
    try:
        if fresh:
            set_aside(sweep_dir)
        state = read_state(sweep_dir)
        check_same_sweep(sweep_dir, state, spec)
        return Sweeper(spec, trials, slots, sweep_dir, state, list(argv)).run()
    finally:
        lock.release()


def launch_sweep(spec: SweepSpec, argv: list[str], output: str | Path | None = None, fresh: bool = False,
                 name: str | None = None, socket: str | None = None) -> Launch:
    """tools/sweep.py `argv` (without --detach) in a new detached tmux session, as tools/launch.py starts a trainer:
    the same checks first (the trials' recipes, the session name, the folder not in use), --fresh done here.

    Raises:
        UserError: as run_sweep, or a live session of that name.
    """
    require_tmux()
    make_trials(spec)
    sweep_dir = (Path(output) if output else default_sweep_dir(spec)).resolve()
    name = session_name(name or sweep_dir.name)
    check_session_free(name, socket)
    RunDirLock(sweep_dir).acquire().release()            # RunDirBusy: a sweep process runs it
    if fresh:
        set_aside(sweep_dir)
    check_same_sweep(sweep_dir, read_state(sweep_dir), spec)
    args = [a for a in argv if a != "--fresh"] + ([] if output else ["--output", str(sweep_dir)])
    return start_session(name, sweep_dir, [sys.executable, str(TOOLS / "sweep.py"), *args], socket)


class Sweeper:
    """One run of a sweep: the loop that keeps every slot busy until no trial is left (or a stop signal)."""

    def __init__(self, spec: SweepSpec, trials: list[Trial], slots: list[Slot], sweep_dir: Path, state: dict,
                 argv: list[str]):
        self.spec, self.trials, self.slots, self.sweep_dir, self.argv = spec, trials, slots, sweep_dir, argv
        self.state = {"spec": spec.to_dict(), "trials": {}, **state}
        for trial in trials:           # a folder named before (a sweep begun by an earlier version) is kept
            known = self.state["trials"].get(trial.name, {}).get("folder")
            if known and known != trial.folder and (sweep_dir / known).is_dir():
                trial.folder = known
        self.recipe = load_recipe(spec.recipe, spec.overrides)
        self.parent = Tracker.disabled()
        self.stop = SweepStop()
        self.running: dict[int, tuple[Trial, subprocess.Popen]] = {}

    def run(self) -> SweepResult:
        self.parent = self._open_parent()
        todo = [trial for trial in self.trials if self._needs_training(trial)]
        finished = sum(self.state["trials"].get(t.name, {}).get("state") == "finished" for t in self.trials)
        kept = len(self.trials) - len(todo) - finished
        self.say(f"sweep of {len(self.trials)} trials in {self.sweep_dir}: {finished} finished, "
                 + (f"{kept} failed (stopped by the guard: not retried), " if kept else "")
                 + f"{len(todo)} to train, {len(self.slots)} at a time "
                 f"({', '.join(self._where(s) for s in self.slots)})")
        for trial in todo:
            if read_status(self.run_dir(trial)).get("status") is None:
                self.run_dir(trial).mkdir(parents=True, exist_ok=True)
                write_status(self.run_dir(trial), "waiting", None)
        self.stop.install()
        try:
            self._loop(todo)
        finally:
            self.stop.restore()
        return self._finish()

    # -- the loop -------------------------------------------------------------------------------------
    def _loop(self, todo: list[Trial]) -> None:
        forwarded, last_status = None, 0.0
        while todo or self.running:
            if self.stop.signal_name and forwarded != ("SIGINT" if self.stop.hard else "SIGTERM"):
                forwarded = "SIGINT" if self.stop.hard else "SIGTERM"
                self.say(f"{self.stop.signal_name}: stopping; {forwarded} to the {len(self.running)} running "
                         f"trial(s)" + (" (they checkpoint first; Ctrl-C again ends them at once)"
                                        if not self.stop.hard else ""))
                for _, proc in self.running.values():
                    proc.send_signal(getattr(signal, forwarded))
                todo.clear()
            for index, slot in enumerate(self.slots):
                if index not in self.running and todo and not self.stop.signal_name:
                    trial = todo.pop(0)
                    if self._wait_until_free(trial):
                        self.running[index] = (trial, self._start(trial, slot))
            for index, (trial, proc) in list(self.running.items()):
                if proc.poll() is not None:
                    del self.running[index]
                    self._ended(trial, proc.returncode)
            if time.monotonic() - last_status > STATUS_EVERY_S:
                self._write_status("running")
                last_status = time.monotonic()
            time.sleep(0.2)

    def _needs_training(self, trial: Trial) -> bool:
        """Not if its run finished, nor if the guard stopped it (exit 3: the same recipe and seed would fail the
        same way; delete its folder to train it again)."""
        status = read_status(self.run_dir(trial)).get("status")
        saved = self.state["trials"].get(trial.name, {})
        if status == "finished":
            self._record(trial, state="finished", exit_code=0, reason="")
            return False
        return not (status == "failed" and saved.get("exit_code") == ExitCode.UNHEALTHY)

    def _wait_until_free(self, trial: Trial) -> bool:
        """Wait while another process holds the trial's folder (its trainer from a sweep killed just before,
        checkpointing on its SIGTERM); False if it is still held after ORPHAN_WAIT_S or the sweep is stopping."""
        lock, deadline, said = RunDirLock(self.run_dir(trial)), time.monotonic() + ORPHAN_WAIT_S, False
        while True:
            try:
                lock.acquire().release()
                return True
            except RunDirBusy as err:
                if time.monotonic() > deadline or self.stop.signal_name:
                    self._record(trial, state="failed", exit_code=ExitCode.USER_ERROR, reason=str(err))
                    return False
                if not said:
                    self.say(f"{trial.name}: waiting for the process still holding its folder ({err})")
                    said = True
                time.sleep(1)

    def _start(self, trial: Trial, slot: Slot) -> subprocess.Popen:
        run_dir = self.run_dir(trial)
        run_dir.mkdir(parents=True, exist_ok=True)
        command = trial_command(self.spec, trial, run_dir, slot)
        with open(run_dir / "console.log", "a") as log:
            log.write(f"[sweep] {stamp()} {shlex.join(command[4:])}\n")
            log.flush()
            proc = subprocess.Popen(command, env=trial_env(slot, child_tags(self.parent, trial.name, self.sweep_dir)),
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)      # the terminal's Ctrl-C reaches the sweep alone
        try:
            os.sched_setaffinity(proc.pid, slot.cores)             # before it starts MXNet's threads
        except OSError:
            pass
        self._record(trial, state="running", exit_code=None, reason="", pid=proc.pid)
        self.say(f"{trial.name}: started on {self._where(slot)} (pid {proc.pid}), {run_dir}")
        return proc

    def _ended(self, trial: Trial, code: int) -> None:
        state, reason = outcome(code, self.run_dir(trial) / "console.log")
        self._record(trial, state=state, exit_code=code, reason=reason)
        figure = summary.best_of(summary.history(self.parent, self.state["trials"][trial.name],
                                                             self.spec.metric), self.spec.goal)
        value = f", best {self.spec.metric} {figure[1]:.4f} at epoch {figure[0]}" if figure else ""
        self.say(f"{trial.name}: {state}{value}" + (f" ({reason})" if reason else ""))
        self._write_status("running")

    # -- records --------------------------------------------------------------------------------------
    def run_dir(self, trial: Trial) -> Path:
        return self.sweep_dir / trial.folder

    def _record(self, trial: Trial, **fields) -> None:
        entry = self.state["trials"].setdefault(trial.name, {})
        entry.update(folder=trial.folder, values=trial.values, **fields)
        entry["run_id"] = read_run_json(self.run_dir(trial)).get("run_id") or entry.get("run_id")
        write_state(self.sweep_dir, self.state)

    def _open_parent(self) -> Tracker:
        """The parent run sweep.json names (continued: a sweep killed with -9 left it RUNNING), else a new one; its
        id is in sweep.json before any trial starts."""
        if not self.recipe.tracking.enabled:
            return Tracker.disabled()
        known = self.state.get("parent_run_id")
        parent = continue_parent(known, self.argv) if known else None
        if parent is None or parent.not_found:
            parent = start_parent(self.recipe.tracking.experiment or self.recipe.name, self.name(),
                                  self.spec.params(), self.argv)
        parent.set_tags({"sweep.dir": str(self.sweep_dir.resolve()), "sweep.trials": str(len(self.trials)),
                         "sweep.slots": "; ".join(self._where(s) for s in self.slots)})
        self.state.update(parent_run_id=parent.run_id, experiment_id=parent.experiment_id)
        write_state(self.sweep_dir, self.state)
        return parent

    def name(self) -> str:
        """'sweep lr × momentum (epochs=2)': the swept keys, then what every trial sets."""
        keys = " × ".join(key.rsplit(".", 1)[-1] for key in self.spec.keys)
        kind = f"random {self.spec.random}" if self.spec.random else "sweep"
        common = label(dict(a.split("=", 1) for a in self.spec.overrides))
        return f"{kind} {keys}" + (f" ({common})" if common else "")

    def _write_status(self, status: str) -> None:
        trials = self.state["trials"]
        counts = {word: sum(entry.get("state") == word for entry in trials.values())
                  for word in ("finished", "failed", "running")}
        write_status(self.sweep_dir, status, self.parent.run_id, kind="sweep", trials=len(self.trials),
                     trials_done=counts["finished"] + counts["failed"], **{f"trials_{k}": v for k, v in counts.items()})

    def _where(self, slot: Slot) -> str:
        cores = f"{len(slot.cores)} core{'s' * (len(slot.cores) > 1)}"
        return f"GPU {slot.gpus} + {cores}" if slot.gpus is not None else cores

    def say(self, line: str) -> None:
        """A line on the console and in SWEEP_DIR/sweep.log."""
        text = f"[sweep] {stamp()} {line}"
        try:
            print(text, flush=True)
        except OSError:                  # the terminal is gone (SIGHUP): the log still has it
            pass
        with open(self.sweep_dir / "sweep.log", "a") as log:
            log.write(text + "\n")

    # -- the end --------------------------------------------------------------------------------------
    def _finish(self) -> SweepResult:
        rows = summary.summary_rows(self.spec, self.trials, self.state["trials"], self.parent, self.sweep_dir)
        best = summary.best_row(rows, self.spec.goal)
        stopped = self.stop.signal_name is not None
        summary.publish(self.spec, rows, best, self.parent, self.sweep_dir, final=not stopped)
        self._write_status("killed" if stopped else "finished")
        self.parent.end("KILLED" if stopped else "FINISHED")
        print(summary.format_summary(self.spec, rows, best, self.parent), flush=True)
        if stopped:
            self.say(f"stopped by {self.stop.signal_name}; run the same command again to continue the sweep")
        return SweepResult(self.sweep_dir, self.parent.run_id, self.parent.experiment_id, rows, best,
                           self.stop.exit_code)
