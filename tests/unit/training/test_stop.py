"""A stop signal is acted on within two batches whatever train.log_every is, and the run resumes to the
weights an uninterrupted run ends with (SqueezeNet on the in-memory digits: a deterministic data order)."""
import re
import signal
import threading
import time

import mxnet as mx
import numpy as np
from helpers import change_setup

from research.config import recipe_from_dict
from research.training import trainer
from research.training.checkpoint import find_latest

RECIPE = {"name": "stop", "net": {"name": "squeezenet1.1", "classes": 10, "activation": "elu", "init": "xavier"}, "data": {"kind": "digits", "size": 32},
          "train": {"epochs": 2, "lr": 3e-4, "optimizer": "adam", "batch_size": 64, "log_every": 1000,
                    "lr_steps": [1]},
          "tracking": {"enabled": False}}
AT = 9        # the batch (0-based, of epoch 1) during which the signal comes


class SignalDuring:
    """Serves the inner iterator's batches; before batch AT it waits until the devices have finished every
    batch before it (so the devices are at batch AT exactly), then sends SIGTERM from a thread half a batch
    later, while the main thread is inside MXNet: where the old loop queued batches up to its next sync."""

    def __init__(self, inner):
        self.inner, self.served, self.clock = inner, 0, {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __iter__(self):
        for batch in self.inner:
            if self.served in (AT - 2, AT):
                mx.nd.waitall()
                self.clock[self.served] = time.monotonic()
            if self.served == AT:
                half_batch = (self.clock[AT] - self.clock[AT - 2]) / 4
                threading.Timer(half_batch, signal.raise_signal, [signal.SIGTERM]).start()
            self.served += 1
            yield batch


def final_weights(run_dir):
    return find_latest(run_dir / "checkpoints")[1]["params"]


def test_sigterm_checkpoints_within_two_batches_and_the_resume_ends_like_an_uninterrupted_run(tmp_path, monkeypatch,
                                                                                          caplog):
    recipe = recipe_from_dict(RECIPE)
    argv = ["tools/train.py", "stop.yaml"]
    assert trainer.train(recipe, [mx.cpu()], tmp_path / "whole", False, False, argv) == 0

    with monkeypatch.context() as patch:
        change_setup(patch, lambda setup: setattr(setup, "train_iter", SignalDuring(setup.train_iter)))
        code = trainer.train(recipe, [mx.cpu()], tmp_path / "stopped", False, False, argv)
    assert code == 128 + signal.SIGTERM
    state = find_latest(tmp_path / "stopped" / "checkpoints")[1]["state"]
    assert state.epoch == 0 and AT + 1 <= state.batch_in_epoch <= AT + 1 + 2, state.batch_in_epoch
    assert re.search(r"stopped \d+\.\d s after SIGTERM, at epoch 1 batch \d+", caplog.text)

    assert trainer.train(recipe, [mx.cpu()], tmp_path / "stopped", False, False, argv) == 0
    whole, resumed = final_weights(tmp_path / "whole"), final_weights(tmp_path / "stopped")
    for name in whole:
        np.testing.assert_allclose(resumed[name], whole[name], rtol=1e-6, atol=1e-7, err_msg=name)
