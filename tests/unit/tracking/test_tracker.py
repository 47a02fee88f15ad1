"""Tracker: runs land in the store; a failing store never raises into training."""
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from research import tracking
from research.paths import REPO
from research.tracking import Tracker


@pytest.fixture
def sqlite_store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_run_round_trip_and_resume(sqlite_store, tmp_path):
    tracker = Tracker.start("exp", "exp 2026 abcd", tags={"recipe": "exp"}, description="`train.py x`")
    assert tracker.enabled
    tracker.log_params({"train.lr": 0.1, "train.lr_steps": [3, 4]})
    tracker.log_metrics({"val/top1": 0.5}, step=1)
    (tmp_path / "a.txt").write_text("hello")
    tracker.log_artifact(tmp_path / "a.txt")
    tracker.end("KILLED")
    client = MlflowClient(sqlite_store)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "KILLED" and run.info.run_name == "exp 2026 abcd"
    assert run.data.params == {"train.lr": "0.1", "train.lr_steps": "[3, 4]"}
    assert run.data.tags["mlflow.note.content"] == "`train.py x`"
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["a.txt"]
    artifact_dir = client.get_experiment(run.info.experiment_id).artifact_location
    assert artifact_dir == str(tmp_path / "exp")       # beside the store, not in the working directory

    resumed = Tracker.resume(tracker.run_id)
    assert client.get_run(tracker.run_id).info.status == "RUNNING"
    assert resumed.logged_steps("val/top1") == {1}
    resumed.log_metrics({"val/top1": 0.6}, step=2)
    resumed.end("FINISHED")
    assert client.get_run(tracker.run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(tracker.run_id, "val/top1")] == [1, 2]


def test_default_store_is_inside_the_repo(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{REPO / 'mlruns' / 'mlflow.db'}"


def test_unreachable_server_gives_a_disabled_tracker(monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")   # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracker = Tracker.start("exp", "name")
    assert not tracker.enabled
    assert "tracking is off" in caplog.text
    tracker.log_metrics({"a": 1.0}, step=1)           # no-ops, no exceptions
    tracker.end("FINISHED")


class FlakyClient:
    """Fails the first `failures` calls, like a locked database or a restarting server."""

    def __init__(self, failures: int):
        self.failures, self.logged = failures, []
        self.lock = threading.Lock()

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("database is locked")
            self.logged.extend((m.key, m.step) for m in metrics)

    def set_terminated(self, run_id, status):
        pass


class BusyClient(FlakyClient):
    """A store that takes each call only once `release` is set (a long write, a locked database)."""

    def __init__(self):
        super().__init__(failures=0)
        self.release = threading.Event()

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self.release.wait(120)          # a deadline, not a measurement: the test sets it once log_metrics returned
        super().log_batch(run_id, metrics, params, tags)


def test_the_loop_s_thread_never_waits_for_the_store():
    client = BusyClient()
    tracker = Tracker(client, "run", "0")
    tracker.log_metrics({"val/top1": 0.5}, step=1)      # returns while the store is busy: queued, not written
    nothing_written_yet = client.logged == []
    client.release.set()
    tracker.end("FINISHED")
    assert nothing_written_yet and client.logged == [("val/top1", 1)]


def test_failures_warn_and_metrics_are_retried(caplog):
    client = FlakyClient(failures=2)
    tracker = Tracker(client, "run", "0")
    tracker.log_metrics({"val/top1": 0.1}, step=1)     # fails, kept
    tracker.log_metrics({"val/top1": 0.2}, step=2)     # retry of 1 fails again; 2 succeeds
    tracker.log_metrics({"val/top1": 0.3}, step=3)     # retry of 1 succeeds, then 3
    tracker.end("FINISHED")
    assert sorted(client.logged) == [("val/top1", 1), ("val/top1", 2), ("val/top1", 3)]
    assert "database is locked" in caplog.text and "training goes on" in caplog.text


def test_system_metrics_continue_after_mlflow_s_monitor_stopped(sqlite_store):
    tracker = Tracker.start("exp", "name")
    tracker.start_system_metrics(every_s=0.2, resumed=False)
    tracker.flush()
    first = tracker._monitor
    first._shutdown_event.set()          # what its thread does after one failed read of the run
    first._process.join(10)
    tracker.monitor_check_s = 0.0
    tracker.log_metrics({"train/loss": 1.0}, step=1)
    tracker.flush()
    assert tracker._monitor is not first and tracker._monitor._process.is_alive()
    time.sleep(1.0)
    tracker.end("FINISHED")
    steps = [m.step for m in MlflowClient(sqlite_store).get_metric_history(tracker.run_id,
                                                                         "system/cpu_utilization_percentage")]
    assert len(steps) >= 2 and len(steps) == len(set(steps))     # the restarted monitor went on counting


def test_runs_of_an_experiment_get_colours_no_other_run_has(sqlite_store):
    # MLflow's UI otherwise colours a run by a hash of its id: runs of one sweep shared a colour in the charts
    trackers = [Tracker.start("exp", f"run {i}") for i in range(3)] + [Tracker.start("other", "run 0")]
    client = MlflowClient(sqlite_store)
    colors = [client.get_run(t.run_id).data.tags["mlflow.runColor"] for t in trackers]
    assert len(set(colors[:3])) == 3 and all(c.startswith("#") and len(c) == 7 for c in colors)
    assert colors[3] == colors[0]                       # another experiment starts its own palette
    given = Tracker.start("exp", "mine", tags={"mlflow.runColor": "#123456"})
    assert client.get_run(given.run_id).data.tags["mlflow.runColor"] == "#123456"
