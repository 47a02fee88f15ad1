"""Shared fixtures: a temporary MLflow store and the subprocess environment pointing at it."""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Callable

import pytest

import helpers

helpers.pin_test_process_threads()
import research  # noqa: E402,F401  (before any test module imports mxnet: loads a CUDA build's pip-wheel libraries)


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `gpu` need a CUDA build of MXNet and a GPU: skipped, with the reason, where either is missing.
    Tests marked `cuda_wheels` download gigabytes: skipped unless `-m` names them."""
    if "cuda_wheels" not in (config.getoption("markexpr") or ""):
        for item in items:
            if item.get_closest_marker("cuda_wheels"):
                item.add_marker(pytest.mark.skip(reason="cuda_wheels: opt-in (downloads ~2.2 GB): pytest -m cuda_wheels"))
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import mxnet as mx                      # after the thread pin above

    reason = ""
    if not mx.runtime.Features().is_enabled("CUDA"):
        reason = "the installed MXNet is a CPU build (pip install -e '.[cu112]' on a GPU machine)"
    elif mx.context.num_gpus() == 0:
        reason = "MXNet sees no GPU (nvidia-smi, CUDA_VISIBLE_DEVICES)"
    if reason:
        for item in gpu_tests:
            item.add_marker(pytest.mark.skip(reason=f"gpu: {reason}"))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A folder for a throwaway MLflow sqlite store."""
    folder = tmp_path / "mlruns"
    folder.mkdir()
    return folder


@pytest.fixture
def env(store: Path) -> dict[str, str]:
    """Subprocess environment pointing MLflow at `store`."""
    return helpers.make_env(store)


@pytest.fixture
def run_tool() -> Callable:
    """run_tool("train.py", recipe, "--output", dir, env=env, check=True): python tools/<tool> ..."""
    return helpers.run_tool


@pytest.fixture(scope="session")
def repo() -> Path:
    return helpers.REPO


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A real 24 MB tmpfs, to fill up (a LeNet checkpoint is 3.4 MB); skipped where this process may not mount.
    tests/unit/training/test_save_failure.py covers a full disk with a fake everywhere."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.fixture
def tmux_env(tmp_path: Path) -> dict[str, str]:
    """Environment with a private tmux server (tmux -L), MLflow store and HOME (a stand-in crontab on PATH);
    the server and any trainer left are torn down after."""
    socket_name = f"research-test-{uuid.uuid4().hex[:10]}"
    env = helpers.make_env(tmp_path / "mlruns", RESEARCH_TMUX_SOCKET=socket_name,
                           **helpers.temporary_home(tmp_path / "home"))
    try:
        yield env
    finally:
        subprocess.run(["tmux", "-L", socket_name, "kill-server"], capture_output=True)
        helpers.stop_trainers(tmp_path)
        tmux_dir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (tmux_dir / socket_name).unlink(missing_ok=True)       # kill-server leaves the socket file
