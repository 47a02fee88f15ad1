"""The trainer's side of a sweep's study: a tools/train.py process whose environment names a study and a trial
(research/sweeps/sweeper.py sets it) reports the sweep's metric after every epoch and asks the pruner whether to
go on; any other trainer gets `NoTrial`, which reports nothing and never stops. A store that fails is warned
about and training goes on: a multi-day run never dies of its sweep's bookkeeping."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .store import STUDY_ENV, STUDY_NAME, TRIAL_ENV, Settings, quiet, storage

log = logging.getLogger("research.training")


@dataclass(frozen=True)
class Pruned:
    """The pruner's verdict: the epoch the trial stopped after, and what it was judged against."""
    epoch: int
    against: str


class NoTrial:
    """A trainer that is no sweep's trial: nothing is reported, nothing stops it."""
    number: int | None = None
    verdict: Pruned | None = None

    def start(self, history: list[dict]) -> Pruned | None:
        return None

    def report(self, epoch: int, metrics: dict[str, float], last: bool = False) -> Pruned | None:
        return None


class StudyTrial:
    """Trial `number` of the study at `url`: reports the sweep's metric at each epoch (step = the epoch, from 1)."""

    def __init__(self, url: str, number: int):
        import optuna
        quiet()
        self.number, self.verdict, self._warned = number, None, False
        store = storage(url)
        study_id = store.get_study_id_from_name(STUDY_NAME)
        self.settings = Settings.from_attrs(store.get_study_user_attrs(study_id))
        from .pruners import make_pruner
        self.study = optuna.load_study(study_name=STUDY_NAME, storage=store, pruner=make_pruner(self.settings))
        self.trial = optuna.trial.Trial(self.study, store.get_trial_id_from_study_id_trial_number(study_id, number))

    def start(self, history: list[dict]) -> Pruned | None:
        """A resumed trainer: the epochs its checkpoint holds reported (those the study lacks), then the pruner
        asked about the last one, so that a trial pruned before a kill is not trained on."""
        try:
            frozen = self._frozen()
            if frozen.state.name == "PRUNED":          # pruned, then killed before it could say so
                self.verdict = Pruned(frozen.user_attrs.get("pruned_at_epoch", frozen.last_step or 0),
                                      frozen.user_attrs.get("pruned_against", "pruned by the sweep"))
                return self.verdict
            for entry in history:
                self._report(entry["epoch"], entry)
            return self._judge(history[-1]["epoch"]) if history else None
        except Exception as err:  # noqa: BLE001 - the study is bookkeeping: training goes on without it
            self._warn(err)
            return None

    def report(self, epoch: int, metrics: dict[str, float], last: bool = False) -> Pruned | None:
        """After epoch `epoch` (its checkpoint written): its metric to the study, and the pruner's verdict; none
        after the `last` epoch (the trial is done: it finishes, whatever the pruner would say)."""
        try:
            self._report(epoch, metrics)
            return None if last else self._judge(epoch)
        except Exception as err:  # noqa: BLE001
            self._warn(err)
            return None

    def _report(self, epoch: int, metrics: dict[str, float]) -> None:
        value = metrics.get(self.settings.metric)
        if value is None:
            raise KeyError(f"the sweep's metric {self.settings.metric} is not among the epoch's metrics "
                           f"({', '.join(sorted(k for k in metrics if k != 'epoch'))})")
        frozen = self._frozen()
        if frozen.state.is_finished():               # told already (a trial trained on by hand): nothing to add
            return
        if epoch not in frozen.intermediate_values:  # once per epoch, resumed or not
            self.trial.report(float(value), epoch)

    def _judge(self, epoch: int) -> Pruned | None:
        import optuna
        if self._frozen().state.is_finished() or not self.trial.should_prune():
            return None
        from .pruners import against
        verdict = Pruned(epoch, against(self.settings, self.study, self._frozen(), epoch))
        self.trial.set_user_attr("pruned_at_epoch", epoch)
        self.trial.set_user_attr("pruned_against", verdict.against)
        self.study.tell(self.trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
        self.verdict = verdict
        return verdict

    def _frozen(self):
        return self.study.get_trials(deepcopy=False)[self.number]        # a study's trials are numbered 0, 1, ...

    def _warn(self, err: Exception) -> None:
        if not self._warned:                 # once: a store down for a day is not a line per epoch
            log.warning("sweep study: could not report to trial %d (%s); training goes on, unpruned until it "
                        "answers again", self.number, err)
        self._warned = True


def trial_from_environment(rank0: bool = True) -> StudyTrial | NoTrial:
    """The study's trial this process is (its environment names one: a sweep started it), else NoTrial."""
    url, number = os.environ.get(STUDY_ENV), os.environ.get(TRIAL_ENV)
    if not url or number is None or not rank0:
        return NoTrial()
    try:
        return StudyTrial(url, int(number))
    except Exception as err:  # noqa: BLE001 - the run trains unpruned rather than not at all
        log.warning("sweep study %s: cannot open trial %s (%s); training without reporting to it", url, number, err)
        return NoTrial()
