"""A run nobody will restart is settled: status.json and its MLflow run FAILED with the reason, not left RUNNING."""
import json

from mlflow.tracking import MlflowClient

from research.rundir.run_json import write_run_json
from research.rundir.settle import settle_abandoned
from research.rundir.status import Status, write_status
from research.tracking import Tracker


def test_a_killed_run_that_will_not_be_restarted_is_marked_failed_with_the_reason(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = Tracker.start("r", "r")
    tracker.flush()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_run_json(run_dir, tracker.run_id, tracker.experiment_id)
    # The trainer's last status before a kill -9: nothing writes it again.
    write_status(run_dir, Status("running", run_id=tracker.run_id, epoch=2, epochs=4, val_top1=0.5))
    settle_abandoned(run_dir, "a crash loop: 3 restarts in a row without a new checkpoint")
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["status"], status["epoch"], status["val_top1"]) == ("failed", 2, 0.5)
    assert "crash loop" in status["failure"]
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED" and "crash loop" in run.data.tags["failure"]
    write_status(run_dir, Status("finished", run_id=tracker.run_id, epoch=4, epochs=4))
    settle_abandoned(run_dir, "late")                         # a settled run is left as it is
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
