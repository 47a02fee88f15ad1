"""A stop signal that comes during a batch is acted on after that batch, whatever train.log_every is (the loop
reads the stop request after every batch, not only at its log interval's sync), and the run resumes to the
weights an uninterrupted run ends with (SqueezeNet on the in-memory digits: a deterministic data order)."""
import re
import signal

import mxnet as mx
import numpy as np
from helpers import change_setup

from research.config import recipe_from_dict
from research.training import job
from research.training.checkpoint import find_latest

RECIPE = {"name": "stop", "net": {"name": "squeezenet1.1", "classes": 10, "activation": "elu", "init": "xavier"},
          "data": {"kind": "digits", "size": 32},
          "train": {"epochs": 2, "lr": 3e-4, "optimizer": "adam", "batch_size": 64, "log_every": 1000,
                    "lr_steps": [1]},
          "tracking": {"enabled": False}}
AT = 9        # the batch (0-based, of epoch 1) during which the signal comes; log_every is 1000: no sync near it


class SignalDuring:
    """Serves the inner iterator's batches; SIGTERM arrives as batch AT is handed to the loop (counted in
    batches, not timed), as a user's kill would between two of the loop's checks."""

    def __init__(self, inner):
        self.inner, self.served = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __iter__(self):
        for batch in self.inner:
            if self.served == AT:
                signal.raise_signal(signal.SIGTERM)
            self.served += 1
            yield batch


def final_weights(run_dir):
    return find_latest(run_dir / "checkpoints")[1]["params"]


def test_sigterm_checkpoints_after_the_batch_it_came_in_and_the_resume_ends_like_an_uninterrupted_run(tmp_path,
                                                                                              monkeypatch, caplog):
    recipe = recipe_from_dict(RECIPE)
    argv = ["tools/train.py", "stop.yaml"]
    assert job.train(recipe, [mx.cpu()], tmp_path / "whole", argv) == 0

    with monkeypatch.context() as patch:
        change_setup(patch, lambda setup: setattr(setup, "train_iter", SignalDuring(setup.train_iter)))
        code = job.train(recipe, [mx.cpu()], tmp_path / "stopped", argv)
    assert code == 128 + signal.SIGTERM
    state = find_latest(tmp_path / "stopped" / "checkpoints")[1]["state"]
    assert (state.epoch, state.batch_in_epoch) == (0, AT + 1)          # batch AT trained, then the checkpoint
    assert re.search(rf"stopped \d+\.\d s after SIGTERM, at epoch 1 batch {AT + 1} ", caplog.text)

    assert job.train(recipe, [mx.cpu()], tmp_path / "stopped", argv) == 0
    whole, resumed = final_weights(tmp_path / "whole"), final_weights(tmp_path / "stopped")
    for name in whole:
        np.testing.assert_allclose(resumed[name], whole[name], rtol=1e-6, atol=1e-7, err_msg=name)
