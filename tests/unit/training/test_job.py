"""A run that raises mid-epoch is marked FAILED in MLflow with its traceback as an artifact, and the
exception reaches the caller."""
import json
from pathlib import Path

import mxnet as mx
import pytest
from helpers import AfterBatches, change_setup
from mlflow.tracking import MlflowClient

from research.config import load_recipe
from research.rundir.lock import RunDirLock
from research.training import job

REPO = Path(__file__).resolve().parents[3]


def disk_error():
    raise OSError("Input/output error while reading the training data")


def test_exception_marks_run_failed_with_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    recipe = load_recipe(REPO / "recipes/smoke/lenet_digits_tiny.yaml", ["tracking.system_metrics=false"])
    change_setup(monkeypatch, lambda setup: setattr(setup, "train_iter", AfterBatches(setup.train_iter, 3, disk_error)))
    run_dir = tmp_path / "run"
    with pytest.raises(OSError, match="Input/output error"):
        job.train(recipe, [mx.cpu()], run_dir, argv=["tools/train.py", "x"])
    assert "Input/output error" in (run_dir / "traceback.txt").read_text()
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "FAILED"
    assert "traceback.txt" in {a.path for a in client.list_artifacts(run_id)}
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    RunDirLock(run_dir).acquire().release()     # released: another owner takes it at once (else RunDirBusy)
