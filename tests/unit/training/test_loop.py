"""fit's edges in one process: a pause on an epoch's last batch (tools/benchmark.py's seam) and the next fit."""
from pathlib import Path

import mxnet as mx
import numpy as np

from research.config import load_recipe
from research.training.checkpoint import TrainState, net_arrays
from research.training.kvstore import create_kvstore
from research.training.lifecycle import Lifecycle
from research.training.loop import fit
from research.training.signals import StopRequest
from research.training.trainer import build_setup

REPO = Path(__file__).resolve().parents[3]
STEPS_PER_EPOCH = 1437 // 64


def start(run_dir: Path):
    recipe = load_recipe(REPO / "recipes/smoke/lenet_digits_tiny.yaml", ["train.epochs=2", "train.lr_steps=[1]"])
    setup = build_setup(recipe, [mx.cpu(0)], run_dir, create_kvstore(recipe.train.kvstore))
    return setup, TrainState(recipe=recipe.to_dict()), Lifecycle(run_dir, recipe, ["test"]), StopRequest()


def test_pauses_at_an_epochs_end_and_across_it_train_as_one_fit(tmp_path):
    setup, state, run, stop = start(tmp_path / "whole")
    assert fit(setup, state, run, stop) == "finished"
    whole = state.history, net_arrays(setup.net)

    setup, state, run, stop = start(tmp_path / "paused")
    assert fit(setup, state, run, stop, steps=STEPS_PER_EPOCH) == "paused"
    assert (state.epoch, state.batch_in_epoch) == (0, STEPS_PER_EPOCH)     # the epoch's batches done, not its end
    assert fit(setup, state, run, stop, steps=3) == "paused"               # its end, then 3 batches of the next
    assert (state.epoch, state.batch_in_epoch) == (1, 3)
    assert fit(setup, state, run, stop) == "finished"

    assert [e["epoch"] for e in state.history] == [1, 2]
    for mine, theirs in zip(state.history, whole[0]):
        for key in ("train/loss", "train/top1", "train/batches", "val/top1", "lr"):
            np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-6, err_msg=key)
    for name, value in whole[1].items():
        np.testing.assert_allclose(net_arrays(setup.net)[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
