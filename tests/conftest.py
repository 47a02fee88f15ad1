"""Shared fixtures: a temporary MLflow store and the subprocess environment pointing at it."""
from __future__ import annotations

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
