"""Helpers for tests: run the real tools as a user would, against a temporary MLflow store.

Importable from any test module as `import helpers` (setup.cfg puts tests/ on the path).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def make_env(store: Path, **extra: str) -> dict[str, str]:
    """Environment for a tool subprocess: a private MLflow store, no terminal, unbuffered output."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}", PYTHONUNBUFFERED="1",
               MLFLOW_DISABLE_TELEMETRY="true")
    env.update(extra)
    return env


def run_tool(tool: str, *args, env: dict[str, str], timeout: float = 600,
             check: bool = False) -> subprocess.CompletedProcess:
    """python tools/<tool> args... from the repo root, output captured as text."""
    proc = subprocess.run([PYTHON, str(REPO / "tools" / tool), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc
