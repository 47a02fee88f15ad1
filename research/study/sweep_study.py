"""The sweep's side of its study (research/sweeps/sweeper.py): created once in the sweep's folder with the
Settings every trial reads, the grid's or the random search's trials queued in their order, the next trial asked
for, each ended trial told (complete with its best epoch's metric, failed, pruned), and read back for sweep.json
and the summary. A trial's values are kept as --set takes them (its user attribute "values"); its params are the
same values as Optuna's samplers see them."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .samplers import categorical, distribution, make_sampler
from .store import STUDY_NAME, Settings, quiet, storage, storage_url
from .pruners import make_pruner

# A key's space, from the sweep's spec: the --grid values (as --set takes them) or a --range (low, high, log).
Space = dict[str, "list[str] | tuple[float, float, bool]"]
MAX_DRAWS = 100               # tpe, cmaes: draws in a row that repeat a trial before the search counts as done
STATES = {"WAITING": "waiting", "RUNNING": "running", "COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed"}


@dataclass
class TrialRecord:
    """One trial of the study as the sweep reads it."""
    number: int
    values: dict[str, str]                  # as --set takes them
    state: str                              # waiting, running, finished, pruned, failed (STATES)
    points: dict[int, float] = field(default_factory=dict)      # epoch -> the metric, as the trainer reported it
    attrs: dict = field(default_factory=dict)                    # pruned_at_epoch, pruned_against, duplicate_of, ...


class SweepStudy:
    """The study in `sweep_dir` (study.db), created with `settings` the first time."""

    def __init__(self, sweep_dir: Path, settings: Settings, space: Space):
        import optuna
        quiet()
        self.url, self.settings, self.space = storage_url(sweep_dir), settings, space
        self._distributions = {key: categorical(s) if isinstance(s, list) else distribution(*s)
                               for key, s in space.items()}
        self._store = storage(self.url)
        self.study = optuna.create_study(storage=self._store, study_name=STUDY_NAME, load_if_exists=True,
                                         direction="maximize" if settings.goal == "max" else "minimize",
                                         pruner=make_pruner(settings))
        self._study_id = self._store.get_study_id_from_name(STUDY_NAME)
        if not self.study.user_attrs:
            for key, value in settings.to_attrs().items():
                self.study.set_user_attr(key, value)
        self.study.sampler = make_sampler(settings, settings.trials, len(self._trials()))

    # -- trials in -----------------------------------------------------------------------------------------
    def enqueue(self, trials: list[dict[str, str]]) -> None:
        """The grid's or the random search's trials, queued in their order (once: a continued sweep queues none
        of those it has)."""
        have = {_key(t.user_attrs.get("values", {})) for t in self._trials()}
        for values in trials:
            if _key(values) not in have:
                self.study.enqueue_trial(self._params(values), user_attrs={"values": values})

    def ask(self) -> TrialRecord | None:
        """The next trial: the first queued one (grid, random), or new values from the sampler (tpe, cmaes) while
        fewer than settings.trials were asked; None when there is none. A draw whose values (to 3 significant
        digits) a trial has already is told that trial's outcome and not trained (its attribute duplicate_of)."""
        for _ in range(MAX_DRAWS):
            trials = self._trials()
            if self.settings.sampler in ("grid", "random"):
                if not any(STATES[t.state.name] == "waiting" for t in trials):
                    return None
            elif sum("duplicate_of" not in t.user_attrs for t in trials) >= self.settings.trials:
                return None
            trial = self.study.ask(self._distributions)
            values = trial.user_attrs.get("values") or {key: _text(trial.params[key]) for key in self.space}
            trial.set_user_attr("values", values)
            same = [t for t in trials if t.number != trial.number and _key(t.user_attrs.get("values", {})) == _key(values)]
            if not same:
                return self.record(trial.number)
            earlier = self._record(same[0])
            self.tell(trial.number, earlier.state if earlier.state in ("finished", "pruned") else "failed",
                      self.best_value(earlier.number), duplicate_of=earlier.number)
        return None

    # -- trials out ----------------------------------------------------------------------------------------
    def tell(self, number: int, state: str, value: float | None = None, **attrs) -> None:
        """Trial `number` ended: finished (with `value`, its best epoch's metric), failed or pruned; `attrs` kept
        beside it (why it failed). Finished without a value: failed (nothing ranks it)."""
        import optuna
        for key, attr in attrs.items():
            self._store.set_trial_user_attr(self._id(number), key, attr)
        if state == "finished" and (value is None or not math.isfinite(value)):
            state = "failed"
        states = {"finished": optuna.trial.TrialState.COMPLETE, "failed": optuna.trial.TrialState.FAIL,
                  "pruned": optuna.trial.TrialState.PRUNED}
        self.study.tell(number, value if state == "finished" else None, state=states[state], skip_if_finished=True)

    # -- reading -------------------------------------------------------------------------------------------
    def records(self) -> list[TrialRecord]:
        return [self._record(t) for t in self._trials()]

    def record(self, number: int) -> TrialRecord:
        return self._record(self._trials()[number])

    def epochs_spent(self) -> int:
        """Epochs the trials trained, as they reported them."""
        return sum(len(t.intermediate_values) for t in self._trials())

    def best_value(self, number: int) -> float | None:
        """The trial's best epoch's metric (max or min by the goal); None if it reported none."""
        points = self.record(number).points.values()
        return ((max if self.settings.goal == "max" else min)(points)) if points else None

    def _trials(self) -> list:
        return self.study.get_trials(deepcopy=False)          # numbered 0, 1, ... in order

    def _record(self, trial) -> TrialRecord:
        values = trial.user_attrs.get("values") or {key: _text(value) for key, value in trial.params.items()}
        return TrialRecord(trial.number, values, STATES[trial.state.name], dict(trial.intermediate_values),
                           {k: v for k, v in trial.user_attrs.items() if k != "values"})

    def _id(self, number: int) -> int:
        return self._store.get_trial_id_from_study_id_trial_number(self._study_id, number)

    def _params(self, values: dict[str, str]) -> dict:
        """Values as --set takes them -> Optuna's params: numbers for a --range, the text for a --grid key."""
        import optuna
        out = {}
        for key, text in values.items():
            kind = self._distributions[key]
            out[key] = text if isinstance(kind, optuna.distributions.CategoricalDistribution) else \
                int(text) if isinstance(kind, optuna.distributions.IntDistribution) else float(text)
        return out


def _key(values: dict[str, str]) -> tuple:
    return tuple(sorted(values.items()))


def _text(value) -> str:
    """A sampled value as --set text: floats to 3 significant digits (a name to read, the value trained)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)
