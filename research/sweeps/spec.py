"""Sweeps: the trials of one recipe over a grid (--grid, the product), a random search (--random N over
--range) or a model-based search (--sampler tpe|cmaes --trials N), each a tools/train.py run in its own
directory under the sweep's, several at once on groups of devices, optionally stopped early by a pruner
(--prune); in MLflow one parent run with the trials nested under it. The same command again continues it.

    SWEEP_DIR/study.db             the Optuna study: which trials exist, their states, their metric each epoch
    SWEEP_DIR/sweep.json           the spec, the parent run's id and each trial's outcome (rewritten atomically)
    SWEEP_DIR/status.json          for tools/status.py (a sweep row above its trials)
    SWEEP_DIR/sweep.log            what the sweep printed; summary.md, summary.csv, sweep.png at the end
    SWEEP_DIR/<trial>/             the trial's run directory (console.log: its trainer's output)
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from .. import atomic
from ..config import RecipeError, load_recipe
from ..detached.launch import train_command
from ..errors import ExitCode, UserError, describe, signal_of
from ..metrics import VAL_TOP1
from ..paths import RUNS
from ..rundir.console import last_error
from ..study.store import STUDY_ENV, TRIAL_ENV, Pruner, Sampler
from ..tracking.names import RUN_TAGS_ENV, folder_name, label

STATE = "sweep.json"
# The trial's process asks the kernel for SIGTERM when the sweep's process dies (kill -9 included): it then
# checkpoints and stops as a trainer sent SIGTERM does, and the same sweep command resumes it. Then it becomes
# tools/train.py (exec: the same pid). A wrapper rather than preexec_fn, which is unsafe beside threads.
DIE_WITH_SWEEP = ("import ctypes, os, signal, sys; prctl = getattr(ctypes.CDLL(None), 'prctl', None); "
                  "prctl and prctl(1, signal.SIGTERM); os.getppid() == int(sys.argv[1]) or sys.exit(143); "
                  "os.execv(sys.argv[2], sys.argv[2:])")     # 1: PR_SET_PDEATHSIG
Goal = Literal["max", "min"]


class SweepError(UserError):
    """A sweep option, value or folder the user must fix."""


@dataclass
class Range:
    """--range KEY=LOW:HIGH[:log]: uniform (log-uniform with :log) between LOW and HIGH; integers if both are."""
    low: float
    high: float
    log: bool = False

    def text(self) -> str:
        return f"{self.low:g}:{self.high:g}" + (":log" if self.log else "")

    def distribution(self):
        from scipy import stats
        integers = float(self.low).is_integer() and float(self.high).is_integer() and not self.log
        if integers:
            return stats.randint(int(self.low), int(self.high) + 1)
        if self.log:
            return stats.loguniform(self.low, self.high)
        return stats.uniform(self.low, self.high - self.low)


@dataclass
class SweepSpec:
    """What a sweep trains: a recipe file, the values every trial sets, and the values that vary."""
    recipe: str
    grid: dict[str, list[str]] = field(default_factory=dict)    # key -> values as --set takes them
    ranges: dict[str, Range] = field(default_factory=dict)     # random search only
    random: int = 0                  # trials drawn (0: the grid's product)
    seed: int = 0                    # the random search's draws
    overrides: list[str] = field(default_factory=list)         # --set for every trial
    metric: str = VAL_TOP1         # a per-epoch metric; each trial's best epoch counts
    goal: Goal = "max"
    sampler: Sampler = "grid"        # grid, random (--random N), tpe or cmaes (--trials N)
    trials: int = 0                  # tpe, cmaes: trials asked for
    pruner: Pruner = "none"          # which trials stop early (research/study/pruners.py)
    warmup: int = 0                  # epochs before the pruner may stop a trial (0: a tenth of its epochs)

    @property
    def keys(self) -> list[str]:
        return [*self.grid, *self.ranges]

    def params(self) -> dict[str, str]:
        """The parent run's params: the spec, one key each."""
        out = {"sweep.recipe": self.recipe, "sweep.metric": self.metric, "sweep.goal": self.goal}
        out |= {f"sweep.grid.{key}": ",".join(values) for key, values in self.grid.items()}
        out |= {f"sweep.range.{key}": spec.text() for key, spec in self.ranges.items()}
        if self.random:
            out |= {"sweep.random": str(self.random), "sweep.seed": str(self.seed)}
        if self.trials:                  # only what differs from a sweep of before the study: its spec is unchanged
            out |= {"sweep.sampler": self.sampler, "sweep.trials": str(self.trials), "sweep.seed": str(self.seed)}
        if self.pruner != "none":
            out |= {"sweep.prune": self.pruner, "sweep.prune_warmup": str(self.warmup or "auto")}
        out |= {f"sweep.set.{a.split('=', 1)[0]}": a.split("=", 1)[1] for a in self.overrides}
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> SweepSpec:
        return cls(**{**raw, "ranges": {k: Range(**v) for k, v in raw.get("ranges", {}).items()}})


def split_values(text: str) -> list[str]:
    """'0.01,0.02' -> ['0.01', '0.02']; commas inside [...] or {...} stay: '[8,15],[10]' -> ['[8,15]', '[10]']."""
    values, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_grid(assignment: str) -> tuple[str, list[str]]:
    """--grid KEY=V1,V2,... -> (KEY, [V1, V2, ...])."""
    key, _, text = assignment.partition("=")
    values = split_values(text)
    if not key.strip() or not text or "" in values:
        raise SweepError(f"--grid {assignment}: expected KEY=V1,V2,..., e.g. --grid train.lr=0.01,0.02.")
    if len(set(values)) != len(values):
        raise SweepError(f"--grid {assignment}: a value is listed twice.")
    return key.strip(), values


def parse_range(assignment: str) -> tuple[str, Range]:
    """--range KEY=LOW:HIGH[:log] -> (KEY, Range)."""
    key, _, text = assignment.partition("=")
    parts = text.split(":")
    try:
        if not key.strip() or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
            raise ValueError
        spec = Range(float(parts[0]), float(parts[1]), len(parts) == 3)
    except ValueError:
        raise SweepError(f"--range {assignment}: expected KEY=LOW:HIGH or KEY=LOW:HIGH:log (log-uniform), e.g. "
                         f"--range train.lr=1e-3:1e-1:log.") from None
    if spec.high <= spec.low or (spec.log and spec.low <= 0):
        raise SweepError(f"--range {assignment}: LOW must be below HIGH" + (" and above 0 for :log." if spec.log
                                                                            else "."))
    return key.strip(), spec


def make_spec(recipe: str, grid: list[str] = (), ranges: list[str] = (), random: int = 0, seed: int = 0,
              overrides: list[str] = (), metric: str = VAL_TOP1, goal: Goal | None = None,
              sampler: Sampler | None = None, trials: int = 0, pruner: Pruner = "none",
              warmup: int = 0) -> SweepSpec:
    """A SweepSpec from the command line's texts. Raises SweepError naming the bad option."""
    grids = dict(parse_grid(a) for a in grid)
    spans = dict(parse_range(a) for a in ranges)
    sampler = sampler or ("random" if random else "tpe" if trials else "grid")
    if len(grids) + len(spans) != len(grid) + len(ranges) or set(grids) & set(spans):
        raise SweepError("a key is swept twice: give each key one --grid or one --range.")
    if not grids and not spans:
        raise SweepError("nothing to sweep: add --grid KEY=V1,V2 (the product of all of them is trained), or "
                         "--random N with --range KEY=LOW:HIGH[:log].")
    if sampler in ("tpe", "cmaes"):
        if trials < 1 or random:
            raise SweepError(f"--sampler {sampler} asks for trials one at a time: give their number with --trials N "
                             f"(not --random).")
    elif trials:
        raise SweepError(f"--trials N is the count of a model-based search (--sampler tpe or cmaes); the "
                         f"{sampler} search's trials are " + ("--random N." if sampler == "random" else "its grid's."))
    elif sampler == "random" and random < 1:
        raise SweepError("--sampler random: give the number of trials with --random N.")
    elif spans and random < 1:
        raise SweepError("--range draws values for a random search: add --random N (the number of trials), or "
                         "--sampler tpe --trials N for a model-based search.")
    if sampler == "cmaes" and (grids or len(spans) < 2):
        raise SweepError("--sampler cmaes searches two or more numeric --range keys" +
                         (f" (--grid {', '.join(grids)} is a list of choices)" if grids else "") +
                         ": use --sampler tpe, which takes both.")
    if warmup < 0 or (warmup and pruner == "none"):
        raise SweepError(f"--prune-warmup {warmup}: the epochs before the pruner may stop a trial, 1 or more, with "
                         f"--prune median|halving|hyperband.")
    fixed = {a.split("=", 1)[0].strip() for a in overrides}
    if both := fixed & (set(grids) | set(spans)):
        raise SweepError(f"{', '.join(sorted(both))}: both swept and --set; drop one.")
    return SweepSpec(recipe, grids, spans, random, seed, list(overrides), metric,
                     goal or ("min" if "loss" in metric else "max"), sampler, trials, pruner, warmup)


@dataclass
class Trial:
    """One point of the sweep: its values (as --set takes them), its name and its folder under the sweep's."""
    values: dict[str, str]
    name: str = ""            # "lr=0.01 warmup_epochs=1": its MLflow run name
    folder: str = ""          # "lr-0.01_warmup_epochs-1" (trial_folder)
    epochs: int = 0           # its recipe's train.epochs: what it trains unpruned
    number: int | None = None     # its number in the sweep's study, once asked for

    @property
    def assignments(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.values.items()]


def make_trials(spec: SweepSpec) -> list[Trial]:
    """The grid's product (scikit-learn's ParameterGrid) or N draws (ParameterSampler, seeded), in a fixed order:
    the same spec always gives the same trials; none for a model-based search (the study draws them). Each
    trial's recipe is checked as tools/train.py --set would."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    if spec.sampler in ("tpe", "cmaes"):
        load_recipe(spec.recipe, spec.overrides)
        return []
    if spec.random:
        space = {**spec.grid, **{key: r.distribution() for key, r in spec.ranges.items()}}
        draws = ParameterSampler(space, n_iter=spec.random, random_state=spec.seed)
    else:
        draws = ParameterGrid(spec.grid)
    trials, seen = [], set()
    for draw in draws:
        values = {key: _value_text(draw[key]) for key in spec.keys}      # the order the keys were given
        if tuple(values.values()) not in seen:                           # a draw repeated: trained once
            seen.add(tuple(values.values()))
            trials.append(checked_trial(spec, values, {t.folder for t in trials}))
    return trials


def checked_trial(spec: SweepSpec, values: dict[str, str], taken: set[str] = frozenset()) -> Trial:
    """The trial of `values`, its recipe checked as tools/train.py --set would (SweepError naming the trial)."""
    trial = Trial(values, label(values), trial_folder(values, taken))
    try:
        trial.epochs = load_recipe(spec.recipe, [*spec.overrides, *trial.assignments]).train.epochs
    except RecipeError as err:
        raise SweepError(f"trial {trial.name}: {err}") from None
    return trial


def trial_folder(values: dict[str, str], taken: set[str] = frozenset()) -> str:
    """A trial's folder, names.folder_name ("lr-0.01_lr_steps-5-10"); a name in `taken` (two values that differ only
    in characters a folder name leaves out) gets the next free -2, -3 ... suffix."""
    name = folder_name(values)
    folder, count = name, 1
    while folder in taken:
        count += 1
        folder = f"{name}-{count}"
    return folder


def _value_text(value) -> str:
    """A drawn value as --set text: floats to 3 significant digits (a name to read, the value trained)."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def default_sweep_dir(spec: SweepSpec) -> Path:
    """runs/<recipe>-sweep-<keys> (a random search: -random-, a model-based one: -tpe-, -cmaes-): the same command
    finds its sweep again."""
    name = load_recipe(spec.recipe, spec.overrides).name
    kind = {"grid": "sweep"}.get(spec.sampler, spec.sampler)
    return RUNS / (f"{name}-{kind}-" + "-".join(key.rsplit(".", 1)[-1] for key in spec.keys))


# -- devices ---------------------------------------------------------------------------------------------
@dataclass
class Slot:
    """Where one trial runs: its GPUs (None: the CPU) and the cores its process is pinned to."""
    gpus: str | None
    cores: list[int]


def device_slots(gpus: str | None, gpus_per_trial: int = 1, parallel: int | None = None) -> list[Slot]:
    """Groups of `gpus_per_trial` GPUs (--gpus 0,1,2,3 --gpus-per-trial 1: four slots), or `parallel` CPU slots;
    the cores split evenly between the slots either way (each trial's OMP_NUM_THREADS)."""
    from ..devices import parse_gpus

    ids = parse_gpus(gpus)
    if gpus_per_trial < 1 or (ids and len(ids) % gpus_per_trial):
        raise SweepError(f"--gpus-per-trial {gpus_per_trial}: must divide the {len(ids)} GPUs of --gpus {gpus} "
                         f"into equal groups.")
    groups = [",".join(map(str, ids[i:i + gpus_per_trial])) for i in range(0, len(ids), gpus_per_trial)] or [None]
    count = parallel or len(groups)
    if count < 1 or (ids and count > len(groups)):
        raise SweepError(f"--parallel {parallel}: between 1 and the {len(groups)} GPU group(s) of --gpus.")
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // count)
    return [Slot(groups[i % len(groups)], cores[(i * share) % len(cores):][:share] or cores[:share])
            for i in range(count)]


# -- the sweep's state -----------------------------------------------------------------------------------
def read_state(sweep_dir: Path) -> dict:
    try:
        state = json.loads((sweep_dir / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(sweep_dir: Path, state: dict) -> None:
    atomic.write_text(sweep_dir / STATE, json.dumps(state, indent=1))


def check_same_sweep(sweep_dir: Path, state: dict, spec: SweepSpec) -> None:
    """The folder holds this sweep (or none yet). Raises SweepError naming what differs."""
    if not state.get("spec"):
        return
    saved = SweepSpec.from_dict(state["spec"]).params()
    now = spec.params()
    changed = [f"{key} {saved.get(key, '(none)')} -> {now.get(key, '(none)')}"
               for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)]
    if changed:
        raise SweepError(f"{sweep_dir} holds another sweep: {'; '.join(changed)}. Run the same command as before "
                         f"to continue it, pass --output for another folder, or --fresh to set it aside.")


# -- one trial's outcome ---------------------------------------------------------------------------------
def outcome(code: int, console_log: Path, offset: int = 0) -> tuple[str, str]:
    """(state, reason) of a trial's trainer that exited with `code`: finished, pruned (its sweep's pruner stopped it),
    failed (the status's words from research.errors, then the last error line of its console.log after byte
    `offset`) or killed (by a signal; after a stop signal it checkpointed first: resumed next time)."""
    if signal_of(code) is not None:
        return "killed", describe(code)
    if code in (ExitCode.OK, ExitCode.PRUNED):
        return ("finished" if code == ExitCode.OK else "pruned"), ""
    why = f"exit {code}" + (f", {describe(code)}" if describe(code) else "")
    return "failed", f"{why}: {last_error(console_log, offset)}".rstrip(": ")


def trial_command(spec: SweepSpec, trial: Trial, run_dir: Path, slot: Slot) -> list[str]:
    """tools/train.py for the trial, as a user would type it, behind the wrapper that ends it with the sweep."""
    command = train_command(spec.recipe, run_dir, slot.gpus, [*spec.overrides, *trial.assignments])
    return [sys.executable, "-c", DIE_WITH_SWEEP, str(os.getpid()), *command]


def trial_env(slot: Slot, tags: dict[str, str], study_url: str, number: int) -> dict[str, str]:
    """The sweep's environment, with this slot's thread count, the tags of the trial's new MLflow run, and the
    study and trial it reports to (research/study/trial.py)."""
    from ..tracking import tracking_uri
    return {**os.environ, "OMP_NUM_THREADS": str(len(slot.cores)), "PYTHONUNBUFFERED": "1",
            "MLFLOW_TRACKING_URI": tracking_uri(), RUN_TAGS_ENV: json.dumps(tags), STUDY_ENV: study_url,
            TRIAL_ENV: str(number)}


def stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")
