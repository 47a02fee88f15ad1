"""The lifecycle's edges: a run nobody will restart is settled, not left RUNNING; the resume hint of a launched run."""
import json

from mlflow.tracking import MlflowClient

from research.cli import RESUME_COMMAND_ENV
from research.config import recipe_from_dict
from research.tracking import Tracker
from research.training.lifecycle import Lifecycle, settle_abandoned
from research.training.run_dir import write_run_json, write_status

RECIPE = {"name": "r", "net": {"name": "lenet", "classes": 10}, "data": {"kind": "digits"},
          "train": {"epochs": 4, "lr": 0.1, "batch_size": 64}}


def test_a_killed_run_that_will_not_be_restarted_is_marked_failed_with_the_reason(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = Tracker.start("r", "r")
    tracker.flush()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_run_json(run_dir, tracker.run_id, tracker.experiment_id)
    write_status(run_dir, "running", tracker.run_id, epoch=2, epochs=4, val_top1=0.5)   # then kill -9: no more
    settle_abandoned(run_dir, "a crash loop: 3 restarts in a row without a new checkpoint")
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["status"], status["epoch"], status["val_top1"]) == ("failed", 2, 0.5)
    assert "crash loop" in status["failure"]
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED" and "crash loop" in run.data.tags["failure"]
    write_status(run_dir, "finished", tracker.run_id, epoch=4, epochs=4)
    settle_abandoned(run_dir, "late")                         # a settled run is left as it is
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"


def test_the_resume_hint_is_the_launch_command_when_tools_launch_started_the_run(tmp_path, monkeypatch):
    run = Lifecycle(tmp_path, recipe_from_dict(RECIPE), ["tools/train.py", "r.yaml", "--fresh"])
    assert run.resume_command() == "python tools/train.py r.yaml --resume"
    monkeypatch.setenv(RESUME_COMMAND_ENV, "python tools/launch.py r.yaml --keep-alive")
    assert run.resume_command() == "python tools/launch.py r.yaml --keep-alive"
