"""A sweep's spec, its trials and its device slots, without training (tests/e2e/test_sweep.py trains)."""
from __future__ import annotations

import pytest

from research.sweeps.spec import (SweepError, check_same_sweep, device_slots, make_spec, make_trials, outcome,
                                  split_values)

QUICKSTART = "recipes/lenet_digits.yaml"


def test_the_grid_is_the_product_with_each_trial_named_by_its_values(repo, monkeypatch):
    monkeypatch.chdir(repo)
    spec = make_spec(QUICKSTART, ["train.lr=0.01,0.02", "train.lr_steps=[5,10],[8]"], overrides=["train.epochs=12"])
    trials = make_trials(spec)
    assert [t.name for t in trials] == ["lr=0.01 lr_steps=[5,10]", "lr=0.01 lr_steps=[8]", "lr=0.02 lr_steps=[5,10]",
                                        "lr=0.02 lr_steps=[8]"]
    assert trials[0].assignments == ["train.lr=0.01", "train.lr_steps=[5,10]"]       # exactly as --set takes them
    assert trials[0].folder == "lr-0.01_lr_steps-5-10"             # no = , [ ] to quote in a shell
    assert spec.params()["sweep.grid.train.lr_steps"] == "[5,10],[8]" and spec.goal == "max"


def test_a_random_search_is_seeded_and_log_uniform_within_its_range(repo, monkeypatch):
    monkeypatch.chdir(repo)
    spec = make_spec(QUICKSTART, ["train.batch_size=32,64"], ["train.lr=1e-4:1e-1:log"], random=12, seed=3)
    trials = make_trials(spec)
    assert [t.values for t in trials] == [t.values for t in make_trials(spec)]     # the same command, the same trials
    lrs = [float(t.values["train.lr"]) for t in trials]
    assert len(trials) == 12 and all(1e-4 <= lr <= 1e-1 for lr in lrs)
    assert min(lrs) < 1e-3 and max(lrs) > 1e-2                   # log-uniform: every decade drawn from
    assert {t.values["train.batch_size"] for t in trials} == {"32", "64"}
    assert make_spec(QUICKSTART, [], ["train.lr=1e-4:1e-1"], random=2, seed=4).params()["sweep.seed"] == "4"


@pytest.mark.parametrize("grid, ranges, random, overrides, message", [
    ([], [], 0, [], "nothing to sweep"),
    (["train.lr"], [], 0, [], "expected KEY=V1,V2"),
    (["train.lr=0.1,0.1"], [], 0, [], "listed twice"),
    ([], ["train.lr=1:0.1"], 3, [], "LOW must be below HIGH"),
    ([], ["train.lr=0:1:log"], 3, [], "above 0 for :log"),
    ([], ["train.lr=1e-3:1e-1"], 0, [], "add --random N"),
    (["train.lr=0.1,0.2"], [], 0, ["train.lr=0.3"], "both swept and --set"),
])
def test_bad_options_say_what_to_fix(grid, ranges, random, overrides, message):
    with pytest.raises(SweepError, match=message):
        make_spec(QUICKSTART, grid, ranges, random, overrides=overrides)


def test_a_trial_recipe_is_checked_before_anything_starts(repo, monkeypatch):
    monkeypatch.chdir(repo)
    with pytest.raises(SweepError, match=r"trial lrr=0.1: .*unknown key 'train.lrr'. Did you mean 'train.lr'"):
        make_trials(make_spec(QUICKSTART, ["train.lrr=0.1"]))


def test_devices_are_shared_out_in_groups_and_the_cores_split(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    slots = device_slots("0,1,2,3", gpus_per_trial=1)
    assert [(s.gpus, s.cores) for s in slots] == [("0", [0, 1]), ("1", [2, 3]), ("2", [4, 5]), ("3", [6, 7])]
    assert [s.gpus for s in device_slots("0,1,2,3", gpus_per_trial=2)] == ["0,1", "2,3"]
    assert [(s.gpus, s.cores) for s in device_slots(None, parallel=2)] == [(None, [0, 1, 2, 3]), (None, [4, 5, 6, 7])]
    with pytest.raises(SweepError, match="must divide"):
        device_slots("0,1,2", gpus_per_trial=2)
    with pytest.raises(SweepError, match="between 1 and the 2 GPU group"):
        device_slots("0,1", parallel=3)


def test_a_folder_holding_another_sweep_names_what_differs(tmp_path):
    before = make_spec(QUICKSTART, ["train.lr=0.01,0.02"])
    now = make_spec(QUICKSTART, ["train.lr=0.01,0.05"])
    check_same_sweep(tmp_path, {"spec": before.to_dict()}, before)
    with pytest.raises(SweepError, match="sweep.grid.train.lr 0.01,0.02 -> 0.01,0.05.*--fresh"):
        check_same_sweep(tmp_path, {"spec": before.to_dict()}, now)


def test_a_trial_s_outcome_reads_its_exit_status_and_last_error(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("2026-12-02 13:15:28 INFO epoch 1/2\n2026-12-02 13:15:28 ERROR every output of the net had the "
                   "same value: the head is dead. Stopped.\n")
    assert outcome(3, log) == ("failed", "exit 3, stopped by the guard (NaN loss, dead or stalled head): every "
                                         "output of the net had the same value: the head is dead. Stopped.")
    assert outcome(143, log) == ("killed", "stopped by SIGTERM")
    assert outcome(0, log) == ("finished", "")
    assert split_values("[8,15],[10], 0.1") == ["[8,15]", "[10]", "0.1"]
