"""The SqueezeNet pipeline as a user runs it, on a tiny generated ImageNet-layout set:
tools/build_rec.py -> tools/train.py (smoke recipe) -> tools/evaluate.py, tracked in MLflow."""
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import make_env, run_tool
from mlflow.tracking import MlflowClient

SMOKE = "recipes/smoke/squeezenet_tiny.yaml"
DURATION = r"(\d+h\d\dm|\d+m\d\ds|\d+s)"     # research/durations.format_duration under three days
CLASSES, PER_CLASS, HOLDOUT, SIZE = 10, 50, 100, 64


def pattern_image(label: int, rng: np.random.RandomState) -> np.ndarray:
    """RGB uint8: stripes at a class angle and a class colour, random phase and noise."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    angle = np.pi * label / CLASSES
    stripes = np.sin(2 * np.pi / 10 * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    turn = 2 * np.pi * label / CLASSES
    colour = np.cos([turn, turn + 2.1, turn + 4.2])
    image = 128 + 40 * stripes[..., None] + 70 * colour + rng.normal(0, 15, (SIZE, SIZE, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_imagenet_layout(root: Path) -> None:
    """root/<synset>/<synset>_<i>.JPEG, as ILSVRC2012_img_train unpacks."""
    rng = np.random.RandomState(0)
    for label in range(CLASSES):
        folder = root / f"n{label:08d}"
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            cv2.imwrite(str(folder / f"n{label:08d}_{i}.JPEG"), pattern_image(label, rng)[:, :, ::-1])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imagenet10")
    write_imagenet_layout(tmp / "train")
    env = make_env(tmp / "unused-store")
    proc = run_tool("build_rec.py", tmp / "train", tmp / "rec" / "train", "--layout", "imagenet-train",
                    "--holdout", HOLDOUT, "--quiet", env=env, check=True)
    assert f"train_val.rec: {HOLDOUT} images" in proc.stdout
    return tmp / "rec" / "train.rec", tmp / "rec" / "train_val.rec"


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    train_rec, val_rec = dataset
    tmp = tmp_path_factory.mktemp("squeezenet")
    env = make_env(tmp / "mlruns")
    run_tool("train.py", SMOKE, "--set", f"data.train_rec={train_rec}", "--set", f"data.val_rec={val_rec}",
             "--output", tmp / "run", env=env, check=True)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("squeezenet_tiny").experiment_id])
    return tmp / "run", val_rec, env, client, run.info.run_id


@pytest.mark.slow
def test_smoke_recipe_learns_well_above_chance(trained):
    _, _, _, client, run_id = trained
    history = {m.step: m.value for m in client.get_metric_history(run_id, "val/top1")}
    assert sorted(history) == list(range(1, 7))
    assert history[6] >= 3 / CLASSES                           # chance is 1 / CLASSES


@pytest.mark.slow
def test_run_states_its_pace_in_the_log_and_mlflow(trained):
    run_dir, _, _, client, run_id = trained
    log = (run_dir / "train.log").read_text()
    # 12 batches an epoch, logged every 4: the estimate comes from batches 5-8 of the second epoch (the first holds
    # the process's start-up, and is left out of the pace while it lasts under report.WARMUP_S)
    assert re.search(rf"pace: epoch {DURATION}, run ETA {DURATION} for 6 epochs \(estimated from batches 5-8 at "
                     r"\d+ img/s", log), log
    tags = client.get_run(run_id).data.tags
    assert tags["pace.basis"] == "measured: mean of 5 epoch(s)" and tags["pace.eta_s"] == "0"
    assert float(tags["pace.epoch_s"]) > 0
    waits = client.get_metric_history(run_id, "time/data_wait")
    assert len(waits) == 6 and all(0.0 <= m.value <= 1.0 for m in waits)


@pytest.mark.slow
def test_evaluate_reproduces_the_logged_val_top1_and_adds_10crop(trained):
    run_dir, val_rec, env, client, run_id = trained
    proc = run_tool("evaluate.py", run_dir, "--rec", val_rec, "--batch-size", 32, env=env, check=True)
    assert "centre crop" in proc.stdout and "10-crop" in proc.stdout
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"                       # evaluation does not reopen the run
    logged = {m.step: m.value for m in client.get_metric_history(run_id, "val/top1")}
    center = client.get_metric_history(run_id, "val/top1_center")
    assert [m.step for m in center] == [6]                     # at the checkpoint's epoch
    assert center[0].value == pytest.approx(logged[6], abs=1e-6)
    assert f"{logged[6]:.2%}" in proc.stdout
    for key in ("val/top5_center", "val/top1_10crop", "val/top5_10crop"):
        (point,) = client.get_metric_history(run_id, key)
        assert 0.0 <= point.value <= 1.0 and point.step == 6
    ten_crop = client.get_metric_history(run_id, "val/top1_10crop")[0].value
    assert ten_crop >= 3 / CLASSES                             # the same net, seen 10 ways, is no worse than chance x3


@pytest.mark.slow
def test_reference_recipe_starts_at_the_reference_shape(dataset, tmp_path):
    """The 80-epoch ImageNet recipe itself, for one epoch: 227 crops, batch 128, 1000 classes."""
    train_rec, val_rec = dataset
    env = make_env(tmp_path / "mlruns")
    proc = run_tool("train.py", "recipes/squeezenet_imagenet.yaml", "--set", f"data.train_rec={train_rec}",
                    "--set", f"data.val_rec={val_rec}", "--set", "train.epochs=1", "--set", "train.lr_steps=[]",
                    "--set", "train.log_every=1", "--set", "tracking.enabled=false",
                    "--output", tmp_path / "run", env=env, check=True)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "global batch 128, lr 0.01" in log
    assert "epoch 1/1 batch 3/3" in log                        # 400 images: 3 full batches of 128
    assert "val top-1" in proc.stdout


def test_evaluate_user_errors_exit_2(tmp_path, env):
    proc = run_tool("evaluate.py", tmp_path, "--rec", tmp_path / "val.rec", env=env)
    assert proc.returncode == 2 and "no valid checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_tool("evaluate.py", tmp_path / "nope", "--rec", "x.rec", env=env)
    assert proc.returncode == 2 and "no such run directory" in proc.stderr
    proc = run_tool("evaluate.py", tmp_path, "--rec", "x.rec", "--crops", "5", env=env)
    assert proc.returncode == 2 and "--crops" in proc.stderr


def test_float16_recipe_is_refused_on_cpu_with_the_reason(env):
    proc = run_tool("train.py", "recipes/squeezenet_imagenet_fp16.yaml", env=env)
    assert proc.returncode == 2
    assert "float16 needs GPUs" in proc.stderr and "Traceback" not in proc.stderr


def test_plan_prints_three_rates_a_bottleneck_an_eta_and_a_cost(dataset, env):
    """tools/benchmark.py plan on the smoke recipe's real data, a second per figure; text and JSON."""
    train_rec, val_rec = dataset
    args = ["plan", SMOKE, "--set", f"data.train_rec={train_rec}", "--set", f"data.val_rec={val_rec}",
            "--seconds", "3", "--price-per-hour", "3.06"]
    text = run_tool("benchmark.py", *args, env=env, check=True).stdout
    figures = json.loads(run_tool("benchmark.py", *args, "--format", "json", env=env, check=True).stdout)
    rates = re.findall(r"^  (data pipeline alone|model alone|both together).* ([\d.]+) img/s$", text, re.M)
    assert [name for name, _ in rates] == ["data pipeline alone", "model alone", "both together"]
    assert all(float(rate) > 0 for _, rate in rates)
    assert re.search(r"^bottleneck: the (data pipeline|devices).* idle \d+% of the time", text, re.M), text
    assert re.search(rf"^estimate: epoch {DURATION} \(training only\), 6 epochs {DURATION}, \$\d+\.\d\d at \$3.06/h",
                     text, re.M), text
    assert "K80 140 min, V100 28 min" in text and "to lift it: " in text
    # the JSON holds the same figures, and they add up: 400 images = 12 full batches of 32 a epoch
    assert figures["bottleneck"] in ("data", "devices") and figures["epoch_images"] == 384
    rates = [figures[key] for key in ("data_img_per_s", "model_img_per_s", "together_img_per_s")]
    assert all(rate > 0 for rate in rates)
    assert figures["epoch_s"] == pytest.approx(384 / figures["together_img_per_s"], rel=0.01)
    assert figures["run_s"] == pytest.approx(6 * figures["epoch_s"], rel=0.01)
    assert figures["cost"] == pytest.approx(figures["run_s"] / 3600 * 3.06, abs=0.01)
    assert figures["reference_min_per_epoch"] == {"K80": 140.0, "V100": 28.0} and figures["lift"]
