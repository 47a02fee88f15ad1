"""The MLflow UI: the server that serves this store, and links into it.

Every link opens the training-runs view: MLflow 3.17 opens a run, an experiment or the comparison without
`workflowType=machine_learning` in its GenAI view (sidebar "Evaluation runs", "Prompts"; checked in Chromium).
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from urllib.parse import quote

from ..metrics import VAL_TOP1
from .store import public_uri, tracking_uri

TRAINING_VIEW = "workflowType=machine_learning"
# Without the job runner: 2 processes and about 580 MB instead of 16 and 3.7 GB.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# What `tools/ui.py --serve` adds to keep the console to what matters: MLflow 3.17's server imports a Starlette
# module that warns it is deprecated, at every start.
QUIET_ENV = {"PYTHONWARNINGS": "ignore:starlette.middleware.wsgi is deprecated"}
# The port the UI is served on and every printed link names (tools/ui.py --port overrides it for one call).
PORT_ENV = "RESEARCH_UI_PORT"
SAFE_IN_LINK = "(),'"        # left as they are in a link's search filter: it reads, and it stays shorter
DEFAULT_PORT = 5000


def ui_port() -> int:
    """$RESEARCH_UI_PORT, else 5000."""
    try:
        return int(os.environ.get(PORT_ENV) or DEFAULT_PORT)
    except ValueError:
        return DEFAULT_PORT


def serve_hint(port: int | None = None) -> str:
    """How the README serves the UI: `python tools/ui.py --serve`, with the port when it is not the default."""
    port = port or ui_port()
    return "python tools/ui.py --serve" + (f" --port {port}" if port != DEFAULT_PORT else "")


def server_args(port: int | None = None, uri: str | None = None, quiet: bool = False) -> list[str]:
    """`mlflow server` arguments with the light settings, on localhost. The access log is off: uvicorn
    otherwise prints a line for every file the UI loads (531 lines after about 15 pages). `quiet`: the model
    registry named too (the same store), which MLflow otherwise says at every start."""
    store = uri or tracking_uri()
    return ["server", "--backend-store-uri", store, *(["--registry-store-uri", store] if quiet else []),
            "--host", "127.0.0.1", "--port", str(port or ui_port()), "--workers", "1", "--uvicorn-opts=--no-access-log"]


def ui_command(port: int | None = None) -> str:
    """The one-liner that serves this store's UI on localhost with the light settings.

    Names the mlflow beside this interpreter, so it works without activating the virtualenv.
    """
    beside = Path(sys.executable).parent / "mlflow"
    mlflow = str(beside) if beside.exists() else "mlflow"
    env = " ".join(f"{key}={value}" for key, value in SERVER_ENV.items())
    # printed into logs: without the store's credentials (a database URI may hold a password)
    return f"{env} {shlex.join([mlflow, *server_args(port, public_uri(tracking_uri()))])}"


def run_url(run_id: str, experiment_id: str, port: int | None = None) -> str:
    return f"http://127.0.0.1:{port or ui_port()}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}"


def experiment_url(experiment_id: str, port: int | None = None) -> str:
    """The experiment's training-runs table (children folded under their parent run)."""
    return f"http://127.0.0.1:{port or ui_port()}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"


def compare_url(run_ids: list[str], experiment_ids: list[str], port: int | None = None) -> str:
    """These runs' curves overlaid, one chart per metric: the experiment's runs table in its chart view, filtered to
    them and sorted by val/top1, best first. The sort is what shows a sweep's trials: sorted by start time (the
    default) MLflow 3.17 folds child runs under their parent, and the charts then draw the parent alone. Runs of
    several experiments: MLflow's compare-runs page (a parallel-coordinates plot and a table of params and
    metrics; it draws no curves)."""
    experiments, port = sorted(set(experiment_ids)), port or ui_port()
    if len(experiments) == 1:
        only = "attributes.run_id IN (" + ",".join(f"'{run_id}'" for run_id in run_ids) + ")"
        return (f"http://127.0.0.1:{port}/#/experiments/{experiments[0]}/runs?{TRAINING_VIEW}&compareRunsMode=CHART"
                f"&orderByKey={quote(f'metrics.`{VAL_TOP1}`', safe='')}&orderByAsc=false"
                f"&searchFilter={quote(only, safe=SAFE_IN_LINK)}")
    runs, experiments = (json.dumps(list(ids), separators=(",", ":")) for ids in (run_ids, experiments))
    return f"http://127.0.0.1:{port}/#/compare-runs?runs={runs}&experiments={experiments}&{TRAINING_VIEW}"
