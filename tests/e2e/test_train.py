"""tools/train.py as a user runs it: learns, is tracked in MLflow, fails clearly on bad input."""
from pathlib import Path

import pytest
from helpers import make_env, run_tool
from mlflow.tracking import MlflowClient

SMOKE = "recipes/smoke/lenet_digits_tiny.yaml"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One smoke run shared by the assertions below (it takes ~20 s)."""
    tmp = tmp_path_factory.mktemp("train")
    store = tmp / "mlruns"
    env = make_env(store)
    proc = run_tool("train.py", SMOKE, "--output", tmp / "run", env=env, check=True)
    return proc, tmp / "run", MlflowClient(f"sqlite:///{store / 'mlflow.db'}"), env


def test_run_learns_and_reports(finished_run):
    proc, run_dir, _, _ = finished_run
    assert "val top-1" in proc.stdout and "mlflow server" in proc.stdout
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
    assert run.data.tags["contexts"] == "cpu(0)"
    history = client.get_metric_history(run.info.run_id, "val/top1")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    assert max(m.value for m in history) > 0.5                       # chance is 0.1
    for key in ("train/loss", "train/top1", "val/loss", "val/top5", "lr", "speed/img_per_s", "time/epoch_s",
                "health/dead_fraction"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 4, key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"recipe.yaml", "train.log", "curves.png", "model"} <= artifacts


def test_finished_run_is_not_retrained(finished_run):
    _, run_dir, _, env = finished_run
    proc = run_tool("train.py", SMOKE, "--output", run_dir, env=env)
    assert proc.returncode == 0 and "already holds the finished run" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--set", "train.lrr=0.1"], "unknown key 'train.lrr'. Did you mean 'train.lr'?"),
    (["--set", "train.epochs=many"], "train.epochs: expected int"),
    (["--gpus", "0"], "CPU-only build"),
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
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run").exists()          # failed before any work


def test_key_written_twice_in_a_recipe_names_both_lines(tmp_path, env, repo):
    recipe = tmp_path / "twice.yaml"
    recipe.write_text((repo / SMOKE).read_text() + "train:\n  epochs: 1\n")
    proc = run_tool("train.py", recipe, "--output", tmp_path / "run", env=env, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{recipe}: key 'train' is written twice, on lines 9 and 22; keep one." in proc.stderr


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
    assert run.info.status == "FAILED"
