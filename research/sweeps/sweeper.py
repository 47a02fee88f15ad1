"""Running a sweep (research/sweeps/spec.py): its folder locked, its parent MLflow run opened (or continued), its
study opened (research/study/sweep_study.py), then trials asked of the study and started as tools/train.py
subprocesses on free device slots, each told to the study when it ends (finished with its best epoch's metric,
failed, pruned) and kept in sweep.json, then the summary. A stop signal reaches every trial (each
checkpoints); a kill -9 of the sweep sends them SIGTERM (the kernel's parent-death signal). The same command
again continues all of it: the trials the study still has running are resumed from their checkpoints, those it
was told about are never trained again."""
from __future__ import annotations

import logging
import os
import random
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
from ..rundir.console import console_log, size
from ..rundir.lock import RunDirBusy, RunDirLock, set_aside
from ..rundir.run_json import read_run_json
from ..rundir.status import Status, read_status, run_state, write_status
from ..study.pruners import default_warmup
from ..tables import figure as metric_figure
from ..study.store import Settings
from ..study.sweep_study import SweepStudy, TrialRecord
from ..tracking import Tracker
from ..tracking.names import label
from ..tracking.sweeps import child_tags, continue_parent, start_parent
from ..training.signals import StopSignals
from . import summary
from .spec import (Slot, SweepError, SweepSpec, Trial, check_same_sweep, checked_trial, default_sweep_dir,
                   device_slots, make_trials, outcome, read_state, stamp, trial_command, trial_env, write_state)

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


@dataclass(frozen=True)
class Budget:
    """When the sweep starts no new trial (0: no limit); the trials running then go on to their end."""
    max_epochs: int = 0          # epochs trained by all its trials together
    max_hours: float = 0.0       # hours its trials' processes ran, added up (two at once for an hour: 2)

    def text(self) -> str:
        parts = [f"{self.max_epochs} epochs" if self.max_epochs else "", f"{self.max_hours:g} h" if self.max_hours
                 else ""]
        return " or ".join(filter(None, parts)) or "none"


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
              parallel: int | None = None, fresh: bool = False, argv: list[str] = (),
              budget: Budget = Budget()) -> SweepResult:
    """Run (or continue) the sweep `spec` in `output` (default runs/<recipe>-sweep-<keys>/).

    Raises:
        SweepError, RecipeError: a bad option or a trial's recipe (nothing started); RunDirBusy: another process
            runs this sweep.
    """
    trials = make_trials(spec)
    slots = device_slots(gpus, gpus_per_trial, parallel)
    sweep_dir = Path(output) if output else default_sweep_dir(spec)
    if budget.max_epochs < 0 or budget.max_hours < 0:
        raise SweepError("--max-epochs and --max-hours: 0 (no limit) or more.")
    for name in ("mlflow", "alembic"):           # creating a store: a dozen INFO lines
        logging.getLogger(name).setLevel(logging.WARNING)
    lock = RunDirLock(sweep_dir).acquire()
    try:
        if fresh:
            set_aside(sweep_dir)
        state = read_state(sweep_dir)
        check_same_sweep(sweep_dir, state, spec)
        return Sweeper(spec, trials, slots, sweep_dir, state, list(argv), budget).run()
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
    """One run of a sweep: the loop that keeps every slot busy until the study has no trial left for it, the budget
    is spent, or a stop signal."""

    def __init__(self, spec: SweepSpec, trials: list[Trial], slots: list[Slot], sweep_dir: Path, state: dict,
                 argv: list[str], budget: Budget = Budget()):
        self.spec, self.slots, self.sweep_dir, self.argv, self.budget = spec, slots, sweep_dir, argv, budget
        self.state = {"spec": spec.to_dict(), "trials": {}, **state}
        self.planned = {trial.name: trial for trial in trials}      # the grid's or the random search's, by name
        for trial in trials:           # a folder named before (a sweep begun by an earlier version) is kept
            known = self.state["trials"].get(trial.name, {}).get("folder")
            if known and (sweep_dir / known).is_dir():
                trial.folder = known
        self.recipe = load_recipe(spec.recipe, spec.overrides)
        self.parent = Tracker.disabled()
        self.study: SweepStudy | None = None
        self.stop = SweepStop()
        self.running: dict[int, tuple[Trial, subprocess.Popen]] = {}
        self.resume: list[TrialRecord] = []
        self.clock: dict[str, tuple[float, float]] = {}     # trial -> (its start, the seconds it ran before)
        self.console_at: dict[str, int] = {}       # trial -> console.log's size when it started: its own output after

    def run(self) -> SweepResult:
        self.parent = self._open_parent()
        self.study = self._open_study()
        records = self.study.records()
        self.resume = [r for r in records if r.state == "running"]       # a sweep killed or stopped: resumed
        counts = {word: sum(r.state == word and "duplicate_of" not in r.attrs for r in records)
                  for word in ("finished", "pruned", "failed", "waiting")}
        start = counts.pop("waiting") if self.planned else max(self.spec.trials - sum(counts.values()) -
                                                               len(self.resume), 0)
        self.say(f"{self._what()} in {self.sweep_dir}: " + "".join(f"{n} {word}{' (not trained again)' * (word == 'failed')}, "
                                                                for word, n in counts.items() if n)
                 + f"{len(self.resume)} to resume, {start} to start, "
                 f"{len(self.slots)} at a time ({', '.join(self._where(s) for s in self.slots)})"
                 + (f"; budget {self.budget.text()}" if self.budget != Budget() else ""))
        for trial in self.planned.values():
            if run_state(self.run_dir(trial)) is None:
                self.run_dir(trial).mkdir(parents=True, exist_ok=True)
                write_status(self.run_dir(trial), Status("waiting"))
        self.stop.install()
        try:
            self._loop()
        finally:
            self.stop.restore()
        return self._finish()

    # -- the loop -------------------------------------------------------------------------------------
    def _loop(self) -> None:
        forwarded, last_status, exhausted = None, 0.0, False
        while self.running or not (exhausted or self.stop.signal_name):
            if self.stop.signal_name and forwarded != ("SIGINT" if self.stop.hard else "SIGTERM"):
                forwarded = "SIGINT" if self.stop.hard else "SIGTERM"
                self.say(f"{self.stop.signal_name}: stopping; {forwarded} to the {len(self.running)} running "
                         f"trial(s)" + (" (they checkpoint first; Ctrl-C again ends them at once)"
                                        if not self.stop.hard else ""))
                for _, proc in self.running.values():
                    proc.send_signal(getattr(signal, forwarded))
            for index, slot in enumerate(self.slots):
                if index not in self.running and not exhausted and not self.stop.signal_name:
                    trial = self._next()
                    exhausted = trial is None
                    if trial is not None and self._wait_until_free(trial):
                        self.running[index] = (trial, self._start(trial, slot))
            for index, (trial, proc) in list(self.running.items()):
                if proc.poll() is not None:
                    del self.running[index]
                    self._ended(trial, proc.returncode)
            if time.monotonic() - last_status > STATUS_EVERY_S:
                self._write_status("running")
                last_status = time.monotonic()
            time.sleep(0.2)

    def _next(self) -> Trial | None:
        """The next trial to train: one the study still has running (resumed), else a new one the study gives
        while the budget lasts; a trial whose folder says it is done is told to the study and skipped."""
        while True:
            if self.resume:
                record = self.resume.pop(0)
            elif self._spent():
                return None
            else:
                record = self.study.ask()
                if record is None:
                    return None
            trial = self._trial(record)
            if trial is not None and not self._done_before(trial):
                return trial

    def _trial(self, record: TrialRecord) -> Trial | None:
        """The sweep's Trial of a study record: its name, folder (sweep.json's, for a sweep begun with older
        names) and epochs. A recipe its values break is told failed (None)."""
        name = label(record.values)
        trial = self.planned.get(name)
        if trial is None:
            taken = {entry.get("folder") for entry in self.state["trials"].values()}
            try:
                trial = checked_trial(self.spec, record.values, taken)
            except SweepError as err:
                self.study.tell(record.number, "failed", reason=str(err))
                self.say(f"{name}: not trained: {err}")
                return None
        known = self.state["trials"].get(name, {}).get("folder")
        if known and (self.sweep_dir / known).is_dir():
            trial.folder = known
        trial.number = record.number
        return trial

    def _done_before(self, trial: Trial) -> bool:
        """A trial whose folder says it ended (its sweep killed before hearing of it, or a sweep begun before the
        study): told to the study, not trained again. Not a trial the guard stopped (exit 3): the same recipe and
        seed would fail the same way (delete its folder to train it again)."""
        state = run_state(self.run_dir(trial))
        saved = self.state["trials"].get(trial.name, {})
        if state == "finished":
            self._settle(trial, "finished", ExitCode.OK, "")
        elif state == "pruned":
            self._settle(trial, "pruned", ExitCode.PRUNED, "")
        elif state == "failed" and saved.get("exit_code") == ExitCode.UNHEALTHY:
            self._settle(trial, "failed", ExitCode.UNHEALTHY, saved.get("reason", ""))
        else:
            return False
        self.say(f"{trial.name}: {state} before (its folder says so), not trained again")
        return True

    def _spent(self) -> bool:
        """The budget is spent: no new trial starts."""
        if self.budget.max_epochs and self.study.epochs_spent() >= self.budget.max_epochs:
            return self._say_spent(f"{self.study.epochs_spent()} epochs trained, of --max-epochs "
                                   f"{self.budget.max_epochs}")
        hours = self._seconds() / 3600
        if self.budget.max_hours and hours >= self.budget.max_hours:
            return self._say_spent(f"{hours:.2f} trial hours, of --max-hours {self.budget.max_hours:g}")
        return False

    def _say_spent(self, what: str) -> bool:
        if not self.state.get("budget_spent"):
            self.say(f"budget spent ({what}): no new trial starts; those running go on to their end")
        self.state["budget_spent"] = what
        return True

    def _seconds(self) -> float:
        """The seconds the trials' processes ran, over every run of the sweep."""
        now = time.monotonic()
        return sum(entry.get("seconds", 0.0) if name not in self.clock else
                   self.clock[name][1] + now - self.clock[name][0] for name, entry in self.state["trials"].items())

    def _wait_until_free(self, trial: Trial) -> bool:
        """Wait while another process holds the trial's folder (its trainer from a sweep killed just before,
        checkpointing on its SIGTERM); False if it is still held after ORPHAN_WAIT_S or the sweep is stopping
        (the trial stays running in the study: the next run of the sweep resumes it)."""
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
        tags = child_tags(self.parent, trial.name, self.sweep_dir, trial.values)
        env = trial_env(slot, tags, self.study.url, trial.number)
        self.console_at[trial.name] = size(console_log(run_dir))      # its output from now on
        with open(console_log(run_dir), "a") as log:
            log.write(f"[sweep] {stamp()} {shlex.join(command[4:])}\n")
            log.flush()
            proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)      # the terminal's Ctrl-C reaches the sweep alone
        try:
            os.sched_setaffinity(proc.pid, slot.cores)             # before it starts MXNet's threads
        except OSError:
            pass
        self.clock[trial.name] = (time.monotonic(), self.state["trials"].get(trial.name, {}).get("seconds", 0.0))
        self._record(trial, state="running", exit_code=None, reason="", pid=proc.pid)
        self.say(f"{trial.name}: started on {self._where(slot)} (pid {proc.pid}), {run_dir}")
        return proc

    def _ended(self, trial: Trial, code: int) -> None:
        state, reason = outcome(code, console_log(self.run_dir(trial)), self.console_at.get(trial.name, 0))
        if state in ("finished", "pruned") or code == ExitCode.UNHEALTHY:
            self._settle(trial, state, code, reason)
        else:                                # stopped, or a failure a rerun may fix: running in the study, resumed
            self._record(trial, state=state, exit_code=code, reason=reason)     # by the next run of the sweep
        entry = self.state["trials"][trial.name]
        figure = summary.best_of(self._points(trial.name), self.spec.goal)
        value = f", best {self.spec.metric} {metric_figure(self.spec.metric, figure[1])} at epoch {figure[0]}" \
            if figure else ""
        self.say(f"{trial.name}: {entry['state']}{value}" + (f" ({entry['reason']})" if entry["reason"] else ""))
        self._write_status("running")

    def _settle(self, trial: Trial, state: str, code: int, reason: str) -> None:
        """The trial's verdict, told to the study (which never gives it again) and kept in sweep.json."""
        if state == "finished":
            best = summary.best_of(self._points(trial.name, trial.number), self.spec.goal)
            if best is None:
                state, reason = "failed", f"no {self.spec.metric} was reported: --metric must be a per-epoch metric"
            self.study.tell(trial.number, state, best[1] if best else None)
        elif state == "pruned":
            record = self.study.record(trial.number)
            reason = record.attrs.get("pruned_against") or getattr(read_status(self.run_dir(trial)), "pruned", "") or ""
            self.study.tell(trial.number, "pruned")       # the trainer told it already, unless it was killed
            self._record(trial, pruned_at_epoch=record.attrs.get("pruned_at_epoch"))
        else:
            self.study.tell(trial.number, "failed", reason=reason)
        self._record(trial, state=state, exit_code=code, reason=reason)

    # -- records --------------------------------------------------------------------------------------
    def run_dir(self, trial: Trial) -> Path:
        return self.sweep_dir / trial.folder

    def trials(self) -> list[Trial]:
        """Every trial of the sweep: the grid's or the random search's in their order, else those the study gave."""
        records = {label(r.values): r for r in self.study.records() if "duplicate_of" not in r.attrs}
        trials = list(self.planned.values())
        for name, record in records.items():
            entry = self.state["trials"].get(name, {})
            if name not in self.planned and entry:
                trials.append(Trial(record.values, name, entry.get("folder", ""), entry.get("epochs", 0)))
        for trial in trials:
            trial.number = records[trial.name].number if trial.name in records else None
        return trials

    def _points(self, name: str, number: int | None = None) -> list[tuple[int, float]]:
        """The trial's metric per epoch: as it reported it to the study, else (a trial trained before the sweep
        had a study) from its MLflow run."""
        number = self.state["trials"].get(name, {}).get("number") if number is None else number
        points = sorted(self.study.record(number).points.items()) if number is not None else []
        return points or summary.history(self.parent, self.state["trials"].get(name, {}), self.spec.metric)

    def _record(self, trial: Trial, **fields) -> None:
        entry = self.state["trials"].setdefault(trial.name, {})
        entry.update(folder=trial.folder, values=trial.values, number=trial.number, epochs=trial.epochs, **fields)
        entry["run_id"] = read_run_json(self.run_dir(trial)).run_id or entry.get("run_id")
        if trial.name in self.clock and fields.get("state") != "running":       # its process ended
            start, before = self.clock.pop(trial.name)
            entry["seconds"] = before + time.monotonic() - start
        write_state(self.sweep_dir, self.state)

    def _open_study(self) -> SweepStudy:
        """The study in the sweep's folder, created (under the folder's lock) with what the trials must know; the
        grid's or the random search's trials queued in their order, a pruned grid's in an order shuffled by the
        seed (as Optuna's GridSampler draws): the pruner judges each trial against those before it, and a grid
        written from small to large values would let every trial before the best one run to its end."""
        epochs = max([t.epochs for t in self.planned.values()] or [self.recipe.train.epochs])
        if "train.epochs" in self.spec.ranges:
            epochs = max(epochs, int(self.spec.ranges["train.epochs"].high))
        settings = Settings(self.spec.metric, self.spec.goal, self.spec.sampler, self.spec.pruner,
                            self.spec.warmup or default_warmup(epochs), epochs, self.spec.trials, self.spec.seed)
        space = {**self.spec.grid, **{key: (r.low, r.high, r.log) for key, r in self.spec.ranges.items()}}
        study = SweepStudy(self.sweep_dir, settings, space)
        order = [trial.values for trial in self.planned.values()]
        if self.spec.pruner != "none" and self.spec.sampler == "grid":
            random.Random(self.spec.seed).shuffle(order)
        study.enqueue(order)
        return study

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
        parent.set_tags({"sweep.dir": str(self.sweep_dir.resolve()), "sweep.trials": str(self._count()),
                         "sweep.slots": "; ".join(self._where(s) for s in self.slots), "sweep.budget": self.budget.text()})
        self.state.update(parent_run_id=parent.run_id, experiment_id=parent.experiment_id)
        write_state(self.sweep_dir, self.state)
        return parent

    def name(self) -> str:
        """'sweep lr × momentum (epochs=2)': the swept keys, then what every trial sets."""
        keys = " × ".join(key.rsplit(".", 1)[-1] for key in self.spec.keys)
        kind = {"grid": "sweep", "random": f"random {self.spec.random}"}.get(self.spec.sampler,
                                                                           f"{self.spec.sampler} {self.spec.trials}")
        common = label(dict(a.split("=", 1) for a in self.spec.overrides))
        return f"{kind} {keys}" + (f" ({common})" if common else "")

    def _count(self) -> int:
        """The trials the sweep trains, all told: the grid's, --random N, or --trials N."""
        return len(self.planned) or self.spec.trials

    def _what(self) -> str:
        pruned = f", pruned by {self.spec.pruner}" if self.spec.pruner != "none" else ""
        return f"{self.spec.sampler} sweep of {self._count()} trials{pruned}"

    def _write_status(self, status: str) -> None:
        """status.json for tools/status.py; sweep.json with the running trials' seconds so far (--max-hours counts
        them after a kill -9 too)."""
        trials = self.state["trials"]
        for name, (start, before) in self.clock.items():
            trials[name]["seconds"] = before + time.monotonic() - start
        write_state(self.sweep_dir, self.state)
        counts = {word: sum(entry.get("state") == word for entry in trials.values())
                  for word in ("finished", "pruned", "failed", "running")}
        write_status(self.sweep_dir, Status(status, run_id=self.parent.run_id, kind="sweep", trials=self._count(),
                                            trials_done=counts["finished"] + counts["pruned"] + counts["failed"],
                                            **{f"trials_{k}": v for k, v in counts.items()}))

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
        trials = self.trials()
        rows = summary.summary_rows(self.spec, trials, self.state["trials"],
                                    {t.name: self._points(t.name, t.number) for t in trials}, self.sweep_dir)
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
