"""A run that raises mid-epoch is marked FAILED in MLflow with its traceback as an artifact."""
import signal
from pathlib import Path

import mxnet as mx
import pytest
from helpers import AfterBatches
from mlflow.tracking import MlflowClient

from research.config import load_recipe
from research.tracking import start_run
from research.training import trainer as run
from research.training.kvstore import create_kvstore
from research.training.checkpoint import TrainState

REPO = Path(__file__).resolve().parents[3]


def disk_error():
    raise OSError("Input/output error while reading the training data")


def test_exception_marks_run_failed_with_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    recipe = load_recipe(REPO / "recipes/smoke/lenet_digits_tiny.yaml")
    setup = run.build_setup(recipe, [mx.cpu()], tmp_path / "run", create_kvstore(recipe.train.kvstore))
    setup.train_iter = AfterBatches(setup.train_iter, 3, disk_error)
    state = TrainState(recipe=recipe.to_dict())
    tracker = start_run(recipe, [mx.cpu()], ["tools/train.py", "x"])
    (tmp_path / "run").mkdir(exist_ok=True)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with pytest.raises(OSError, match="Input/output error"):
            run._run_loop(setup, state, tracker, ["tools/train.py", "x"])
    finally:                                 # the run installed its own; give pytest back Ctrl-C
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert "Input/output error" in (tmp_path / "run" / "traceback.txt").read_text()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(tracker.run_id).info.status == "FAILED"
    assert "traceback.txt" in {a.path for a in client.list_artifacts(tracker.run_id)}
    assert '"status": "failed"' in (tmp_path / "run" / "status.json").read_text()
