"""The study file in a sweep's folder (SQLite), what the sweep tells its trials through their environment,
and the study's settings, which the sweep writes once and every trial's process reads back.

    SWEEP_DIR/study.db        the Optuna study: every trial's values, state, and the metric after each epoch

The sweep creates the study while it holds the sweep folder's lock (research/rundir/lock.py RunDirLock):
two processes creating one fresh SQLite file at once can break it. Trials only open it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import optuna

STUDY_FILE = "study.db"
STUDY_NAME = "sweep"
STUDY_ENV = "RESEARCH_SWEEP_STUDY"      # a trial's environment: the study's storage URL ...
TRIAL_ENV = "RESEARCH_SWEEP_TRIAL"      # ... and its trial's number in it
LOCK_WAIT_S = 60                        # SQLite's busy timeout: a writer waits this long for another's lock

Sampler = Literal["grid", "random", "tpe", "cmaes"]
Pruner = Literal["none", "median", "halving", "hyperband"]


@dataclass(frozen=True)
class Settings:
    """What the sweep and its trials' processes must agree on, kept in the study (its user attributes)."""
    metric: str                 # the per-epoch metric each trial reports, e.g. val/top1
    goal: Literal["max", "min"]
    sampler: Sampler
    pruner: Pruner
    warmup: int                 # epochs every trial trains before the pruner may stop it
    epochs: int                 # the longest trial's epochs (Hyperband's largest budget)
    trials: int = 0             # tpe, cmaes: trials to ask for (--trials)
    seed: int = 0

    def to_attrs(self) -> dict:
        return {f"settings.{key}": value for key, value in asdict(self).items()}

    @classmethod
    def from_attrs(cls, attrs: dict) -> Settings:
        return cls(**{key.removeprefix("settings."): value for key, value in attrs.items()
                      if key.startswith("settings.")})


def storage_url(sweep_dir: Path) -> str:
    return f"sqlite:///{(Path(sweep_dir) / STUDY_FILE).resolve()}"


def storage(url: str) -> optuna.storages.RDBStorage:
    """The study's SQLite store, waiting up to LOCK_WAIT_S for a write lock another process holds."""
    import optuna
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": LOCK_WAIT_S}})


def quiet() -> None:
    """Optuna's INFO lines (a study created, each trial told) stay out of the sweep's and trainers' output."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
