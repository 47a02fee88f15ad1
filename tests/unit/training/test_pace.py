"""The trainer's pace figures: first estimate, ETA tags, and the data-wait warning."""
import logging
from types import SimpleNamespace

import pytest

from research.training import pace as pace_module
from research.training.pace import Pace


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Tags:
    def __init__(self):
        self.tags = {}

    def set_tags(self, tags):
        self.tags.update(tags)


def drive(monkeypatch, wait_per_interval: float, intervals: int = 3, batches: int = 10, batch_s: float = 1.0,
          **options):
    """An epoch of `intervals` log intervals of `batches` batches, each `batch_s` long; after each
    interval's sync the next batch takes `wait_per_interval` seconds to arrive."""
    clock, tracker = Clock(), Tags()
    monkeypatch.setattr(pace_module.time, "monotonic", clock)
    pace = Pace(tracker, epochs=10, steps_per_epoch=intervals * batches, global_batch=128, **options)
    state = SimpleNamespace(batch_in_epoch=0, epoch=0, history=[], elapsed_s=0.0)
    start = clock.now
    pace.start(state)
    for _ in range(intervals):
        for i in range(batches):
            if i == 0:
                clock.now += wait_per_interval        # the batch after the sync
            pace.batch_arrived()
            clock.now += batch_s - (wait_per_interval if i == 0 else 0)
            state.batch_in_epoch += 1
        pace.interval(state, 0, clock.now - start)
    return pace, tracker, state


def test_first_estimate_and_eta_tags(monkeypatch, caplog):
    caplog.set_level(logging.INFO, "research.training")
    pace, tracker, _ = drive(monkeypatch, wait_per_interval=0.0)
    # 30 batches an epoch at 1 s each: 30 s an epoch, 10 epochs 300 s; 128 images a second
    assert "pace: epoch 30s, run ETA 5m00s for 10 epochs (estimated from batches 11-20 at 128 img/s" in caplog.text
    assert tracker.tags["pace.epoch_s"] == "30" and tracker.tags["pace.eta_s"] == "300"
    assert "estimated" in tracker.tags["pace.basis"]
    assert "waited on data" not in caplog.text and pace.epoch_wait_share() == 0.0


def test_devices_waiting_on_data_warn_once_an_epoch(monkeypatch, caplog):
    pace, _, _ = drive(monkeypatch, wait_per_interval=0.4)
    warnings = [r for r in caplog.records if "waited on data" in r.getMessage()]
    assert len(warnings) == 1 and "about 40% of the last 10 batches" in warnings[0].getMessage()
    assert pace.epoch_wait_share() == pytest.approx(0.4)


def test_measured_epochs_replace_the_estimate(monkeypatch):
    pace, tracker, state = drive(monkeypatch, wait_per_interval=0.0)
    state.history, state.elapsed_s, state.epoch = [{}, {}], 70.0, 2       # two epochs of 35 s
    pace.epoch_end(state)
    assert tracker.tags["pace.epoch_s"] == "35" and tracker.tags["pace.eta_s"] == str(8 * 35)
    assert tracker.tags["pace.basis"] == "measured: mean of 2 epoch(s)"


def test_in_memory_data_measures_the_wait_but_does_not_ask_for_decoders(monkeypatch, caplog):
    pace, _, _ = drive(monkeypatch, wait_per_interval=0.4, warn_data_wait=False)
    assert "waited on data" not in caplog.text
    assert abs(pace.epoch_wait_share() - 0.4) < 1e-6      # still logged as time/data_wait
