"""Shared fixtures: a temporary MLflow store and the subprocess environment pointing at it."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

import pytest

import helpers

helpers.pin_test_process_threads()


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
    tests/unit/train/test_save_failure.py covers a full disk with a fake everywhere."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)
