"""Which trial comes next: a sweep's values as Optuna distributions, and Optuna's samplers by name (--sampler).
The grid and the random search are drawn before the sweep starts (research/sweeps/spec.py) and queued in the
study in their order; TPE and CMA-ES ask the study for each trial's values, knowing every trial before it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .store import Settings

if TYPE_CHECKING:
    import optuna

SAMPLERS: dict[str, str] = {
    "grid": "every combination of the --grid values, in their order",
    "random": "--random N trials drawn from --range (and --grid) values, seeded by --seed",
    "tpe": "Optuna's TPE (Tree-structured Parzen Estimator): each trial's values from a model of the trials "
           "before it; the first quarter of --trials N (2 to 10) drawn at random",
    "cmaes": "Optuna's CMA-ES (covariance matrix adaptation) over two or more numeric --range keys",
}


def distribution(low: float, high: float, log: bool) -> optuna.distributions.BaseDistribution:
    """A --range as Optuna's distribution: integers when both ends are (and it is not :log), else floats."""
    import optuna
    if float(low).is_integer() and float(high).is_integer() and not log:
        return optuna.distributions.IntDistribution(int(low), int(high))
    return optuna.distributions.FloatDistribution(low, high, log=log)


def categorical(values: list[str]) -> optuna.distributions.BaseDistribution:
    """A --grid key's values (as --set takes them) as a choice among them."""
    import optuna
    return optuna.distributions.CategoricalDistribution(list(values))


def make_sampler(settings: Settings, trials: int, asked_before: int) -> optuna.samplers.BaseSampler:
    """The sampler of a sweep that asked `asked_before` trials already, for `trials` in all. Seeded by the sweep's
    seed plus that count: an uninterrupted sweep draws the same trials every time, and a continued one does not
    draw its first trials' values again."""
    import optuna
    seed = settings.seed + asked_before
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, trials // 4)),
                                          constant_liar=True)      # trials running at once: told apart
    if settings.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)       # grid, random: the queued trials' values are fixed
