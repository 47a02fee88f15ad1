"""Shared fixtures: run the real tools as a user would, against a temporary MLflow store.

Tests use them as fixtures (`run_tool`, `env`, `store`) since test modules are imported
by path (--import-mode=importlib) and do not import each other.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def make_env(store: Path, **extra: str) -> dict[str, str]:
    """Environment for a tool subprocess: a private MLflow store, no terminal, unbuffered output."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}", PYTHONUNBUFFERED="1",
               MLFLOW_DISABLE_TELEMETRY="true")
    env.update(extra)
    return env


def _run_tool(tool: str, *args, env: dict[str, str], timeout: float = 600,
              check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([PYTHON, str(REPO / "tools" / tool), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A folder for a throwaway MLflow sqlite store."""
    folder = tmp_path / "mlruns"
    folder.mkdir()
    return folder


@pytest.fixture
def env(store: Path) -> dict[str, str]:
    """Subprocess environment pointing MLflow at `store`."""
    return make_env(store)


@pytest.fixture
def run_tool() -> Callable[..., subprocess.CompletedProcess]:
    """run_tool("train.py", recipe, "--output", dir, env=env, check=True): python tools/<tool> ..."""
    return _run_tool


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
