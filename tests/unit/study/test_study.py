"""A sweep's study without training: the queue of a grid, a model-based search's trials, the verdicts told, and a
trainer's side that reports, is pruned, and trains on when the store fails."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from research.study.store import STUDY_ENV, TRIAL_ENV, Settings, storage_url
from research.study.sweep_study import SweepStudy
from research.study.trial import NoTrial, StudyTrial, trial_from_environment

GRID = {"train.lr": ["0.01", "0.02", "0.05"]}


def settings(**kw) -> Settings:
    return Settings(**{"metric": "val/top1", "goal": "max", "sampler": "grid", "pruner": "none", "warmup": 1,
                       "epochs": 4, **kw})


def test_a_grid_is_queued_once_in_its_order_and_given_out_until_none_is_left(tmp_path):
    study = SweepStudy(tmp_path, settings(), GRID)
    trials = [{"train.lr": v} for v in GRID["train.lr"]]
    study.enqueue(trials)
    again = SweepStudy(tmp_path, settings(), GRID)            # the same command again: nothing queued twice
    again.enqueue(trials)
    asked = [again.ask() for _ in range(3)]
    assert [r.values for r in asked] == trials and [r.number for r in asked] == [0, 1, 2]
    assert again.ask() is None
    again.tell(0, "finished", 0.9)
    again.tell(1, "failed", reason="exit 3, stopped by the guard")
    again.tell(2, "finished", None)                          # nothing reported: nothing to rank it by
    assert [r.state for r in again.records()] == ["finished", "failed", "failed"]
    assert again.records()[1].attrs["reason"] == "exit 3, stopped by the guard"


def test_a_model_based_search_asks_for_its_trials_within_their_ranges_and_never_trains_one_twice(tmp_path):
    space = {"train.lr": (1e-3, 1e-1, True), "train.batch_size": (16, 64, False), "train.optimizer": ["sgd", "nag"]}
    study = SweepStudy(tmp_path, settings(sampler="tpe", trials=6), space)
    seen = []
    while (record := study.ask()) is not None:
        lr = float(record.values["train.lr"])
        assert 1e-3 <= lr <= 1e-1 and record.values["train.batch_size"].isdigit()
        assert record.values["train.optimizer"] in ("sgd", "nag") and record.values not in seen
        assert record.values["train.lr"] == f"{lr:.3g}"            # as --set takes it, 3 significant digits
        seen.append(record.values)
        study.tell(record.number, "finished", -abs(lr - 0.01))
    assert len(seen) == 6


def test_a_draw_repeating_a_trial_is_told_its_outcome_and_not_given_out(tmp_path):
    study = SweepStudy(tmp_path, settings(sampler="tpe", trials=2), {"train.optimizer": ["sgd", "nag"]})
    first = study.ask()
    study.tell(first.number, "finished", 0.5)
    second = study.ask()
    study.tell(second.number, "finished", 0.7)
    assert study.ask() is None                                     # two distinct trials: the search is done
    assert {r.values["train.optimizer"] for r in study.records() if "duplicate_of" not in r.attrs} == {"sgd", "nag"}


@pytest.fixture
def trial_env(tmp_path, monkeypatch):
    """A grid of three in a study, the first two finished, the third a running trial this process is."""
    study = SweepStudy(tmp_path, settings(pruner="median", warmup=2), GRID)
    study.enqueue([{"train.lr": v} for v in GRID["train.lr"]])
    for value, number in ((0.9, 0), (0.8, 1)):
        record = study.ask()
        for epoch in (1, 2, 3, 4):
            study.study._storage.set_trial_intermediate_value(study._id(number), epoch, value - 0.1 * (4 - epoch))
        study.tell(record.number, "finished", value)
    study.ask()
    monkeypatch.setenv(STUDY_ENV, storage_url(tmp_path))
    monkeypatch.setenv(TRIAL_ENV, "2")
    return study


def test_a_trial_reports_each_epoch_and_is_pruned_behind_the_median_after_its_warmup(trial_env):
    trial = trial_from_environment()
    assert isinstance(trial, StudyTrial)
    assert trial.report(1, {"val/top1": 0.1}) is None              # epoch 1 < warm-up of 2: never judged
    verdict = trial.report(2, {"val/top1": 0.2})
    assert verdict.epoch == 2 and "below the median 0.6500 of the 2 finished trial(s)" in verdict.against
    record = trial_env.record(2)
    assert record.state == "pruned" and record.points == {1: 0.1, 2: 0.2}
    assert record.attrs["pruned_at_epoch"] == 2
    # A resumed trainer reports its checkpoint's epochs again (nothing twice) and is told it was pruned.
    assert StudyTrial(trial_env.url, 2).start([{"epoch": 1, "val/top1": 0.1}, {"epoch": 2, "val/top1": 0.2}]) == verdict


def test_a_store_that_fails_leaves_the_trial_training(trial_env, caplog, monkeypatch):
    trial = trial_from_environment()
    monkeypatch.setattr(trial.trial, "report", lambda *a: (_ for _ in ()).throw(OSError("disk I/O error")))
    with caplog.at_level(logging.WARNING, logger="research.training"):
        assert trial.report(3, {"val/top1": 0.1}) is None and trial.report(4, {"val/top1": 0.1}) is None
    assert caplog.text.count("disk I/O error") == 1 and "training goes on" in caplog.text


def test_a_trainer_that_is_no_trial_reports_nothing_and_imports_no_optuna(monkeypatch):
    monkeypatch.delenv(STUDY_ENV, raising=False)
    code = ("import sys, research; from research.study.trial import trial_from_environment; trial_from_environment(); "
            "print(sorted(m for m in ('optuna', 'mxnet', 'mlflow') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={k: v for k, v in os.environ.items() if k != STUDY_ENV}).stdout
    assert loaded.strip() == "[]"
    trial = trial_from_environment()
    assert isinstance(trial, NoTrial) and trial.report(1, {"val/top1": 0.5}) is None and trial.verdict is None
    monkeypatch.setenv(STUDY_ENV, "sqlite:////nonexistent/folder/study.db")
    monkeypatch.setenv(TRIAL_ENV, "0")
    assert isinstance(trial_from_environment(), NoTrial)            # a study that cannot be opened: trains unpruned


def test_a_trial_behind_at_its_last_epoch_finishes(trial_env):
    trial = trial_from_environment()
    assert trial.report(1, {"val/top1": 0.0}) is None                  # warm-up
    assert trial.report(2, {"val/top1": 0.0}, last=True) is None       # done: nothing left for the pruner to save
    assert trial_env.record(2).state == "running" and trial_env.record(2).points == {1: 0.0, 2: 0.0}
