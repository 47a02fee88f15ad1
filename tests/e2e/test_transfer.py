"""Dogs vs. Cats transfer learning as a user runs it: Kaggle-layout folders -> tools/build_rec.py ->
tools/train.py on the transfer recipe -> a submission file and one MLflow run.

A LeNet pretrained here on other generated images (four stripe and chequer patterns) stands in for
the ImageNet weights; "cats" have horizontal stripes and "dogs" vertical ones.
"""
import csv
import json
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest
from helpers import make_env, run_tool
from mlflow.tracking import MlflowClient
from mxnet import autograd, gluon

import research
from research.nets import get_net

RECIPE = "recipes/smoke/transfer_tiny.yaml"
MEAN, STD = np.array([123.68, 116.779, 103.939]), np.array([58.393, 57.12, 57.375])


def pattern(rng: np.random.RandomState, kind: int, height: int, width: int) -> np.ndarray:
    """kind 0: horizontal stripes, 1: vertical, 2: diagonal, 3: chequers; random period, phase, colours, noise."""
    period, phase = rng.randint(4, 12), rng.randint(12)
    yy, xx = np.mgrid[0:height, 0:width]
    coord = [yy, xx, yy + xx, yy // (period // 2) + xx // (period // 2)][kind]
    on = (coord + phase) % period < period // 2 if kind < 3 else (coord % 2 == 0)
    image = np.where(on[..., None], rng.randint(0, 256, 3), rng.randint(0, 256, 3))
    image = image + rng.normal(0, 15, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def pretrain_backbone(path: Path) -> float:
    """LeNet trained to tell the four patterns apart at 32 px; returns its training accuracy."""
    rng = np.random.RandomState(1)
    images = np.stack([pattern(rng, i % 4, 32, 32) for i in range(480)])
    x = mx.nd.array(((images - MEAN) / STD).transpose(0, 3, 1, 2))
    y = mx.nd.array(np.arange(480) % 4)
    mx.random.seed(0)
    net = get_net("lenet", classes=4)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.003})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    for _ in range(8):
        for i in range(0, 480, 32):
            with autograd.record():
                loss = loss_fn(net(x[i:i + 32]), y[i:i + 32])
            loss.backward()
            trainer.step(32)
    net.save_parameters(str(path))
    return float((net(x).argmax(axis=1) == y).mean().asscalar())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Kaggle-layout folders built into .rec files, the expected test answers, a pretrained backbone."""
    root = tmp_path_factory.mktemp("dogs_vs_cats")
    rng = np.random.RandomState(0)
    (root / "train").mkdir()
    (root / "test").mkdir()
    for n in range(100):
        cv2.imwrite(str(root / "train" / f"cat.{n}.jpg"), pattern(rng, 0, 40, 48))
        cv2.imwrite(str(root / "train" / f"dog.{n}.jpg"), pattern(rng, 1, 40, 48))
    truth = {}
    for kaggle_id in rng.permutation(np.arange(1, 41)):
        truth[int(kaggle_id)] = int(rng.rand() < 0.5)                 # 1: dog
        cv2.imwrite(str(root / "test" / f"{kaggle_id}.jpg"), pattern(rng, truth[int(kaggle_id)], 44, 36))
    env = make_env(root / "mlruns")
    run_tool("build_rec.py", root / "train", root / "rec" / "train", "--layout", "dogs-vs-cats",
             "--holdout", 40, "--workers", 1, "--quiet", env=env, check=True)
    run_tool("build_rec.py", root / "test", root / "rec" / "test", "--layout", "dogs-vs-cats",
             "--workers", 1, "--quiet", env=env, check=True)
    accuracy = pretrain_backbone(root / "lenet.params")
    assert accuracy > 0.6, f"the stand-in backbone did not learn the patterns ({accuracy:.2f})"
    args = ["--set", f"net.pretrained={root / 'lenet.params'}",
            "--set", f"data.train_rec={root / 'rec/train.rec'}", "--set", f"data.val_rec={root / 'rec/train_val.rec'}",
            "--set", f"transfer.test_rec={root / 'rec/test.rec'}", "--set", f"transfer.cache_dir={root / 'cache'}"]
    return {"root": root, "truth": truth, "args": args, "env": env,
            "client": MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")}


@pytest.fixture(scope="module")
def first_run(dataset):
    proc = run_tool("train.py", RECIPE, *dataset["args"], "--output", dataset["root"] / "run1",
                    env=dataset["env"], check=True)
    return proc, dataset["root"] / "run1"


def runs(dataset) -> list:
    experiment = dataset["client"].get_experiment_by_name("transfer_tiny")
    return dataset["client"].search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.mark.slow
def test_submission_answers_every_test_image(dataset, first_run):
    proc, run_dir = first_run
    assert "Kaggle submission:" in proc.stdout
    with open(run_dir / "submission.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id", "label"]
    ids = [int(row[0]) for row in rows[1:]]
    p_dog = np.array([float(row[1]) for row in rows[1:]])
    assert ids == sorted(dataset["truth"])                               # one row per test image, by id
    assert ((p_dog >= 0.005) & (p_dog <= 0.995)).all()                   # clipped probabilities
    truth = np.array([dataset["truth"][i] for i in ids])
    assert ((p_dog > 0.5) == truth).mean() >= 0.9                         # the ids point at the right images


@pytest.mark.slow
def test_held_out_report_and_cv_table(first_run):
    _, run_dir = first_run
    metrics = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert metrics["val/accuracy"] >= 0.9 and metrics["val/log_loss"] < 0.3    # chance: 0.5, 0.69; random weights ~0.5
    with open(run_dir / "cv_results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [float(row["C"]) for row in table] == [0.01, 0.1, 1.0]
    assert float(min(table, key=lambda row: float(row["mean_log_loss"]))["C"]) == metrics["cv/best_C"]
    assert "cat" in (run_dir / "val_report.txt").read_text()


@pytest.mark.slow
def test_one_mlflow_run_holds_it_all(dataset, first_run):
    run = runs(dataset)[0]
    assert run.info.status == "FINISHED" and run.data.tags["task"] == "transfer"
    assert run.data.params["net.name"] == "lenet" and run.data.params["transfer.layer"] == "features"
    assert run.data.params["transfer.cs"] == "[0.01, 0.1, 1.0]"
    assert run.data.params["features.weights"].startswith("file sha1 ")
    for key in ("cv/best_C", "val/accuracy", "val/log_loss", "val/cat_recall", "speed/extract_img_per_s",
                "time/extract_train_s", "time/grid_search_s", "time/final_fit_s", "time/total_s"):
        assert key in run.data.metrics, key
    artifacts = {a.path for a in dataset["client"].list_artifacts(run.info.run_id)}
    assert {"submission.csv", "cv_results.csv", "val_report.txt", "results.json", "recipe.yaml"} <= artifacts


@pytest.mark.slow
def test_a_transfer_run_is_a_run_to_status_compare_and_load_run(dataset, first_run):
    _, run_dir = first_run
    run_id = runs(dataset)[0].info.run_id
    assert research.load_run(run_dir).run_id == run_id and research.load_run(run_dir).status == "finished"
    table = run_tool("status.py", "--root", dataset["root"], env=dataset["env"], check=True).stdout
    row = next(line for line in table.splitlines() if line.startswith("run1 "))
    accuracy = json.loads((run_dir / "results.json").read_text())["metrics"]["val/accuracy"]
    assert row.split()[1] == "finished" and f"{accuracy:.2%}" in row, table
    compared = run_tool("compare.py", "--runs", run_dir, "--format", "csv", env=dataset["env"], check=True).stdout
    values = dict(zip(*[line.split(",") for line in compared.splitlines()[:2]]))
    assert values["run_id"] == run_id and values["status"] == "FINISHED"
    assert float(values["final_val_top1"]) == pytest.approx(accuracy)


def test_a_second_job_on_a_run_directory_in_use_is_refused(dataset, tmp_path):
    from research.rundir.lock import RunDirLock
    lock = RunDirLock(tmp_path / "run").acquire()          # as a transfer job or a trainer holds it
    try:
        proc = run_tool("train.py", RECIPE, *dataset["args"], "--output", tmp_path / "run", env=dataset["env"])
    finally:
        lock.release()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'run'} is in use by another run (pid" in proc.stderr


@pytest.mark.slow
def test_second_run_with_other_classifier_settings_reuses_the_features(dataset, first_run):
    cache_files = sorted(p.name for p in (dataset["root"] / "cache").iterdir())
    assert len(cache_files) == 3                                          # train, held-out and test features
    proc = run_tool("train.py", RECIPE, *dataset["args"], "--set", "transfer.cs=[0.03, 0.3]", "--output",
                    dataset["root"] / "run2", env=dataset["env"], check=True)
    assert proc.stderr.count("read from the cache") == 3
    second = runs(dataset)[-1]
    assert {second.data.tags[f"feature_cache.{s}"] for s in ("train", "val", "test")} == {"hit"}
    assert "speed/extract_img_per_s" not in second.data.metrics and second.data.metrics["val/accuracy"] >= 0.9
    assert sorted(p.name for p in (dataset["root"] / "cache").iterdir()) == cache_files


def test_absent_zoo_weights_offline_say_where_to_put_the_file(dataset, tmp_path):
    env = dict(dataset["env"], MXNET_HOME=str(tmp_path), MXNET_GLUON_REPO="http://127.0.0.1:9/")
    proc = run_tool("train.py", RECIPE, *dataset["args"], "--set", "net.name=resnet18_v1",
                    "--set", "net.pretrained=resnet18_v1", "--output", tmp_path / "run", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{tmp_path}/models/resnet18_v1-a0666292.params does not exist" in proc.stderr
    assert "--set net.pretrained=PATH.params" in proc.stderr


def test_train_rec_given_as_test_rec_is_refused(dataset, tmp_path):
    train_rec = dataset["root"] / "rec" / "train.rec"
    proc = run_tool("train.py", RECIPE, *dataset["args"], "--set", f"transfer.test_rec={train_rec}",
                    "--output", tmp_path / "run", env=dataset["env"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is it a train .rec?" in proc.stderr


@pytest.mark.slow
def test_finetune_recipe_starts_from_the_pretrained_backbone(dataset, tmp_path):
    """The fine-tuning recipe through the common trainer, its ResNet-50 swapped for the stand-in LeNet:
    two head-only epochs on the pretrained features already separate the classes (random weights: ~0.65)."""
    root = dataset["root"]
    overrides = ["net.name=lenet", f"net.pretrained={root / 'lenet.params'}",
                 f"data.train_rec={root / 'rec/train.rec'}", f"data.val_rec={root / 'rec/train_val.rec'}",
                 "data.data_shape=[3,32,32]", "data.train_resize=36", "data.resize=36",
                 "train.epochs=3", "train.frozen_epochs=2", "train.lr_steps=[2]", "train.batch_size=16"]
    proc = run_tool("train.py", "recipes/resnet50_dogs_vs_cats_finetune.yaml",
                    *[arg for override in overrides for arg in ("--set", override)],
                    "--output", tmp_path / "run", env=dataset["env"], check=True)
    assert "pretrained weights from" in proc.stderr and "'output.' keep their initialisation" in proc.stderr
    experiment = dataset["client"].get_experiment_by_name("resnet50_dogs_vs_cats_finetune")
    (run,) = dataset["client"].search_runs([experiment.experiment_id])
    history = dataset["client"].get_metric_history(run.info.run_id, "val/top1")
    assert len(history) == 3 and max(m.value for m in history) >= 0.85
