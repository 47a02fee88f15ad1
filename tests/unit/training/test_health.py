"""The dead-head guard: a head killed on purpose stops the run (exit 3, MLflow FAILED, the last good
checkpoint named); the checks themselves on made-up epoch histories."""
import json
import math

import mxnet as mx
import pytest
from helpers import AfterBatches, change_setup
from mlflow.tracking import MlflowClient

from research.config import recipe_from_dict
from research.training import health, job
from research.training.checkpoint import find_latest

HEALTHY = {"train/loss": 1.0, "val/top1": 0.6, "health/dead_fraction": 0.0}


def epochs(*entries):
    return [{"epoch": i + 1, **HEALTHY, **entry} for i, entry in enumerate(entries)]


def test_healthy_history_passes():
    assert health.check(epochs({}, {}), classes=10, labels=10, chance_epochs=1, stall_epochs=1) == ""


def test_outputs_constant_over_the_validation_pass_stop_the_run_naming_the_heads_activation():
    dead = epochs({}, {"health/dead_fraction": 1.0})
    relu, elu = (health.check(dead, 1000, 10, head_activation=a) for a in ("relu", "elu"))
    assert "rule: every output constant" in relu and "ReLU is 0 for every image" in relu
    assert "ELU is saturated at -1" in elu and "ReLU" not in elu
    assert health.check(epochs({}, {"health/dead_fraction": 0.99}), 10, 10) == ""
    assert "net.activation: elu" in health.advice("relu") and "net.activation: elu" not in health.advice("elu")


def test_loss_at_ln_classes_for_an_epoch_after_being_below_stops_the_run():
    at_uniform = {"train/loss": math.log(1000) - 5e-4}
    message = health.check(epochs({}, at_uniform), 1000, 10)
    assert "rule: uniform output" in message and "sat at ln(1000) = 6.9078" in message and "1.0000" in message
    # the first epochs of a run start at ln(classes): not a stall before it has ever been below
    assert health.check(epochs(at_uniform, at_uniform), 1000, 10) == ""
    assert health.check(epochs({}, {"train/loss": math.log(1000) - 0.01}), 1000, 10) == ""


def test_chance_is_counted_from_the_labels_the_data_holds_not_the_outputs():
    chance = {"val/top1": 0.1}                 # 10 labels in the data, a head of 1,000 outputs
    message = health.check(epochs(chance, chance), 1000, labels=10, chance_epochs=2)
    assert "at chance for the 10 labels the data holds" in message and "train.chance_epochs = 2" in message
    assert health.check(epochs(chance), 1000, 10, chance_epochs=2) == ""
    assert health.check(epochs(chance, chance), 1000, 10, chance_epochs=0) == ""
    assert health.check(epochs({"val/top1": 0.05}, {"val/top1": 0.05}), 1000, None, chance_epochs=2) == ""   # random labels
    assert health.chance_ceiling(1000) == 0.002 and health.chance_ceiling(2) == pytest.approx(0.55)


def test_a_flat_loss_at_chance_for_stall_epochs_stops_the_run():
    # the Caffe-style net on 10 labels: 9.85-10.95% with the loss at 3.5-3.6 for four epochs
    stalled = epochs(*({"val/top1": top1, "train/loss": loss}
                       for top1, loss in ((0.1095, 3.60), (0.0985, 3.56), (0.1050, 3.52), (0.1010, 3.55))))
    message = health.check(stalled, 1000, labels=10, stall_epochs=3)
    assert "rule: at chance for train.stall_epochs = 3" in message
    assert "0.0985-0.1050 over epochs 2-4" in message and "3.6000 to 3.5500" in message
    assert health.check(stalled[:3], 1000, 10, stall_epochs=3) == ""              # needs the epochs first
    assert health.check(stalled, 1000, 10, stall_epochs=0) == ""
    learning = [dict(e, **{"train/loss": 2.0 / e["epoch"]}) for e in stalled]      # at chance, loss falling: waits
    assert health.check(learning, 1000, 10, stall_epochs=3) == ""
    rising = [dict(e, **{"val/top1": 0.3}) for e in stalled]                      # above chance: learning
    assert health.check(rising, 1000, 10, stall_epochs=3) == ""


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
    code = job.train(recipe, [mx.cpu()], run_dir, argv=["tools/train.py", "x"])
    assert code == 3
    state = find_latest(run_dir / "checkpoints")[1]["state"]
    assert state.epoch == 1                                    # stopped at epoch 2's end, not after 4
    assert f"the best weights so far are in {run_dir / 'checkpoints' / 'best.ckpt'}" in caplog.text
    assert "rule: every output constant" in caplog.text and "ReLU is 0 for every image" in caplog.text
    assert "train.warmup_epochs" in caplog.text and "the same command resumes from the newest" in caplog.text
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "FAILED"
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    dead = client.get_metric_history(run_id, "health/dead_fraction")
    assert len(dead) == 1 and dead[0].value < 1.0              # epoch 1 logged alive; epoch 2 failed


def test_a_run_that_learns_nothing_on_fewer_labels_than_outputs_is_stopped(tmp_path, caplog):
    """100 outputs, 10 labels in the data, an lr that moves nothing: chance is 1/10, and the stall rule fires."""
    recipe = recipe_from_dict({
        "name": "stall", "net": {"name": "lenet", "classes": 100}, "data": {"kind": "digits", "size": 16},
        "train": {"epochs": 6, "lr": 1e-9, "batch_size": 64, "stall_epochs": 2, "log_every": 100},
        "tracking": {"enabled": False},
    })
    run_dir = tmp_path / "run"
    assert job.train(recipe, [mx.cpu()], run_dir, argv=["tools/train.py", "x"]) == 3
    assert "net.classes is 100 but the training data holds 10 labels" in caplog.text
    assert "rule: at chance for train.stall_epochs = 2" in caplog.text and "the 10 labels the data holds" in caplog.text
    assert find_latest(run_dir / "checkpoints")[1]["state"].epoch == 2           # stopped at epoch 3's end
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
