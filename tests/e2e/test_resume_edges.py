"""Resume at the edges: a stop placed on an exact batch (an epoch's last, the run's last, an epoch's first),
counted in batches, not seconds; and a resume that goes back behind MLflow's record."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import make_env, run_tool, run_tool_killed_at, run_tool_patched
from mlflow.tracking import MlflowClient

from research.training.checkpoint import find_latest, list_checkpoints

SMOKE = "recipes/smoke/lenet_digits_tiny.yaml"
EPOCHS = ["--set", "train.epochs=6", "--set", "train.lr_steps=[4]"]
STEPS_PER_EPOCH = 1437 // 64                  # the bundled digits' training split, batch 64: 22
pytestmark = pytest.mark.slow

# SIGTERM to the trainer as its batch number `batch` of epoch `epoch` (1-based) has just been trained; "last" is
# the epoch's last batch. The loop reads the stop request right after, so the checkpoint holds exactly that batch.
STOP_AT = """
from research.training import report
advance = report.Report.advance
def advance_then_stop(self):
    advance(self)
    last = self.steps_per_epoch
    if (self.state.epoch + 1, self.state.batch_in_epoch) == ({epoch}, {batch}):
        send(signal.SIGTERM)
report.Report.advance = advance_then_stop
"""


def history(store: Path, key: str) -> list[tuple[int, float]]:
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lenet_digits_tiny").experiment_id])
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted run: its final weights and its MLflow train figures."""
    tmp = tmp_path_factory.mktemp("reference")
    run_tool("train.py", SMOKE, "--output", tmp / "run", *EPOCHS, env=make_env(tmp), check=True)
    return {"params": find_latest(tmp / "run" / "checkpoints")[1]["params"],
            **{key: history(tmp, key) for key in ("train/loss", "train/top1", "lr", "val/top1")}}


@pytest.mark.parametrize("epoch, batch", [(2, "last"), (6, "last"), (3, 1), (3, 7)],
                         ids=["last-batch-of-epoch-2", "last-batch-of-the-run", "first-batch-of-epoch-3",
                              "mid-epoch-3"])
def test_a_stop_on_any_batch_resumes_to_the_uninterrupted_run(tmp_path, store, reference, epoch, batch):
    env, run_dir = make_env(store), tmp_path / "run"
    stopped = run_tool_patched("train.py", SMOKE, "--output", run_dir, *EPOCHS, env=env,
                               patch=STOP_AT.format(epoch=epoch, batch=batch))
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    state = find_latest(run_dir / "checkpoints")[1]["state"]
    assert (state.epoch + 1, state.batch_in_epoch) == (epoch, STEPS_PER_EPOCH if batch == "last" else batch)

    resumed = run_tool("train.py", SMOKE, "--output", run_dir, *EPOCHS, env=env)     # the same command again
    assert resumed.returncode == 0, resumed.stderr
    assert '"status": "finished"' in (run_dir / "status.json").read_text()
    for key in ("val/top1", "train/loss", "train/top1", "lr"):
        got = history(store, key)
        assert [step for step, _ in got] == [1, 2, 3, 4, 5, 6], (key, got)     # every epoch once
        np.testing.assert_allclose([v for _, v in got], [v for _, v in reference[key]], rtol=1e-5, err_msg=key)
    # the resumed epoch's train figures cover all its batches: those before the stop came with the checkpoint
    assert [v for _, v in history(store, "train/batches")] == [STEPS_PER_EPOCH] * 6
    params = find_latest(run_dir / "checkpoints")[1]["params"]
    for name, value in reference["params"].items():
        np.testing.assert_allclose(params[name], value, rtol=1e-6, atol=1e-7, err_msg=name)


# After epoch 3's metrics are in MLflow (its checkpoint is on disk first), die: MLflow's record is then as far
# as the checkpoints, and damaging the newest checkpoint puts it ahead of every usable one.
DIE_WHEN_MLFLOW_HAS_EPOCH_3 = """
from research.tracking.tracker import Tracker
log_metrics = Tracker.log_metrics
def log_then_die(self, metrics, step, *args, **kwargs):
    log_metrics(self, metrics, step, *args, **kwargs)
    if step == 3 and "val/top1" in metrics:
        self.flush()
        die()
Tracker.log_metrics = log_then_die
"""


def test_a_resume_behind_mlflows_record_logs_no_epoch_twice_and_says_it_went_back(tmp_path, store, reference):
    env, run_dir = make_env(store), tmp_path / "run"
    killed = run_tool_killed_at("train.py", SMOKE, "--output", run_dir, *EPOCHS, env=env,
                                patch=DIE_WHEN_MLFLOW_HAS_EPOCH_3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [step for step, _ in history(store, "val/top1")] == [1, 2, 3]
    newest = list_checkpoints(run_dir / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:1000])          # as a copy cut short would leave it

    resumed = run_tool("train.py", SMOKE, "--output", run_dir, *EPOCHS, env=env, check=True)
    assert f"skipping checkpoint: {newest} is truncated" in resumed.stderr
    assert "MLflow has this run's epochs up to 3, but the newest usable checkpoint is at epoch 2" in resumed.stderr
    for key in ("val/top1", "train/loss", "lr"):
        assert [step for step, _ in history(store, key)] == [1, 2, 3, 4, 5, 6], key
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lenet_digits_tiny").experiment_id])
    went_back = run.data.tags["resume.went_back"]
    assert went_back.startswith("from epoch 3 back to epoch 2: ") and f"{newest} is truncated" in went_back
    assert run.info.status == "FINISHED"
    assert json.loads((run_dir / "status.json").read_text())["went_back"] == went_back
    listed = run_tool("status.py", "--root", tmp_path, env=env, check=True).stdout
    assert f"run resumed from epoch 3 back to epoch 2: {newest} is truncated" in listed


def test_a_run_resumed_from_a_checkpoint_without_the_epochs_sums_says_what_its_figures_cover(tmp_path, store):
    """A checkpoint written before the epoch's sums were kept (as the current main's older ones): the resumed
    epoch's train figures cover the batches after the resume, and train/batches says how many."""
    env, run_dir = make_env(store), tmp_path / "run"
    patch = STOP_AT.format(epoch=2, batch=5) + """
from research.training import checkpoint
snapshot = checkpoint.snapshot
def snapshot_as_before(state, net, trainer):
    content = snapshot(state, net, trainer)
    del content["state"]["epoch_totals"]
    return content
checkpoint.snapshot = snapshot_as_before
"""
    stopped = run_tool_patched("train.py", SMOKE, "--output", run_dir, *EPOCHS, env=env, patch=patch)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    run_tool("train.py", SMOKE, "--output", run_dir, *EPOCHS, env=env, check=True)
    assert [v for _, v in history(store, "train/batches")] == [STEPS_PER_EPOCH, STEPS_PER_EPOCH - 5] + \
        [STEPS_PER_EPOCH] * 4


# train.amp: the scaler reports the update of epoch 2's last batch skipped (inf/NaN gradients), and the stop
# lands on that batch: the skipped images are part of the epoch's sums the checkpoint carries.
SKIP_AT_44 = """
from research.training import precision
skipped, calls = precision.skipped, []
def skipped_at_44(trainer):
    calls.append(1)
    return len(calls) == 44 or skipped(trainer)
precision.skipped = skipped_at_44
"""


def test_an_amp_step_skipped_on_the_batch_a_stop_lands_on_is_counted_after_the_resume(tmp_path, store):
    env, run_dir = make_env(store), tmp_path / "run"
    amp = [*EPOCHS, "--set", "train.amp=bfloat16"]
    stopped = run_tool_patched("train.py", SMOKE, "--output", run_dir, *amp, env=env,
                               patch=SKIP_AT_44 + STOP_AT.format(epoch=2, batch="last"))
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    run_tool("train.py", SMOKE, "--output", run_dir, *amp, env=env, check=True)
    assert history(store, "amp/skipped_steps") == [(1, 0), (2, 1), (3, 0), (4, 0), (5, 0), (6, 0)]
    assert [v for _, v in history(store, "train/batches")] == [STEPS_PER_EPOCH] * 6
