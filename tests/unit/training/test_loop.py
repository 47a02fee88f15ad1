"""fit's edges in one process: a pause on an epoch's last batch (tools/benchmark.py's seam) and the next fit; a
worker other than rank 0, which trains alike and writes nothing."""
from pathlib import Path

import mxnet as mx
import numpy as np

from research.config import load_recipe
from research.dist.workers import create_kvstore
from research.training.checkpoint import TrainState, net_arrays
from research.training.lifecycle import Lifecycle, lifecycle_for
from research.training.loop import fit
from research.training.modes import Modes
from research.training.signals import FollowerStop, StopRequest
from research.training.job import build_setup

REPO = Path(__file__).resolve().parents[3]
STEPS_PER_EPOCH = 1437 // 64


def start(run_dir: Path, modes: Modes = Modes()):
    recipe = load_recipe(REPO / "recipes/smoke/lenet_digits_tiny.yaml", ["train.epochs=2", "train.lr_steps=[1]"])
    setup = build_setup(recipe, [mx.cpu(0)], run_dir, create_kvstore(recipe.train.kvstore), modes)
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


def test_a_worker_other_than_rank_0_trains_alike_and_writes_nothing(tmp_path):
    """Its stand-ins (FollowerLifecycle, NoCheckpoints, NoCurves, a disabled tracker and report) leave the run
    directory to rank 0; the weights are those rank 0 trains (here one process: only the rank differs)."""
    setup, state, run, stop = start(tmp_path / "rank0")
    assert fit(setup, state, run, stop) == "finished"
    assert any((tmp_path / "rank0" / "checkpoints").glob("step-*.ckpt")) and (tmp_path / "rank0" / "curves.png").is_file()
    rank0 = net_arrays(setup.net)

    follower = Modes(rank=1)
    setup, state, _, _ = start(tmp_path / "rank1", follower)
    with lifecycle_for(tmp_path / "rank1", setup.recipe, ["test"], follower) as run:
        assert run.start_tracking([mx.cpu(0)]).enabled is False
        run.write_status("running")
        assert fit(setup, state, run, FollowerStop()) == "finished"       # FollowerStop: never installed here
        run.export_model(setup.net)
    assert not (tmp_path / "rank1").exists() and state.epoch == 2
    for name, value in rank0.items():
        np.testing.assert_allclose(net_arrays(setup.net)[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
