"""The paths only a GPU machine has: float16 (cast and AMP), the nccl kvstore, and --gpus 0,1 training like the two CPU
contexts the rest of the suite uses. Marked `gpu`: tests/conftest.py skips them without a CUDA build and a
GPU; on a GPU box run them with `python -m pytest -m gpu`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import run_tool

from research.config import load_recipe
from research.training.checkpoint import find_latest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
SMOKE = "recipes/smoke/lenet_digits_tiny.yaml"
SHORT = ["--set", "train.epochs=2", "--set", "train.lr_steps=[1]", "--set", "tracking.system_metrics=false"]


def final_state(run_dir: Path):
    return find_latest(run_dir / "checkpoints")[1]


def test_float16_learns_on_a_gpu(tmp_path, env):
    run_tool("train.py", SMOKE, "--gpus", "0", "--output", tmp_path / "fp16", *SHORT, "--set", "train.dtype=float16",
             env=env, check=True)
    assert final_state(tmp_path / "fp16")["state"].history[-1]["val/top1"] > 0.5     # chance is 0.1


def test_float16_amp_learns_on_a_gpu_and_keeps_its_loss_scaler(tmp_path, env):
    run_tool("train.py", SMOKE, "--gpus", "0", "--output", tmp_path / "amp", *SHORT, "--set", "train.amp=float16",
             env=env, check=True)
    content = final_state(tmp_path / "amp")
    assert content["state"].history[-1]["val/top1"] > 0.5                 # chance is 0.1
    assert content["loss_scaler"]["loss_scale"] <= 2.0 ** 16              # float16 overflows lower it, never NaN


def test_nccl_kvstore_on_two_gpus_matches_device(tmp_path, env):
    for kvstore in ("nccl", "device"):
        run_tool("train.py", SMOKE, "--gpus", "0,1", "--output", tmp_path / kvstore, *SHORT,
                 "--set", f"train.kvstore={kvstore}", env=env, check=True)
    nccl, device = final_state(tmp_path / "nccl")["params"], final_state(tmp_path / "device")["params"]
    for name in device:
        np.testing.assert_allclose(nccl[name], device[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_two_gpus_train_like_two_cpu_contexts(tmp_path, env):
    """The data-parallel code is one list of contexts: --gpus 0,1 ends where [cpu(0), cpu(1)] ends."""
    import mxnet as mx

    from research.training.job import train

    run_tool("train.py", SMOKE, "--gpus", "0,1", "--output", tmp_path / "gpus", *SHORT, env=env, check=True)
    recipe = load_recipe(Path(__file__).resolve().parents[2] / SMOKE, [s for s in SHORT if s != "--set"] +
                         ["tracking.enabled=false"])
    assert train(recipe, [mx.cpu(0), mx.cpu(1)], tmp_path / "cpus", False, False, ["test"]) == 0
    gpus, cpus = final_state(tmp_path / "gpus")["params"], final_state(tmp_path / "cpus")["params"]
    for name in cpus:
        np.testing.assert_allclose(gpus[name], cpus[name], rtol=1e-3, atol=1e-4, err_msg=name)
