"""train.amp: bfloat16 on this CPU as a user runs it (tools/train.py, a real amp.init in its own process): the run
learns, and one killed with SIGKILL and resumed goes on with the loss scaler's state and ends where an uninterrupted
run ends. float16 is the GPU's (marked gpu)."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import PYTHON, REPO, run_tool

from research.training.checkpoint import find_latest, list_checkpoints

SMOKE = "recipes/smoke/lenet_digits_tiny.yaml"
BF16 = ["--set", "train.amp=bfloat16", "--set", "train.epochs=2", "--set", "train.lr_steps=[1]",
        "--set", "tracking.enabled=false"]
STEPS_PER_EPOCH = 22             # 1,437 training digits at batch 64


def final(run_dir: Path) -> dict:
    return find_latest(run_dir / "checkpoints")[1]


@pytest.mark.slow
def test_bfloat16_learns_and_a_kill_9_resume_ends_where_an_uninterrupted_run_ends(tmp_path, env):
    run_tool("train.py", SMOKE, "--output", tmp_path / "whole", *BF16, env=env, check=True)
    whole = final(tmp_path / "whole")
    assert whole["state"].history[-1]["val/top1"] > 0.8                 # chance is 0.1
    assert whole["loss_scaler"] == {"loss_scale": 2.0 ** 16, "next_loss_scale": 2.0 ** 16,
                                    "unskipped": 2 * STEPS_PER_EPOCH}   # bfloat16 has float32's range: no overflow

    command = [PYTHON, str(REPO / "tools/train.py"), SMOKE, "--output", str(tmp_path / "killed"), *BF16]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list_checkpoints(tmp_path / "killed" / "checkpoints"):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert final(tmp_path / "killed")["state"].epoch < 2
    resumed = run_tool("train.py", SMOKE, "--output", tmp_path / "killed", *BF16, env=env, check=True)
    assert "resuming from" in resumed.stdout + resumed.stderr
    after = final(tmp_path / "killed")
    # a scaler restarted at the resume would count its clean steps from 0 (and double its scale 2000 steps late)
    assert after["loss_scaler"] == whole["loss_scaler"]
    for name, value in whole["params"].items():
        np.testing.assert_allclose(after["params"][name], value, rtol=1e-6, atol=1e-7, err_msg=name)
