"""What a command asks for is what trains and what MLflow records: other values than the directory's run get a
folder of their own or stop with both ways forward; a run continued with other values records them."""
from __future__ import annotations

import json

from helpers import run_tool
from mlflow.tracking import MlflowClient

from research.config import load_recipe
from research.paths import REPO
from research.training import resume

SMOKE = "recipes/smoke/lenet_digits_tiny.yaml"
TWO = ["--set", "train.epochs=2", "--set", "train.lr_steps=[1]"]


def run_id(run_dir) -> str:
    return json.loads((run_dir / "run.json").read_text())["run_id"]


def test_other_values_stop_with_the_ways_forward_and_resume_records_them(tmp_path, store, env):
    run_dir = tmp_path / "run"
    run_tool("train.py", SMOKE, "--output", run_dir, *TWO, env=env, check=True)
    # the case: an lr override on the finished run's folder said nothing and trained nothing (exit 0)
    refused = run_tool("train.py", SMOKE, "--output", run_dir, *TWO, "--set", "train.lr=0.05", env=env)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stdout + refused.stderr
    assert "train.lr 0.02 -> 0.05" in refused.stderr and "--fresh" in refused.stderr and "--resume" in refused.stderr

    # extending with another lr, on purpose: it trains with lr 0.05, and MLflow says so
    extended = run_tool("train.py", SMOKE, "--output", run_dir, "--set", "train.epochs=3", "--set", "train.lr_steps=[1]",
                        "--set", "train.lr=0.05", "--resume", env=env, check=True)
    assert "lr 0.05" in extended.stdout + extended.stderr
    run = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id(run_dir))
    (changed,) = [value for key, value in run.data.tags.items() if key.startswith("recipe.changed.")]
    assert changed == "at epoch 2: train.epochs 2 -> 3; train.lr 0.02 -> 0.05"
    assert run.info.run_name.startswith("epochs=3 lr=0.05")                # what differs from the recipe file now
    assert "Continued at epoch 2" in run.data.tags["mlflow.note.content"] and run.data.params["train.lr"] == "0.02"

    # extending needs no --resume, nor does how it runs (train.log_every): both are recorded, neither names the run
    run_tool("train.py", SMOKE, "--output", run_dir, "--set", "train.epochs=4", "--set", "train.lr_steps=[1]",
             "--set", "train.lr=0.05", "--set", "train.log_every=3", env=env, check=True)
    run = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id(run_dir))
    assert sorted(v for k, v in run.data.tags.items() if k.startswith("recipe.changed."))[-1] == \
        "at epoch 3: train.epochs 3 -> 4; train.log_every 5 -> 3"
    assert run.info.run_name == "lr=0.05 steps=[1]"        # epochs=4 is the recipe file's; log_every is how


def test_without_output_other_values_get_a_folder_named_by_them(tmp_path, monkeypatch):
    monkeypatch.setattr(resume, "RUNS", tmp_path / "runs")
    plain = load_recipe(REPO / SMOKE, ["train.epochs=9"])                 # extending: the recipe's own folder
    assert resume.default_run_dir(plain) == tmp_path / "runs" / "lenet_digits_tiny"
    moved = load_recipe(REPO / SMOKE, ["train.log_every=1", "tracking.system_metrics=false"])   # how, not what
    assert resume.default_run_dir(moved) == tmp_path / "runs" / "lenet_digits_tiny"
    other = load_recipe(REPO / SMOKE, ["train.lr=0.05", "train.epochs=5", "train.lr_steps=[2,4]"])
    assert resume.default_run_dir(other) == tmp_path / "runs" / "lenet_digits_tiny-lr-0.05_lr_steps-2-4"
    # a run begun with these values in runs/<recipe>/, before the folders were named by them, continues there
    (tmp_path / "runs" / "lenet_digits_tiny").mkdir(parents=True)
    (tmp_path / "runs" / "lenet_digits_tiny" / "recipe.yaml").write_text(
        json.dumps(load_recipe(REPO / SMOKE, ["train.lr=0.05", "train.epochs=5", "train.lr_steps=[2,4]"]).to_dict()))
    assert resume.default_run_dir(other) == tmp_path / "runs" / "lenet_digits_tiny"
