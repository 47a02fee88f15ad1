"""research.train / load_run / predict in-process, as a notebook calls them, on the smoke recipe."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

import cv2
import pytest
from helpers import REPO, make_env, run_tool
from mlflow.tracking import MlflowClient

import research
from research.training.checkpoint import list_checkpoints

SMOKE = REPO / "recipes" / "smoke" / "lenet_digits_tiny.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished smoke run (4 epochs), its store and environment."""
    tmp = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
        run = research.train(SMOKE, output=tmp / "run", overrides={"train.lr": 0.03})
        yield run, tmp


def test_train_returns_the_finished_run(trained):
    run, tmp = trained
    assert run.status == "finished" and run.recipe.train.lr == 0.03
    assert list(run.history.index) == [1, 2, 3, 4]
    assert run.history["val/top1"].iloc[-1] > 0.5                    # chance is 0.1
    client = MlflowClient(f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
    mlflow_run = client.get_run(run.run_id)
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.data.params["train.lr"] == "0.03"
    again = research.load_run(run.run_dir)
    assert again.run_id == run.run_id and again.history.equals(run.history)
    png = run.plot()._repr_png_()                                   # what Jupyter shows inline
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import mxnet as mx
    assert run.net(mx.nd.zeros((1, 1, 28, 28))).shape == (1, 10)


def test_predict_equals_tools_predict(trained, tmp_path):
    run, tmp = trained
    from research.data.digits import load_digits
    _, _, x_val, y_val = load_digits()
    images = [(x[0] * 255).round().astype("uint8") for x in x_val[:3]]
    paths = [tmp_path / f"digit{i}.png" for i in range(3)]
    for path, image in zip(paths, images):
        cv2.imwrite(str(path), image)
    proc = run_tool("predict.py", run.run_dir, *paths, "--top", "3", env=make_env(tmp / "mlruns"), check=True)
    printed = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("  ")]
    for top in (run.predict(paths, top=3), run.predict(images, top=3)):     # files, and the same pixels
        assert [[name, f"{p:.4f}"] for image in top for name, p in image] == printed
    assert sum(top[0][0] == str(label) for top, label in zip(run.predict(images), y_val)) >= 2


def interrupt_after_first_checkpoint(run_dir, epochs: int) -> threading.Thread:
    """Ctrl-C as Jupyter's interrupt sends it (SIGINT to the process), once an epoch is checkpointed."""
    def watch():
        deadline = time.monotonic() + 300
        while not list_checkpoints(run_dir / "checkpoints") and time.monotonic() < deadline:
            time.sleep(0.02)
        status = (run_dir / "status.json").read_text() if (run_dir / "status.json").exists() else ""
        if '"running"' in status and f'"epoch": {epochs}' not in status:  # never interrupt pytest itself
            os.kill(os.getpid(), signal.SIGINT)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_interrupt_then_resume_gives_one_mlflow_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    run_dir, before = tmp_path / "run", signal.getsignal(signal.SIGINT)
    watcher = interrupt_after_first_checkpoint(run_dir, epochs=4)
    with pytest.raises(KeyboardInterrupt, match="call research.train again"):
        research.train(SMOKE, output=run_dir)
    watcher.join()
    assert signal.getsignal(signal.SIGINT) is before               # the next cell is interrupted as usual
    stopped = research.load_run(run_dir)
    assert stopped.status == "killed" and 1 <= len(stopped.history) < 4
    import mxnet as mx
    x = mx.nd.zeros((1, 1, 28, 28))
    assert stopped.net(x).shape == (1, 10)                         # no export yet: the checkpoint's weights

    run = research.train(SMOKE, output=run_dir)                    # the same call again resumes

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (only,) = client.search_runs([client.get_experiment_by_name("lenet_digits_tiny").experiment_id])
    assert only.info.run_id == run.run_id == stopped.run_id and only.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.run_id, "val/top1")) == [1, 2, 3, 4]
    log = (run_dir / "train.log").read_text()
    assert "SIGINT received" in log and "resuming from" in log

    capsys.readouterr()
    research.train(SMOKE, output=run_dir)                          # a cell run twice: finished, returned at once
    research.train(SMOKE, output=run_dir)
    err = capsys.readouterr().err
    assert err.count("resuming from") == 2                         # once per call: no handler added twice
    handlers = [getattr(h, "_research", None) for h in logging.getLogger().handlers]
    assert handlers.count("console") == 1 and "file" not in handlers
    assert (run_dir / "train.log").read_text().count("resuming from") == log.count("resuming from") + 2


def test_a_nan_loss_raises_after_marking_the_run_failed(tmp_path, monkeypatch):
    from research.training.loop import NonFiniteLoss
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    with pytest.raises(NonFiniteLoss, match="train loss is nan"):
        research.train(SMOKE, output=tmp_path / "run", overrides={"train.lr": 1e6})
    assert research.load_run(tmp_path / "run").status == "failed"
