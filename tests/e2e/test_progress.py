"""Progress inside an epoch: status.json, tools/status.py and MLflow iter/ metrics move before the
first epoch ends, and a kill -9 + resume logs no iter/ step twice."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import PYTHON, REPO, make_env, run_tool
from mlflow.tracking import MlflowClient

from research.training.checkpoint import find_latest

SMOKE = "recipes/smoke/lenet_digits_tiny.yaml"
BATCHES = 150                       # per epoch: 9,600 synthetic images at batch 64, a few seconds each
LONG_EPOCHS = ["--set", "data={kind: synthetic, data_shape: [1, 28, 28], num_train: 9600, num_val: 128}",
               "--set", "train.epochs=2", "--set", "train.lr_steps=[]", "--set", "train.log_every=10",
               "--set", "tracking.system_metrics=false"]
pytestmark = pytest.mark.slow


def status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert proc.poll() is None, f"the run ended before {what}:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.1)
    return found


def test_progress_moves_inside_the_epoch_and_resume_logs_no_step_twice(tmp_path, store):
    env, run_dir = make_env(store), tmp_path / "run"
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    proc = subprocess.Popen([PYTHON, str(REPO / "tools/train.py"), SMOKE, "--output", str(run_dir), *LONG_EPOCHS],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # First epoch under way: status.json has the batch, MLflow has iter/ points, no epoch is done.
        first = wait_until(lambda: (s := status(run_dir)).get("batch") and s.get("run_id") and s, proc,
                           "in-epoch status")
        run_id = first["run_id"]
        wait_until(lambda: steps(client, run_id, "iter/loss"), proc, "iter/loss point")
        table = run_tool("status.py", "--root", tmp_path, env=env, check=True).stdout
        now = status(run_dir)
        assert now["epoch"] == 0 and not steps(client, run_id, "val/top1"), "the first epoch ended too soon"
        assert now["batches"] == BATCHES and 0 < now["batch"] < BATCHES and now["step"] == now["batch"]
        assert now["train_loss"] > 0 and now["img_per_s"] > 0
        # the first epoch's pace is the process's start-up's (report.WARMUP_S): no ETA yet, rather than a wrong one
        assert now.get("eta_s") is None, now
        assert "running" in table and "0/2 +" in table, table
        for key in ("iter/lr", "iter/img_per_s"):
            assert steps(client, run_id, key), key
        assert all(step % 10 == 0 for step in steps(client, run_id, "iter/loss"))

        # Second epoch under way, checkpoint of the first on disk: an ETA, then kill -9 with iter/ steps past it.
        wait_until(lambda: max(steps(client, run_id, "iter/loss"), default=0) > BATCHES + 20, proc,
                   "iter/ points in the second epoch")
        now = status(run_dir)
        assert now["epoch"] == 1 and now["eta_s"] >= now["eta_epoch_s"] > 0, now
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    checkpoint_step = find_latest(run_dir / "checkpoints")[1]["state"].step
    before = steps(client, run_id, "iter/loss")
    assert max(before) > checkpoint_step           # the resume trains these steps again

    run_tool("train.py", SMOKE, "--output", run_dir, *LONG_EPOCHS, env=env, check=True)
    for key in ("iter/loss", "iter/lr", "iter/img_per_s"):
        after = steps(client, run_id, key)
        assert len(after) == len(set(after)), (key, sorted(after))
        assert max(after) == 2 * BATCHES, key
    assert status(run_dir)["status"] == "finished"
    run = client.get_run(run_id)
    assert len(run.inputs.dataset_inputs) == 2                 # training and validation, not again on resume
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert model.source_run_id == run_id
