"""The trainer's report: the first estimate, one remaining time in the log, status.json and MLflow, and
the data-wait warning."""
import logging
import re
from types import SimpleNamespace

import pytest

from research.durations import format_duration
from research.training import report as report_module
from research.training.report import Report


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTracker:
    def __init__(self):
        self.tags, self.metrics = {}, []

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_metrics(self, metrics, step, tags=None, after=None):
        self.metrics.append((step, metrics))
        self.tags.update(tags or {})


class FakeRun:
    """The Lifecycle's side the report uses: its figures and status.json."""
    def __init__(self):
        self.figures, self.statuses = {}, []

    def write_status(self, status, **figures):
        self.statuses.append({"status": status, **figures})


def drive(monkeypatch, wait_per_interval: float, intervals: int = 3, batches: int = 10, batch_s: float = 1.0,
          **options):
    """An epoch of `intervals` log intervals of `batches` batches, each `batch_s` long; after each
    interval's sync the next batch takes `wait_per_interval` seconds to arrive."""
    clock, tracker, run = Clock(), FakeTracker(), FakeRun()
    monkeypatch.setattr(report_module.time, "monotonic", clock)
    state = SimpleNamespace(batch_in_epoch=0, epoch=0, step=0, history=[], elapsed_s=0.0)
    report = Report(run, tracker, state, epochs=10, steps_per_epoch=intervals * batches, local_batch=128, **options)
    report.start_epoch(0)
    start = clock.now
    for _ in range(intervals):
        for i in range(batches):
            if i == 0:
                clock.now += wait_per_interval        # the batch after the sync
            report.batch_arrived()
            clock.now += batch_s - (wait_per_interval if i == 0 else 0)
            state.batch_in_epoch += 1
            state.step += 1
            report.advance()
        report.interval(128 * state.batch_in_epoch, clock.now - start, loss=2.0, lr=0.1)
        report.synced()
    return report, tracker, run, state


def test_a_short_first_epoch_is_start_up_and_gives_no_estimate(monkeypatch, caplog):
    # The quickstart's first epoch took 12-46 s, the next ones 1-2 s: its pace said a run ETA 5-8 times the real one
    caplog.set_level(logging.INFO, "research.training")
    report, tracker, run, state = drive(monkeypatch, wait_per_interval=0.0)         # 30 s: under WARMUP_S
    assert "pace:" not in caplog.text and run.statuses[-1]["eta_s"] is None and "pace.eta_s" not in tracker.tags
    state.history, state.elapsed_s, state.epoch, state.batch_in_epoch = [{"time/epoch_s": 30.0}], 30.0, 1, 0
    metrics = {"train/loss": 1.0, "train/top1": 0.5, "val/loss": 1.1, "val/top1": 0.4, "val/top5": 0.9, "lr": 0.1,
               "speed/img_per_s": 128.0}
    report.end_epoch(metrics, 30.0)
    assert re.search(r"epoch 1/10 .* ETA estimating$", caplog.text.splitlines()[-1])
    report.start_epoch(1)                                  # the second epoch's pace is what an epoch costs
    report.interval(128 * 10, 2.0, loss=1.0, lr=0.1)
    state.batch_in_epoch = 20
    report.interval(128 * 20, 4.0, loss=1.0, lr=0.1)
    assert "pace: epoch 6s, run ETA 50s for 10 epochs (estimated from batches 11-20" in caplog.text   # 2 s + 8 x 6 s
    state.history.append({"time/epoch_s": 6.5})
    state.elapsed_s, state.epoch, state.batch_in_epoch = 36.5, 2, 0
    report.end_epoch(metrics, 6.5)
    assert tracker.tags["pace.epoch_s"] == "6" and tracker.tags["pace.basis"] == "measured: mean of 1 epoch(s)"


def test_first_estimate_and_one_remaining_time_everywhere(monkeypatch, caplog):
    caplog.set_level(logging.INFO, "research.training")
    report, tracker, run, state = drive(monkeypatch, wait_per_interval=0.0, batch_s=3.0)
    # 30 batches an epoch at 3 s each: 90 s an epoch, past WARMUP_S by batch 20; then 10 x 3 s of it + 9 x 90 s
    assert "pace: epoch 1m30s, run ETA 14m00s for 10 epochs (estimated from batches 11-20 at 43 img/s" in caplog.text
    assert "waited on data" not in caplog.text and report.epoch_wait_share() == 0.0
    # at the last interval (batch 30: the epoch's batches done) status.json and the tags say the same
    last = run.statuses[-1]
    assert last["status"] == "running" and last["batch"] == 30 and last["eta_epoch_s"] == 0
    assert last["eta_s"] == pytest.approx(9 * 90) and tracker.tags["pace.eta_s"] == "810"
    assert tracker.tags["pace.epoch_s"] == "90" and "estimated" in tracker.tags["pace.basis"]
    assert [step for step, _ in tracker.metrics] == [10, 20, 30]


def test_the_epoch_line_status_and_tags_agree_once_the_epoch_is_measured(monkeypatch, caplog):
    caplog.set_level(logging.INFO, "research.training")
    report, tracker, run, state = drive(monkeypatch, wait_per_interval=0.0)
    state.history, state.elapsed_s, state.epoch, state.batch_in_epoch = [{}, {}], 70.0, 2, 0   # two epochs of 35 s
    metrics = {"train/loss": 1.0, "train/top1": 0.5, "val/loss": 1.1, "val/top1": 0.4, "val/top5": 0.9, "lr": 0.1,
               "speed/img_per_s": 128.0}
    report.end_epoch(metrics, 35.0)
    eta = run.statuses[-1]["eta_s"]
    assert eta == pytest.approx(8 * 35)
    assert tracker.tags["pace.eta_s"] == str(8 * 35) and tracker.tags["pace.epoch_s"] == "35"
    assert tracker.tags["pace.basis"] == "measured: mean of 2 epoch(s)"
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 2/10"))
    assert re.search(rf"ETA {format_duration(eta)}$", line), line


def test_devices_waiting_on_data_warn_once_an_epoch(monkeypatch, caplog):
    report, _, _, _ = drive(monkeypatch, wait_per_interval=0.4)
    warnings = [r for r in caplog.records if "waited on data" in r.getMessage()]
    assert len(warnings) == 1 and "about 40% of the last 10 batches" in warnings[0].getMessage()
    assert report.epoch_wait_share() == pytest.approx(0.4)


def test_in_memory_data_measures_the_wait_but_does_not_ask_for_decoders(monkeypatch, caplog):
    report, _, _, _ = drive(monkeypatch, wait_per_interval=0.4, warn_data_wait=False)
    assert "waited on data" not in caplog.text
    assert abs(report.epoch_wait_share() - 0.4) < 1e-6      # still logged as time/data_wait


def test_a_resumed_run_states_its_measured_pace_at_once(caplog):
    caplog.set_level(logging.INFO, "research.training")
    tracker, run = FakeTracker(), FakeRun()
    state = SimpleNamespace(batch_in_epoch=0, epoch=4, step=400, history=[{}] * 4, elapsed_s=400.0)
    Report(run, tracker, state, epochs=10, steps_per_epoch=100, local_batch=32)
    assert "pace: epoch 1m40s, run ETA 10m00s for 10 epochs (measured: mean of 4 epoch(s) so far)" in caplog.text
    assert tracker.tags["pace.eta_s"] == "600"
