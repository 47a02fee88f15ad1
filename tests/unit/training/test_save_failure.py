"""A checkpoint that cannot be written stops the loop (a fake full disk: ENOSPC from the nth write)."""
import errno
import os
from pathlib import Path

import mxnet as mx
import pytest

from research.config import load_recipe
from research.dist.workers import create_kvstore
from research.training import checkpoint
from research.training.checkpoint import CheckpointError, TrainState
from research.training.lifecycle import Lifecycle
from research.training.loop import fit
from research.training.signals import StopRequest
from research.training.job import build_setup

REPO = Path(__file__).resolve().parents[3]
STEPS_PER_EPOCH = 1437 // 64


def test_full_disk_stops_training_at_the_next_batch(tmp_path, monkeypatch):
    recipe = load_recipe(REPO / "recipes/smoke/lenet_digits_tiny.yaml", ["train.epochs=4", "train.lr_steps=[3]"])
    setup = build_setup(recipe, [mx.cpu()], tmp_path, create_kvstore(recipe.train.kvstore))
    state = TrainState(recipe=recipe.to_dict())
    real_fsync, calls = os.fsync, []

    def disk_fills_after_epoch_1(fd):                     # each write: the file's fsync, then its folder's
        if "checkpoints" in os.readlink(f"/proc/self/fd/{fd}"):   # status.json and curves.png are written too
            calls.append(fd)
            if len(calls) > 4:                            # epoch 1: step-*.ckpt and best.ckpt fit
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", disk_fills_after_epoch_1)

    with pytest.raises(CheckpointError, match=r"checkpoint not saved: could not write .*step-0000000044.ckpt: "
                                              r"No space left on device \(.* free on the disk holding .*\)"):
        fit(setup, state, Lifecycle(setup.run_dir, setup.recipe, ["test"]), StopRequest())
    assert state.step < 3 * STEPS_PER_EPOCH               # it did not train on through epoch 3 with nothing saved
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "checkpoints")] == ["step-0000000022.ckpt"]
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))        # the half-written temp file is gone
