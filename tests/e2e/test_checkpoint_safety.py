"""Opening a run never runs its code: a checkpoint carrying a payload (in its own pickle or in MXNet's pickled
optimizer state inside it, header recomputed as anyone can) is refused by every tool and API call that opens
one, with exit status 2 and a line naming the file; the payload's marker file never appears."""
from __future__ import annotations

import shutil

import pytest
from helpers import checkpoint_carrying_code, make_env, run_tool

import research
from research.errors import UserError

SMOKE = "recipes/smoke/lenet_digits_tiny.yaml"
ONE_EPOCH = ["--set", "train.epochs=1", "--set", "train.lr_steps=[]", "--set", "tracking.enabled=false"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch run directory, to copy and plant a checkpoint in."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    run_tool("train.py", SMOKE, "--output", run_dir, *ONE_EPOCH, env=make_env(run_dir.parent), check=True)
    return run_dir


@pytest.fixture(params=["outer", "optimizer"])
def planted(request, tmp_path, trained):
    """(run directory, marker): a copy of the run whose newest checkpoint and best.ckpt carry a payload, and
    no exported model (so that load_run's .net falls back to the checkpoint)."""
    run_dir, marker = tmp_path / "run", tmp_path / "payload-ran"
    shutil.copytree(trained, run_dir)
    shutil.rmtree(run_dir / "model")
    checkpoint_carrying_code(run_dir / "checkpoints" / "step-9999999999.ckpt", marker, request.param)
    checkpoint_carrying_code(run_dir / "checkpoints" / "best.ckpt", marker, request.param)
    return run_dir, marker


def assert_refused(proc, marker, path) -> None:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{path} holds code" in proc.stderr and "nothing in it was run" in proc.stderr, proc.stderr
    assert not marker.exists()


def test_train_refuses_to_resume_from_it(planted, tmp_path):
    run_dir, marker = planted
    proc = run_tool("train.py", SMOKE, "--output", run_dir, *ONE_EPOCH, "--set", "train.epochs=2",
                    env=make_env(tmp_path))
    assert_refused(proc, marker, run_dir / "checkpoints" / "step-9999999999.ckpt")


@pytest.mark.parametrize("source", ["run directory", "best.ckpt"])
def test_evaluate_refuses_it_before_reading_any_data(planted, tmp_path, source):
    run_dir, marker = planted
    path = run_dir if source == "run directory" else run_dir / "checkpoints" / "best.ckpt"
    proc = run_tool("evaluate.py", path, "--rec", tmp_path / "no-such.rec", "--no-log", env=make_env(tmp_path))
    assert_refused(proc, marker, run_dir / "checkpoints" / ("step-9999999999.ckpt" if path == run_dir else "best.ckpt"))


@pytest.mark.parametrize("opens", ["history", "plot", "net"])
def test_load_run_refuses_it(planted, opens):
    run_dir, marker = planted
    run = research.load_run(run_dir)
    with pytest.raises(UserError, match="holds code"):
        getattr(run, opens)() if opens == "plot" else getattr(run, opens)
    assert not marker.exists()
