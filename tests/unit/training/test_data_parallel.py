"""Data parallelism: two CPU contexts with the same global batch train exactly like one."""
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from research.config import load_recipe
from research.dist.workers import create_kvstore
from research.training.checkpoint import TrainState, net_arrays
from research.training.lifecycle import Lifecycle
from research.training.loop import fit
from research.training.signals import StopRequest
from research.training.job import build_setup

REPO = Path(__file__).resolve().parents[3]


def train_once(ctxs, tmp_path, overrides=()):
    recipe = load_recipe(REPO / "recipes/smoke/lenet_digits_tiny.yaml",
                         ["train.epochs=2", "train.lr_steps=[1]", *overrides])
    setup = build_setup(recipe, ctxs, tmp_path, create_kvstore(recipe.train.kvstore))
    state = TrainState(recipe=recipe.to_dict())
    assert fit(setup, state, Lifecycle(setup.run_dir, setup.recipe, ["test"]), StopRequest()) == "finished"
    return setup, state


@pytest.mark.parametrize("kvstore", ["device", "local"])
def test_two_contexts_match_one(tmp_path, kvstore):
    one, state_one = train_once([mx.cpu(0)], tmp_path / "one", [f"train.kvstore={kvstore}"])
    two, state_two = train_once([mx.cpu(0), mx.cpu(1)], tmp_path / "two", [f"train.kvstore={kvstore}"])
    assert state_one.step == state_two.step == 2 * (1437 // 64)
    a, b = net_arrays(one.net), net_arrays(two.net)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5, err_msg=name)
    # the replicas on the two devices must agree with each other too (kvstore=None would not sync them)
    for param in two.net.collect_params().values():
        replicas = [d.asnumpy() for d in param.list_data()]
        np.testing.assert_allclose(replicas[0], replicas[1], rtol=1e-6, atol=1e-7)
    assert state_two.history[-1]["val/top1"] == pytest.approx(state_one.history[-1]["val/top1"], abs=1e-3)


def test_batch_per_device_scales_global_batch_and_lr(tmp_path):
    recipe = load_recipe(REPO / "recipes/smoke/lenet_digits_tiny.yaml",
                         ["train.batch_per=device", "train.batch_size=32", "train.base_batch_size=32"])
    setup = build_setup(recipe, [mx.cpu(0), mx.cpu(1)], tmp_path, create_kvstore(recipe.train.kvstore))
    assert setup.global_batch == 64
    assert setup.base_lr == pytest.approx(2 * recipe.train.lr)


def test_learns_above_chance(tmp_path):
    _, state = train_once([mx.cpu(0)], tmp_path)
    assert state.history[-1]["val/top1"] > 0.8          # chance is 0.1
    assert set(state.history[-1]) >= {"train/loss", "train/top1", "val/loss", "val/top1", "val/top5", "lr",
                                      "speed/img_per_s", "time/epoch_s"}
