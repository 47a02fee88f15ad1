"""Multi-day survival with real processes: kill -9, SIGTERM, SIGHUP, a truncated checkpoint."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import PYTHON, REPO, make_env, run_tool, run_tool_killed_at
from mlflow.tracking import MlflowClient

from research.training.checkpoint import find_latest, list_checkpoints, load_checkpoint

SMOKE = "recipes/smoke/lenet_digits_tiny.yaml"
EPOCHS = ["--set", "train.epochs=6", "--set", "train.lr_steps=[4]"]
pytestmark = pytest.mark.slow


def start(run_dir: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, str(REPO / "tools/train.py"), SMOKE, "--output", str(run_dir), *EPOCHS, *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoints(run_dir: Path, count: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(list_checkpoints(run_dir / "checkpoints")) < count:
        assert proc.poll() is None, f"run ended early:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def final_params(run_dir: Path) -> dict[str, np.ndarray]:
    path, content = find_latest(run_dir / "checkpoints")
    return content["params"]


def only_run(store: Path):
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lenet_digits_tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, np.ndarray]:
    tmp = tmp_path_factory.mktemp("reference")
    run_tool("train.py", SMOKE, "--output", tmp / "run", *EPOCHS, env=make_env(tmp), check=True)
    return final_params(tmp / "run")


def assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_kill_9_then_rerun_resumes_same_run_and_matches_uninterrupted(tmp_path, store, uninterrupted):
    env = make_env(store)
    proc = start(tmp_path / "run", env)
    wait_for_checkpoints(tmp_path / "run", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    client, run = only_run(store)
    assert run.info.status == "RUNNING"              # SIGKILL leaves it so; the resume fixes it

    resumed = run_tool("train.py", SMOKE, "--output", tmp_path / "run", *EPOCHS, env=env, check=True)
    assert "resuming from" in resumed.stdout + resumed.stderr
    client, run_after = only_run(store)
    assert run_after.info.run_id == run.info.run_id and run_after.info.status == "FINISHED"
    for key in ("val/top1", "train/loss", "lr"):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps == [1, 2, 3, 4, 5, 6], (key, steps)      # no gap, no duplicate
    assert_same_params(final_params(tmp_path / "run"), uninterrupted)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_signal_checkpoints_marks_killed_and_resumes(tmp_path, store, uninterrupted, sig, code):
    env = make_env(store)
    proc = start(tmp_path / "run", env)
    wait_for_checkpoints(tmp_path / "run", 1, proc)
    time.sleep(0.3)                                   # mid-epoch, most likely
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, output
    assert "--resume" in output                        # tells how to resume
    client, run = only_run(store)
    assert run.info.status == "KILLED"
    newest = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])["state"]

    run_tool("train.py", SMOKE, "--output", tmp_path / "run", *EPOCHS, "--resume", env=env, check=True)
    client, run_after = only_run(store)
    assert run_after.info.run_id == run.info.run_id and run_after.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/top1")) == [1, 2, 3, 4, 5, 6]
    assert newest.step > 0
    # LeNet draws no random numbers in training, and the data order is fixed per epoch:
    # a mid-epoch resume continues the exact sequence of updates.
    assert_same_params(final_params(tmp_path / "run"), uninterrupted)


def test_truncated_newest_checkpoint_is_skipped(tmp_path, store):
    env = make_env(store)
    proc = start(tmp_path / "run", env)
    wait_for_checkpoints(tmp_path / "run", 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    checkpoints = list_checkpoints(tmp_path / "run" / "checkpoints")
    newest = checkpoints[-1]
    newest.write_bytes(newest.read_bytes()[:1000])       # as a crash during a copy would leave it
    resumed = run_tool("train.py", SMOKE, "--output", tmp_path / "run", *EPOCHS, env=env, check=True)
    log = resumed.stdout + resumed.stderr
    assert f"skipping checkpoint: {newest} is truncated" in log
    assert f"resuming from {checkpoints[-2]}" in log
    client, run = only_run(store)
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/top1")) == [1, 2, 3, 4, 5, 6]


def test_resume_flag_without_checkpoint_is_a_user_error(tmp_path, env):
    proc = run_tool("train.py", SMOKE, "--output", tmp_path / "run", "--resume", env=env)
    assert proc.returncode == 2 and "no valid checkpoint" in proc.stderr


def test_fresh_sets_the_old_run_aside(tmp_path, env):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train.log").write_text("old")
    run_tool("train.py", SMOKE, "--output", tmp_path / "run", "--fresh", "--set", "train.epochs=1",
             "--set", "train.lr_steps=[]", env=env, check=True)
    aside = list(tmp_path.glob("run.old-*"))
    assert len(aside) == 1 and (aside[0] / "train.log").read_text() == "old"


def test_resume_with_a_recipe_change_that_alters_a_shape_names_the_key(tmp_path, env):
    one_epoch = ["--set", "train.epochs=1", "--set", "train.lr_steps=[]"]
    run_tool("train.py", SMOKE, "--output", tmp_path / "run", *one_epoch, env=env, check=True)
    # other values than the folder's run: refused before anything loads, naming them and the ways forward
    proc = run_tool("train.py", SMOKE, "--output", tmp_path / "run", *one_epoch, "--set", "data.size=32", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "other values: data.size 28 -> 32" in error and "--fresh" in error
    # --resume continues it with them: the checkpoint's weights no longer fit, and the error says which key
    proc = run_tool("train.py", SMOKE, "--output", tmp_path / "run", *one_epoch, "--set", "data.size=32", "--resume",
                    env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]          # after the log's "resuming from" line
    assert error.startswith("error: ") and "Keys changed since: data.size 28 -> 32" in error and "--fresh" in error


# The recipe both fixtures below were written with, and the thread count.
FIXTURE_ARGS = [SMOKE, "--set", "data.size=16", "--set", "train.epochs=3", "--set", "train.lr_steps=[2]",
                "--set", "checkpoint.keep_last=1", "--set", "tracking.enabled=false", "--set", "train.log_every=2"]


def test_a_run_directory_from_before_the_training_package_moved_resumes(tmp_path):
    """tests/fixtures/run_before_layout was stopped by SIGTERM in epoch 2 by commit 8ae53b1 (research/train/,
    before research/training/): today's trainer resumes it and ends where an uninterrupted run ends."""
    args = FIXTURE_ARGS
    env = make_env(tmp_path, OMP_NUM_THREADS="1")          # the thread count the fixture was written with
    shutil.copytree(REPO / "tests/fixtures/run_before_layout", tmp_path / "old")
    resumed = run_tool("train.py", *args, "--output", tmp_path / "old", env=env, check=True)
    assert "resuming from" in resumed.stderr and "(epoch 1, step 26)" in resumed.stderr
    run_tool("train.py", *args, "--output", tmp_path / "new", env=env, check=True)
    assert_same_params(final_params(tmp_path / "old"), final_params(tmp_path / "new"))
    assert '"status": "finished"' in (tmp_path / "old" / "status.json").read_text()


def test_a_supervised_run_directory_from_before_the_run_directory_had_one_owner_is_shown_and_resumes(tmp_path):
    """tests/fixtures/run_before_rundir was written by commit ae9eb69 (before research/rundir/): a run under the
    keep-alive supervisor that stopped on SIGTERM at batch 6 of epoch 2, its status.json, run.json, keep-alive.json
    and console.log as that code wrote them. tools/status.py shows it, and today's trainer resumes it and ends
    where an uninterrupted run ends."""
    env = make_env(tmp_path, OMP_NUM_THREADS="1")
    shutil.copytree(REPO / "tests/fixtures/run_before_rundir", tmp_path / "runs" / "old")
    listed = run_tool("status.py", "--root", tmp_path / "runs", "--format", "json", env=env, check=True)
    [row] = json.loads(listed.stdout)
    assert (row["name"], row["state"], row["epoch"], row["epochs"], row["restarts"]) == ("old", "killed", 1, 3, 0)
    assert abs(row["val_top1"] - 0.7306) < 1e-4
    resumed = run_tool("train.py", *FIXTURE_ARGS, "--output", tmp_path / "runs" / "old", env=env, check=True)
    assert "resuming from" in resumed.stderr and "(epoch 1, step 28)" in resumed.stderr
    run_tool("train.py", *FIXTURE_ARGS, "--output", tmp_path / "new", env=env, check=True)
    assert_same_params(final_params(tmp_path / "runs" / "old"), final_params(tmp_path / "new"))
    assert '"status": "finished"' in (tmp_path / "runs" / "old" / "status.json").read_text()


# Inside the first checkpoint's write: its temp file is fsynced, its rename not done yet; MLflow has the run
# (run.json names it) and no epoch.
INSIDE_FIRST_CHECKPOINT = """
import research.atomic as atomic
rename = atomic.os.replace
def replace_or_die(src, dst):
    if os.path.basename(dst).startswith("step-"):
        die()
    rename(src, dst)
atomic.os.replace = replace_or_die
"""
# Right after the final epoch's checkpoint is on disk, before MLflow gets that epoch, the model or the end.
AFTER_THE_LAST_CHECKPOINT = """
from research.training import checkpoint
write = checkpoint.write_checkpoint
def write_then_die(folder, step, content, *args, **kwargs):
    path = write(folder, step, content, *args, **kwargs)
    if content["state"]["epoch"] == content["state"]["recipe"]["train"]["epochs"]:
        die()
    return path
checkpoint.write_checkpoint = write_then_die
"""


def test_killed_inside_the_first_checkpoint_write_reruns_in_the_same_mlflow_run(tmp_path, store, uninterrupted):
    env, run_dir = make_env(store), tmp_path / "run"
    killed = run_tool_killed_at("train.py", SMOKE, "--output", run_dir, *EPOCHS, env=env, patch=INSIDE_FIRST_CHECKPOINT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _, run = only_run(store)
    assert run.info.status == "RUNNING" and not list_checkpoints(run_dir / "checkpoints")
    left = list((run_dir / "checkpoints").glob(".step-*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size > 0                  # the cut write's temp file
    (run_dir / ".status.json.abcd1234.tmp").write_text("{")                 # and others a kill could leave
    (run_dir / ".model.abcd1234.tmp").mkdir()

    rerun = run_tool("train.py", SMOKE, "--output", run_dir, *EPOCHS, env=env, check=True)
    removed = next(line for line in rerun.stderr.splitlines() if "left by a write that was cut short" in line)
    assert ".status.json.abcd1234.tmp" in removed and ".model.abcd1234.tmp" in removed, removed
    client, after = only_run(store)                                          # no orphan: the same run, finished
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/top1")) == [1, 2, 3, 4, 5, 6]
    assert not [p for p in run_dir.rglob(".*") if p.name.endswith((".tmp", ".old"))]
    assert_same_params(final_params(run_dir), uninterrupted)


def test_killed_after_the_last_checkpoint_the_rerun_finishes_the_run(tmp_path, store, uninterrupted):
    env, run_dir = make_env(store), tmp_path / "run"
    killed = run_tool_killed_at("train.py", SMOKE, "--output", run_dir, *EPOCHS, env=env,
                                patch=AFTER_THE_LAST_CHECKPOINT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    client, run = only_run(store)
    assert 6 not in {m.step for m in client.get_metric_history(run.info.run_id, "val/top1")}
    assert not (run_dir / "model").exists() and '"status": "running"' in (run_dir / "status.json").read_text()

    rerun = run_tool("train.py", SMOKE, "--output", run_dir, *EPOCHS, env=env, check=True)
    assert "already holds the finished run" not in rerun.stdout
    client, after = only_run(store)
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/top1")) == [1, 2, 3, 4, 5, 6]
    assert (run_dir / "model" / "lenet-0000.params").is_file()
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert model.source_run_id == run.info.run_id
    assert '"status": "finished"' in (run_dir / "status.json").read_text()
    assert_same_params(final_params(run_dir), uninterrupted)
    again = run_tool("train.py", SMOKE, "--output", run_dir, *EPOCHS, env=env, check=True)
    assert "already holds the finished run (6 epochs)" in again.stdout
    assert only_run(store)[1].info.end_time == after.info.end_time          # left as it was
