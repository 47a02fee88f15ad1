"""tools/train.py as a user runs it: learns, is tracked in MLflow, fails clearly on bad input."""
import json

import cv2
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from helpers import make_env, missing_gpu_message, run_tool
from mlflow.tracking import MlflowClient

import research

SMOKE = "recipes/smoke/lenet_digits_tiny.yaml"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One smoke run shared by the assertions below (it takes ~20 s)."""
    tmp = tmp_path_factory.mktemp("train")
    store = tmp / "mlruns"
    env = make_env(store)
    # System metrics at the default interval (60 s): the run is over in seconds and still has some.
    proc = run_tool("train.py", SMOKE, "--output", tmp / "run", env=env, check=True)
    return proc, tmp / "run", MlflowClient(f"sqlite:///{store / 'mlflow.db'}"), env


def test_run_learns_and_reports(finished_run):
    proc, run_dir, _, _ = finished_run
    assert "val top-1" in proc.stdout and "Open the UI with:\n  python tools/ui.py --serve\n" in proc.stdout   # the README's command
    link = proc.stdout.strip().splitlines()[-1]         # "then browse <the run in the training-runs view>"
    assert link.endswith("?workflowType=machine_learning") and "/#/experiments/" in link
    assert f"model exported to {run_dir / 'model'}: lenet-symbol.json" in proc.stderr and ".tmp" not in proc.stderr
    for name in ("recipe.yaml", "train.log", "curves.png", "status.json", "run.json",
                 "model/lenet-symbol.json", "model/lenet-0000.params"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "epoch 4/4" in (run_dir / "train.log").read_text()


def test_mlflow_reads_the_run_back(finished_run):
    _, run_dir, client, _ = finished_run
    experiment = client.get_experiment_by_name("lenet_digits_tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.02" and run.data.params["net.name"] == "lenet"
    assert run.data.tags["recipe"] == "lenet_digits_tiny" and "git.commit" in run.data.tags
    assert run.data.tags["contexts"] == "cpu(0)" and run.data.tags["run_dir"] == str(run_dir)
    assert run.info.run_name == "lenet_digits_tiny"        # nothing differs from the recipe file
    history = client.get_metric_history(run.info.run_id, "val/top1")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    assert max(m.value for m in history) > 0.5                       # chance is 0.1
    for key in ("train/loss", "train/top1", "val/loss", "val/top5", "lr", "speed/img_per_s", "time/epoch_s",
                "health/dead_fraction"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 4, key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"recipe.yaml", "train.log", "curves.png", "model"} <= artifacts


def test_mlflow_ui_has_source_datasets_system_metrics_and_the_model(finished_run):
    _, _, client, _ = finished_run
    experiment = client.get_experiment_by_name("lenet_digits_tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "tools/train.py" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.user"] and tags["mlflow.source.git.commit"] == tags["git.commit"]
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert inputs.keys() == {"training", "validation"}
    assert inputs["validation"].name == "digits/val" and json.loads(inputs["validation"].profile)["num_images"] == 360
    assert inputs["training"].digest != inputs["validation"].digest
    # Shorter than the 60 s interval, the run still has a point at its start and at its end.
    for key in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        assert len(client.get_metric_history(run.info.run_id, key)) >= 2, key
    (model,) = client.search_logged_models([experiment.experiment_id])
    assert model.source_run_id == run.info.run_id and str(model.status) == "READY"
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    linked = {m.key: m for m in model.metrics}
    assert linked["val/top1"].value == run.data.metrics["val/top1"] and linked["val/top1"].step == 4
    assert linked["val/top1"].dataset_digest == inputs["validation"].digest
    assert len(client.get_metric_history(run.info.run_id, "val/top1")) == 4      # linking added no point


def test_logged_model_predicts_like_tools_predict(finished_run, tmp_path):
    _, run_dir, client, env = finished_run
    from research.data.digits import load_digits

    _, _, x_val, y_val = load_digits()
    images = [np.round(x_val[np.flatnonzero(y_val == digit)[0], 0] * 255).astype(np.uint8) for digit in (0, 3, 7)]
    paths = [tmp_path / f"digit{i}.png" for i in range(len(images))]
    for path, image in zip(paths, images):
        cv2.imwrite(str(path), image)
    lines = run_tool("predict.py", run_dir, *paths, env=env, check=True).stdout.splitlines()
    expected = [[(line.split()[1], float(line.split()[2])) for line in lines[6 * i + 1:6 * i + 6]]
                for i in range(len(paths))]

    (model,) = client.search_logged_models([client.get_experiment_by_name("lenet_digits_tiny").experiment_id])
    pyfunc = mlflow.pyfunc.load_model(model.artifact_location)
    for model_input in ([str(p) for p in paths], pd.DataFrame({"path": [str(p) for p in paths]}), images):
        out = pyfunc.predict(model_input)
        got = [list(zip(names, probs)) for names, probs in zip(out["top_classes"], out["top_probabilities"])]
        assert [[name for name, _ in top] for top in got] == [[name for name, _ in top] for top in expected]
        np.testing.assert_allclose([[p for _, p in top] for top in got], [[p for _, p in top] for top in expected],
                                   atol=1e-4)                              # tools/predict.py prints 4 decimals


def test_predict_warns_on_an_inverted_digit(finished_run, tmp_path):
    _, run_dir, _, env = finished_run
    from research.data.digits import load_digits
    from research.model.input_check import UnusualInput

    _, _, x_val, y_val = load_digits()
    three = np.round(x_val[np.flatnonzero(y_val == 3)[0], 0] * 255).astype(np.uint8)    # light on dark, as trained
    cv2.imwrite(str(tmp_path / "three.png"), three)
    cv2.imwrite(str(tmp_path / "scanned.png"), 255 - three)                              # dark on white paper
    proc = run_tool("predict.py", run_dir, tmp_path / "three.png", tmp_path / "scanned.png", env=env, check=True)
    (warning,) = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert str(tmp_path / "scanned.png") in warning and "Invert it" in warning and "three.png:" not in warning
    with pytest.warns(UnusualInput, match="image 0: .*light strokes on a dark background"):
        research.load_run(run_dir).predict([255 - three])


def test_finished_run_is_not_retrained(finished_run):
    _, run_dir, _, env = finished_run
    proc = run_tool("train.py", SMOKE, "--output", run_dir, env=env)
    assert proc.returncode == 0 and "already holds the finished run" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--set", "train.lrr=0.1"], "unknown key 'train.lrr'. Did you mean 'train.lr'?"),
    (["--set", "train.epochs=many"], "train.epochs: expected int"),
    (["--gpus", "99"], None),          # the message depends on the build and the machine: missing_gpu_message
    (["--gpus", "zero"], "expected comma-separated GPU ids"),
    (["--set", "train.dtype=float16"], "float16 needs GPUs"),
    (["--set", "data={kind: recordio, train_rec: /nope/train.rec, val_rec: /nope/val.rec}"],
     "/nope/train.rec does not exist"),
    (["--set", "data={kind: mnist, root: /nope/mnist, download: false}"], "/nope/mnist"),
    (["--gpus", ""], "--gpus '': no GPU ids given"),
    (["--set", "train.lr=.nan"], "train.lr: expected a finite number"),
    (["--set", "name="], "name '' is not a safe run name"),
    (["--set", "name=../.."], "name '../..' is not a safe run name"),
])
def test_user_errors_exit_2_without_traceback(tmp_path, env, args, message):
    proc = run_tool("train.py", SMOKE, "--output", tmp_path / "run", *args, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert (message or missing_gpu_message(99)) in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run").exists()          # failed before any work


def test_key_written_twice_in_a_recipe_names_both_lines(tmp_path, env, repo):
    recipe = tmp_path / "twice.yaml"
    recipe.write_text((repo / SMOKE).read_text() + "train:\n  epochs: 1\n")
    proc = run_tool("train.py", recipe, "--output", tmp_path / "run", env=env, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{recipe}: key 'train' is written twice, on lines 9 and 22; keep one." in proc.stderr


def test_evaluate_on_a_run_not_trained_from_recordio_exits_2(finished_run, tmp_path):
    _, run_dir, _, env = finished_run
    (tmp_path / "val.rec").write_bytes(b"")
    proc = run_tool("evaluate.py", run_dir, "--rec", tmp_path / "val.rec", env=env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "was trained on data.kind digits; evaluating on a .rec needs a recipe with data.kind recordio" in proc.stderr


def test_predict_top_0_is_a_user_error(finished_run):
    _, run_dir, _, env = finished_run
    proc = run_tool("predict.py", run_dir, run_dir / "curves.png", "--top", "0", env=env)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --top 0: print at least 1 class per image, e.g. --top 5"


def test_missing_recipe_file(env):
    proc = run_tool("train.py", "recipes/nope.yaml", env=env)
    assert proc.returncode == 2 and "recipe file not found" in proc.stderr


def test_help_explains_every_option(env):
    proc = run_tool("train.py", "--help", env=env, check=True)
    for option in ("--gpus", "--set", "--output", "--resume", "--fresh"):
        assert option in proc.stdout


def test_nan_loss_stops_with_a_clear_message_and_a_failed_run(tmp_path, store, env):
    proc = run_tool("train.py", SMOKE, "--output", tmp_path / "run", "--set", "train.lr=1e6", env=env)
    assert proc.returncode == 3
    assert "train loss is nan" in proc.stderr and "Lower train.lr" in proc.stderr
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lenet_digits_tiny").experiment_id])
    assert run.info.status == "FAILED" and run.info.run_name == "lr=1e+06"       # named by its --set value
