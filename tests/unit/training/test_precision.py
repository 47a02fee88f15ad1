"""train.amp's loss scaler in the loop: a step with inf/NaN gradients is skipped and left out of the loss (not a
NaN loss for the guard), a run that keeps overflowing stops (exit 3), and a resume continues with the same scale.

In process, AMP's LossScaler is attached to the float32 trainer as amp.init_trainer attaches it: amp.init itself
would recast every net the rest of this pytest process builds (tests/e2e/test_amp.py runs the real bfloat16 path).
"""
import math

import mxnet as mx
from helpers import change_setup
from mxnet.contrib.amp.loss_scaler import LossScaler

from research.config import recipe_from_dict
from research.training import health, job
from research.training.checkpoint import find_latest

RECIPE = {"name": "amp_guard", "net": {"name": "lenet", "classes": 10}, "data": {"kind": "digits", "size": 28},
          "train": {"epochs": 1, "lr": 0.02, "batch_size": 64, "log_every": 5}, "tracking": {"enabled": False}}


class NanBatches:
    """The train iterator, with NaN pixels in the batches whose number (from 0, over the run) is in `numbers`
    (from `first` on, if given): their gradients are NaN, as an overflowing float16 step's are."""

    def __init__(self, inner, numbers=(), first=None):
        self.inner, self.numbers, self.first, self.served = inner, set(numbers), first, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __iter__(self):
        for batch in self.inner:
            if self.served in self.numbers or self.first is not None and self.served >= self.first:
                batch = mx.io.DataBatch(data=[batch.data[0] * float("nan")], label=batch.label, pad=batch.pad)
            self.served += 1
            yield batch


def with_scaler(monkeypatch, **nan):
    def change(setup):
        setup.trainer._amp_loss_scaler = LossScaler()        # what amp.init_trainer does
        setup.trainer._amp_original_scale = setup.trainer._scale
        setup.train_iter = NanBatches(setup.train_iter, **nan)
    change_setup(monkeypatch, change)


def test_a_skipped_step_is_not_a_nan_loss_and_a_resume_keeps_the_halved_scale(tmp_path, monkeypatch):
    with_scaler(monkeypatch, numbers=[3])
    run_dir = tmp_path / "run"
    assert job.train(recipe_from_dict(RECIPE), [mx.cpu()], run_dir, ["test"]) == 0
    content = find_latest(run_dir / "checkpoints")[1]
    epoch = content["state"].history[-1]
    assert math.isfinite(epoch["train/loss"]) and epoch["val/top1"] > 0.5           # chance is 0.1
    assert epoch["amp/skipped_steps"] == 1 and epoch["amp/loss_scale"] == 2.0 ** 15    # halved once
    assert content["loss_scaler"] == {"loss_scale": 2.0 ** 15, "next_loss_scale": 2.0 ** 15, "unskipped": 18}

    monkeypatch.undo()
    with_scaler(monkeypatch)                                  # a second session: a fresh scaler at 2**16, no NaN
    longer = recipe_from_dict({**RECIPE, "train": {**RECIPE["train"], "epochs": 2}})
    assert job.train(longer, [mx.cpu()], run_dir, ["test"], resume="require") == 0
    content = find_latest(run_dir / "checkpoints")[1]
    assert content["state"].history[-1]["amp/loss_scale"] == 2.0 ** 15                # restored, not 2**16
    assert content["loss_scaler"]["unskipped"] == 18 + 22                            # the clean-step count went on


def test_a_run_that_keeps_overflowing_stops_with_exit_3(tmp_path, monkeypatch, caplog):
    with_scaler(monkeypatch, first=1)                          # every batch from the second on
    code = job.train(recipe_from_dict(RECIPE), [mx.cpu()], tmp_path / "run", ["test"])
    assert code == 3
    assert f"the last {health.MAX_SKIPPED_IN_A_ROW} steps (to step 21) all had inf/NaN gradients" in caplog.text
    assert "whose scale is down to 0.0625" in caplog.text                              # 2**16 / 2**20
    assert "NaN" in caplog.text and "train loss is nan" not in caplog.text            # not taken for a NaN loss
