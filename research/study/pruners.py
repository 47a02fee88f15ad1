"""Which trial stops early: Optuna's pruners by name (--prune), built alike in the sweep and in each trial's
process from the study's Settings, and what a pruned trial was judged against, in words."""
from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

from .store import Settings

if TYPE_CHECKING:
    import optuna

PRUNERS: dict[str, str] = {
    "none": "every trial trains to its last epoch",
    "median": "a trial stops when its best so far is worse than the median of the finished trials at the same "
              "epoch (once 2 have finished)",
    "halving": "asynchronous successive halving: at epochs W, 3W, 9W ... a trial goes on only if it is in the best "
               "third of the trials that reached that epoch",
    "hyperband": "Hyperband: successive halving in brackets that start at different epochs (W, 3W, ...)",
}
MEDIAN_STARTUP = 2            # finished trials before the median pruner judges any
REDUCTION = 3                 # successive halving and Hyperband: the best 1/3 go on at each rung


def default_warmup(epochs: int) -> int:
    """Epochs a trial trains before any pruning decision: a tenth of its epochs, at least 1."""
    return max(1, round(epochs / 10))


def make_pruner(settings: Settings) -> optuna.pruners.BasePruner:
    import optuna
    warmup = max(1, settings.warmup)
    if settings.pruner == "median":      # steps are epochs counted from 1: the first judged is epoch `warmup`
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP, n_warmup_steps=warmup)
    if settings.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup, reduction_factor=REDUCTION)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=warmup, max_resource=max(settings.epochs, warmup),
                                              reduction_factor=REDUCTION)
    return optuna.pruners.NopPruner()


def against(settings: Settings, study: optuna.Study, trial: optuna.trial.FrozenTrial, epoch: int) -> str:
    """What the pruner compared the trial with at `epoch`, in a line for sweep.json, status.json and MLflow."""
    import optuna
    values = trial.intermediate_values
    mine = values.get(epoch, math.nan)
    if settings.pruner == "median":
        best = (max if settings.goal == "max" else min)(v for step, v in values.items() if step <= epoch)
        finished = [t.intermediate_values[epoch] for t in study.get_trials(deepcopy=False,
                                                                           states=(optuna.trial.TrialState.COMPLETE,))
                    if epoch in t.intermediate_values]
        median = statistics.median(finished) if finished else math.nan
        side = "below" if settings.goal == "max" else "above"
        return (f"best {settings.metric} {best:.4f} by epoch {epoch}, {side} the median {median:.4f} of the "
                f"{len(finished)} finished trial(s) at that epoch")
    name = "successive halving" if settings.pruner == "halving" else "Hyperband"
    return (f"{settings.metric} {mine:.4f} at epoch {epoch} ({name}): not in the best 1/{REDUCTION} of the trials "
            f"that reached that epoch" + (" in its bracket" if settings.pruner == "hyperband" else ""))
