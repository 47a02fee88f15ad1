"""The dead-head guard: a head killed on purpose stops the run (exit 3, MLflow FAILED, the last good
checkpoint named); the checks themselves on made-up epoch histories."""
import json
import math

import mxnet as mx
import pytest
from helpers import AfterBatches, change_setup
from mlflow.tracking import MlflowClient

from research.config import recipe_from_dict
from research.training import health, trainer
from research.training.checkpoint import find_latest

HEALTHY = {"train/loss": 1.0, "val/top1": 0.6, "health/dead_fraction": 0.0}


def epochs(*entries):
    return [{"epoch": i + 1, **HEALTHY, **entry} for i, entry in enumerate(entries)]


def test_healthy_history_passes():
    assert health.check(epochs({}, {}), classes=10, chance_epochs=1) == ""


def test_outputs_constant_over_the_validation_pass_stop_the_run():
    assert "head is dead" in health.check(epochs({}, {"health/dead_fraction": 1.0}), 10, 0)
    assert health.check(epochs({}, {"health/dead_fraction": 0.99}), 10, 0) == ""


def test_loss_at_ln_classes_for_an_epoch_after_being_below_stops_the_run():
    at_uniform = {"train/loss": math.log(1000) - 5e-4}
    assert "sat at ln(1000)" in health.check(epochs({}, at_uniform), 1000, 0)
    # the first epochs of a run start at ln(classes): not a stall before it has ever been below
    assert health.check(epochs(at_uniform, at_uniform), 1000, 0) == ""
    assert health.check(epochs({}, {"train/loss": math.log(1000) - 0.01}), 1000, 0) == ""


def test_val_top1_at_chance_after_the_recipes_epochs_stops_the_run():
    chance = {"val/top1": 0.1}
    assert health.check(epochs(chance), 10, chance_epochs=2) == ""
    assert "still at chance" in health.check(epochs(chance, chance), 10, chance_epochs=2)
    assert health.check(epochs(chance, chance), 10, chance_epochs=0) == ""


def test_dead_fraction_counts_outputs_constant_over_images():
    assert health.dead_fraction([0.0, 1.0, -1.0], [0.0, 2.0, -1.0]) == pytest.approx(2 / 3)


def kill_head(net) -> None:
    """conv10's bias to -100: every input lands below the ReLU, the head is dead."""
    bias = net.output[1].bias
    bias.set_data(mx.nd.full(bias.shape, -100.0))


def test_a_dead_head_stops_the_run_with_exit_3_a_failed_mlflow_run_and_the_good_checkpoint(tmp_path, monkeypatch,
                                                                                         caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    recipe = recipe_from_dict({
        "name": "dead_head", "net": {"name": "squeezenet1.1", "classes": 10},
        "data": {"kind": "digits", "size": 32},
        "train": {"epochs": 4, "lr": 3e-4, "optimizer": "adam", "batch_size": 64, "log_every": 5},
        "tracking": {"system_metrics": False},
    })

    def kill_head_after_epoch_1(setup):
        steps_per_epoch = setup.train_iter.num_samples // setup.global_batch
        setup.train_iter = AfterBatches(setup.train_iter, steps_per_epoch, lambda: kill_head(setup.net))
    change_setup(monkeypatch, kill_head_after_epoch_1)
    run_dir = tmp_path / "run"
    code = trainer.train(recipe, [mx.cpu()], run_dir, resume=False, fresh=False, argv=["tools/train.py", "x"])
    assert code == 3
    state = find_latest(run_dir / "checkpoints")[1]["state"]
    assert state.epoch == 1                                    # stopped at epoch 2's end, not after 4
    assert f"the last good checkpoint is {run_dir / 'checkpoints' / 'best.ckpt'}" in caplog.text
    assert "head is dead" in caplog.text and "train.warmup_epochs" in caplog.text
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "FAILED"
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    dead = client.get_metric_history(run_id, "health/dead_fraction")
    assert len(dead) == 1 and dead[0].value < 1.0              # epoch 1 logged alive; epoch 2 failed
