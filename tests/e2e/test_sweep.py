"""tools/sweep.py as a user runs it: a 2 x 2 grid, two trials at a time, grouped in MLflow; a trial whose head
dies is reported failed while the others finish; kill -9 of a detached sweep, then the same command continues it."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, needs_tmux, read_status, run_tool, wait_for
from mlflow.tracking import MlflowClient

import research

SMOKE = "recipes/smoke/lenet_digits_tiny.yaml"


def sweep_runs(store: Path) -> tuple[MlflowClient, object, list]:
    """The parent run and its children: every run of the experiment is one or the other."""
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("lenet_digits_tiny").experiment_id])
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) + 1 == len(runs), [run.info.run_name for run in runs]
    return client, parent, children


def test_grid_of_four_two_at_a_time_with_a_dead_head(tmp_path, store, env, monkeypatch):
    # lr 2 kills LeNet's head in its first epoch (every output constant): those two trials fail, the others finish.
    args = [SMOKE, "--grid", "train.lr=0.02,2", "--grid", "train.momentum=0.9,0.8", "--set", "train.epochs=2",
            "--set", "train.lr_steps=[1]", "--parallel", "2", "--output", tmp_path / "sweep"]
    proc = run_tool("sweep.py", *args, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 at a time" in proc.stdout
    assert "2 failed:" in proc.stdout and proc.stdout.count("dead head (rule: every output constant)") >= 2      # which, and why

    client, parent, children = sweep_runs(store)
    assert len(children) == 4 and parent.info.status == "FINISHED"
    by_name = {run.info.run_name: run for run in children}
    # named short enough for the runs table's Run Name column ('mom' for momentum); the tag keeps the trial's name
    assert set(by_name) == {f"lr={lr} mom={m}" for lr in ("0.02", "2") for m in ("0.9", "0.8")}
    assert {run.data.tags["sweep.trial"] for run in children} == \
        {f"lr={lr} momentum={m}" for lr in ("0.02", "2") for m in ("0.9", "0.8")}
    assert len({run.data.tags["mlflow.runColor"] for run in children + [parent]}) == 5     # a colour each
    for name, run in by_name.items():
        lr, momentum = (part.split("=")[1] for part in name.split())
        assert (float(run.data.params["train.lr"]), float(run.data.params["train.momentum"])) == \
            (float(lr), float(momentum))                                 # the params are the recipe's floats
        assert run.info.status == ("FAILED" if lr == "2" else "FINISHED"), name
        assert run.data.tags["run_dir"].startswith(str(tmp_path / "sweep"))
    learned = {name: max(m.value for m in client.get_metric_history(run.info.run_id, "val/top1"))
               for name, run in by_name.items() if name.startswith("lr=0.02")}
    best = max(learned, key=learned.get)
    assert parent.data.tags["best.trial"] == by_name[best].data.tags["sweep.trial"]
    assert parent.data.tags["best.run_id"] == by_name[best].info.run_id
    assert parent.data.metrics["best/val/top1"] == learned[best] > 0.3          # chance is 0.1
    assert parent.data.params["sweep.grid.train.lr"] == "0.02,2" and "dead head" in parent.data.tags["sweep.failed"]
    assert {"summary.md", "summary.csv", "sweep.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert f"best: {parent.data.tags['best.trial']}" in proc.stdout and "workflowType=machine_learning" in proc.stdout

    table = run_tool("compare.py", "--experiment", "lenet_digits_tiny", "--format", "csv", env=env, check=True).stdout
    compared = list(csv.DictReader(io.StringIO(table)))            # the trials, not the parent that trained nothing
    assert sorted(row["name"] for row in compared) == sorted(by_name) and compared[0]["run_dir"].startswith(str(tmp_path))
    rows = {row["name"]: row for row in json.loads(run_tool("status.py", "--root", tmp_path, "--format", "json",
                                                            env=env, check=True).stdout)}
    assert (rows["sweep"]["kind"], rows["sweep"]["trials_done"], rows["sweep"]["state"]) == ("sweep", 4, "finished")
    assert rows["sweep/lr-2_momentum-0.9"]["state"] == "failed"

    # The same command again trains nothing: the finished trials are kept, the dead heads not retried.
    again = run_tool("sweep.py", *args, env=env, timeout=120, check=True)
    assert "2 finished, 2 failed (not trained again), 0 to resume, 0 to start" in again.stdout
    _, parent_again, children_again = sweep_runs(store)
    assert parent_again.info.run_id == parent.info.run_id and len(children_again) == 4
    # research.sweep is the same from a notebook: the same spec finds the same sweep.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    result = research.sweep(SMOKE, grid={"train.lr": [0.02, 2], "train.momentum": [0.9, 0.8]},
                            overrides={"train.epochs": 2, "train.lr_steps": [1]}, parallel=2, output=tmp_path / "sweep")
    assert result.best["trial"] == parent.data.tags["best.trial"] and result.parent_run_id == parent.info.run_id


@pytest.mark.slow          # about 50-70 s: four trials of 6 epochs, two at a time, stopped once
@needs_tmux
def test_detached_sweep_killed_with_9_continues_with_the_same_command(tmp_path, tmux_env):
    env, sweep_dir = tmux_env, tmp_path / "sweep"
    args = [SMOKE, "--grid", "train.lr=0.02,0.05", "--grid", "train.momentum=0.9,0.8", "--set", "train.epochs=6",
            "--parallel", "2", "--output", sweep_dir]
    started = run_tool("sweep.py", *args, "--detach", env=env, timeout=120, check=True)
    assert f"tmux -L {env['RESEARCH_TMUX_SOCKET']} attach -t sweep" in started.stdout
    # The grid's order: lr 0.02 with momentum 0.9 then 0.8, then lr 0.05. Kill the sweep once the first two
    # have finished and the last two have a checkpoint.
    trials = {f"lr=0.05 momentum={m}": sweep_dir / f"lr-0.05_momentum-{m}" for m in ("0.9", "0.8")}
    wait_for(lambda: all(any((d / "checkpoints").glob("step-*.ckpt")) for d in trials.values()), 240,
             "the last two trials' first checkpoints", sweep_dir)
    os.kill(read_status(sweep_dir)["pid"], signal.SIGKILL)
    state = json.loads((sweep_dir / "sweep.json").read_text())
    finished_before = {name: entry["run_id"] for name, entry in state["trials"].items()
                       if entry.get("state") == "finished"}
    assert len(finished_before) == 2, state["trials"]
    subprocess.run(["tmux", "-L", env["RESEARCH_TMUX_SOCKET"], "kill-server"], capture_output=True)

    # The same command again (in the foreground now): the trials killed mid-run resume, the finished ones stay.
    proc = run_tool("sweep.py", *args, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 finished, 2 to resume, 0 to start" in proc.stdout
    client, parent, children = sweep_runs(tmp_path / "mlruns")
    assert parent.info.run_id == state["parent_run_id"] and parent.info.status == "FINISHED"
    assert len(children) == 4 and all(run.info.status == "FINISHED" for run in children)
    by_name = {run.data.tags["sweep.trial"]: run for run in children}
    for name, run_id in finished_before.items():
        assert by_name[name].info.run_id == run_id
    for run_dir in trials.values():
        assert "resuming from" in (run_dir / "train.log").read_text()
    for run in children:               # every epoch logged once, resumed or not
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/top1")) == [1, 2, 3, 4, 5, 6]
    assert parent.data.tags["best.trial"] in by_name


def test_a_sweep_without_output_goes_under_the_runs_root_and_an_old_folder_name_continues(tmp_path, env, monkeypatch):
    # The README's sweep has no --output: its folder is runs/<recipe>-sweep-<keys>/ (here a temporary runs root).
    monkeypatch.setattr("research.sweeps.spec.RUNS", tmp_path / "runs")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    recipe, overrides = REPO / SMOKE, {"train.epochs": 2, "train.lr_steps": [1]}
    result = research.sweep(recipe, grid={"train.lr": [0.02]}, overrides=overrides)
    sweep_dir = tmp_path / "runs" / "lenet_digits_tiny-sweep-lr"
    assert result.sweep_dir == sweep_dir and result.best["trial"] == "lr=0.02"
    assert json.loads((sweep_dir / "lr-0.02" / "status.json").read_text())["status"] == "finished"

    # A sweep begun by an earlier version (no study) named its trials' folders key=value,...: the same call
    # continues it there.
    (sweep_dir / "study.db").unlink()
    (sweep_dir / "lr-0.02").rename(sweep_dir / "lr=0.02")
    state = json.loads((sweep_dir / "sweep.json").read_text())
    state["trials"]["lr=0.02"]["folder"] = "lr=0.02"
    (sweep_dir / "sweep.json").write_text(json.dumps(state))
    again = research.sweep(recipe, grid={"train.lr": [0.02]}, overrides=overrides)
    assert again.best["run_dir"] == str(sweep_dir / "lr=0.02") and not (sweep_dir / "lr-0.02").exists()
    assert "lr=0.02: finished before (its folder says so), not trained again" in (sweep_dir / "sweep.log").read_text()


def test_a_pruned_sweep_stops_the_trial_that_barely_moves_after_its_checkpoint(tmp_path, store, env):
    # lr 0.0002 barely moves LeNet in an epoch: once lr 0.05 and 0.02 have finished (one trial at a time), the
    # median pruner stops it at the end of its first epoch (the warm-up), where the other two were far ahead.
    # A pruned grid runs in an order shuffled by --seed: seed 4 gives 0.05, 0.02, 0.0002.
    sweep_dir = tmp_path / "sweep"
    args = [SMOKE, "--grid", "train.lr=0.0002,0.02,0.05", "--prune", "median", "--prune-warmup", "1", "--seed", "4",
            "--output", sweep_dir]
    proc = run_tool("sweep.py", *args, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    started = [line.split(": started")[0].rsplit(" ", 1)[1] for line in proc.stdout.splitlines() if ": started" in line]
    assert started == ["lr=0.05", "lr=0.02", "lr=0.0002"]
    assert "1 pruned:\n  lr=0.0002: at epoch 1: best val/top1" in proc.stdout
    assert "epochs trained: 9, against 12 for the same trials unpruned (75%)" in proc.stdout

    pruned = sweep_dir / "lr-0.0002"
    entry = json.loads((sweep_dir / "sweep.json").read_text())["trials"]["lr=0.0002"]
    assert (entry["state"], entry["pruned_at_epoch"], entry["exit_code"]) == ("pruned", 1, 5)
    assert "below the median" in entry["reason"]
    from research.training.checkpoint import find_latest
    assert find_latest(pruned / "checkpoints")[1]["state"].epoch == 1          # its checkpoint: epoch 1, kept
    client, parent, children = sweep_runs(store)
    (run,) = [r for r in children if r.info.run_name == "lr=0.0002"]
    assert run.info.status == "FINISHED" and run.data.tags["sweep.pruned_at_epoch"] == "1"
    assert "below the median" in run.data.tags["sweep.pruned_against"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/top1")] == [1]
    assert parent.data.tags["best.trial"] in ("lr=0.05", "lr=0.02") and "lr=0.0002" in parent.data.tags["sweep.pruned"]
    assert parent.data.metrics["epochs/trained"] == 9 and parent.data.metrics["epochs/unpruned"] == 12
    rows = {row["name"]: row for row in json.loads(run_tool("status.py", "--root", tmp_path, "--format", "json",
                                                            env=env, check=True).stdout)}
    assert rows["sweep/lr-0.0002"]["state"] == "pruned" and "below the median" in rows["sweep/lr-0.0002"]["pruned"]
    compared = run_tool("compare.py", "--experiment", "lenet_digits_tiny", env=env, check=True).stdout
    assert "PRUNED@1" in compared

    # The trial's own command does not quietly train it on; the sweep's command again trains nothing.
    own = run_tool("train.py", SMOKE, "--set", "train.lr=0.0002", "--output", pruned, env=env, timeout=120)
    assert own.returncode == 5 and "--resume to train it on anyway" in own.stdout
    again = run_tool("sweep.py", *args, env=env, timeout=120, check=True)
    assert "2 finished, 1 pruned, 0 to resume, 0 to start" in again.stdout
