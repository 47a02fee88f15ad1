"""The MLflow UI: the command that serves this store, and links into it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .store import tracking_uri


def ui_command(port: int = 5000) -> str:
    """The one-liner that serves this store's UI on localhost with the light settings.

    Names the mlflow beside this interpreter, so it works without activating the virtualenv.
    """
    beside = Path(sys.executable).parent / "mlflow"
    mlflow = str(beside) if beside.exists() else "mlflow"
    return (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {mlflow} server --backend-store-uri {tracking_uri()} "
            f"--host 127.0.0.1 --port {port} --workers 1")


def run_url(run_id: str, experiment_id: str, port: int = 5000) -> str:
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs/{run_id}"


def experiment_url(experiment_id: str, port: int = 5000) -> str:
    """The experiment's training-runs table (MLflow 3 otherwise opens on its GenAI view)."""
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def compare_url(run_ids: list[str], experiment_ids: list[str], port: int = 5000) -> str:
    """MLflow's compare-runs view: params, metrics and overlaid curves of these runs."""
    runs = json.dumps(list(run_ids), separators=(",", ":"))
    experiments = json.dumps(sorted(set(experiment_ids)), separators=(",", ":"))
    return f"http://127.0.0.1:{port}/#/compare-runs?runs={runs}&experiments={experiments}"
