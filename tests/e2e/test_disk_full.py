"""A disk that fills up in the middle of a run, as a user meets it: on a real (small) tmpfs.

The run stops at its next batch with exit status 4, naming the file, the space left and the last good
checkpoint; nothing truncated stays under a real name; MLflow holds only the epochs that were saved and
marks the run FAILED. After space is freed the same command resumes into the same MLflow run.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import mxnet as mx
import pytest
from helpers import PYTHON, REPO, fill, make_env, run_tool
from mlflow.tracking import MlflowClient

from research.training.checkpoint import list_checkpoints, load_checkpoint

SMOKE = "recipes/smoke/lenet_digits_tiny.yaml"
pytestmark = pytest.mark.slow


def no_half_files(run_dir: Path) -> None:
    assert not [p for p in run_dir.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    for path in list_checkpoints(run_dir / "checkpoints"):
        load_checkpoint(path)                                       # verifies length and sha256
    json.loads((run_dir / "status.json").read_text())


def test_disk_full_mid_run_stops_cleanly_then_the_same_command_finishes_one_run(tmp_path, small_disk):
    store = tmp_path / "mlruns"
    env = make_env(store)
    run_dir = small_disk / "run"
    command = [PYTHON, "tools/train.py", SMOKE, "--output", str(run_dir), "--set", "train.epochs=4"]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    # epoch 1 is saved (its step file, then best.ckpt: the first epoch is the best so far): now the disk fills up
    while not (list_checkpoints(run_dir / "checkpoints") and (run_dir / "checkpoints" / "best.ckpt").is_file()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    ballast = fill(small_disk, leave=64 * 1024)
    out, err = proc.communicate(timeout=300)

    assert proc.returncode == 4, out + err
    assert "Traceback" not in err and "Logging error" not in err, err
    assert re.search(r"checkpoint not saved: could not write \S+/checkpoints/step-\d+\.ckpt: No space left on device "
                     r"\(\d+ KB free on the disk holding \S+\); free space there", err), err
    good = re.search(r"the last good checkpoint is \S+ \(epoch (\d), step \d+\)", err)
    assert good, err
    assert f"python tools/train.py {SMOKE} --output {run_dir} --set train.epochs=4 --resume" in err
    no_half_files(run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["status"], status["epoch"]) == ("failed", int(good.group(1)))      # the epoch saved, no more
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lenet_digits_tiny").experiment_id])
    assert run.info.status == "FAILED"
    saved = int(good.group(1))
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/top1")) == list(range(1, saved + 1))

    ballast.unlink()                                               # the user frees space and reruns
    again = run_tool("train.py", SMOKE, "--output", run_dir, "--set", "train.epochs=4", env=env, check=True)
    assert "resuming from" in again.stderr
    no_half_files(run_dir)
    (run,) = client.search_runs([client.get_experiment_by_name("lenet_digits_tiny").experiment_id])
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/top1")) == [1, 2, 3, 4]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    assert mx.nd.load(str(run_dir / "model" / "lenet-0000.params"))

