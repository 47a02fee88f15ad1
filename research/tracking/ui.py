"""The MLflow UI: the server that serves this store, and links into it.

Every link opens the training-runs view: MLflow 3.17 opens a run, an experiment or the comparison without
`workflowType=machine_learning` in its GenAI view (sidebar "Evaluation runs", "Prompts"; checked in Chromium).
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from .store import public_uri, tracking_uri

TRAINING_VIEW = "workflowType=machine_learning"
# Without the job runner: 2 processes and about 580 MB instead of 16 and 3.7 GB.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def server_args(port: int = 5000, uri: str | None = None) -> list[str]:
    """`mlflow server` arguments with the light settings, on localhost. The access log is off: uvicorn
    otherwise prints a line for every file the UI loads (531 lines after about 15 pages)."""
    return ["server", "--backend-store-uri", uri or tracking_uri(), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--uvicorn-opts=--no-access-log"]


def ui_command(port: int = 5000) -> str:
    """The one-liner that serves this store's UI on localhost with the light settings.

    Names the mlflow beside this interpreter, so it works without activating the virtualenv.
    """
    beside = Path(sys.executable).parent / "mlflow"
    mlflow = str(beside) if beside.exists() else "mlflow"
    env = " ".join(f"{key}={value}" for key, value in SERVER_ENV.items())
    # printed into logs: without the store's credentials (a database URI may hold a password)
    return f"{env} {shlex.join([mlflow, *server_args(port, public_uri(tracking_uri()))])}"


def run_url(run_id: str, experiment_id: str, port: int = 5000) -> str:
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}"


def experiment_url(experiment_id: str, port: int = 5000) -> str:
    """The experiment's training-runs table (children folded under their parent run)."""
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"


def compare_url(run_ids: list[str], experiment_ids: list[str], port: int = 5000) -> str:
    """MLflow's compare-runs view: params, metrics and overlaid curves of these runs."""
    runs = json.dumps(list(run_ids), separators=(",", ":"))
    experiments = json.dumps(sorted(set(experiment_ids)), separators=(",", ":"))
    return f"http://127.0.0.1:{port}/#/compare-runs?runs={runs}&experiments={experiments}&{TRAINING_VIEW}"
