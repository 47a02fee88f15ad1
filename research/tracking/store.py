"""The MLflow store: its URI (sqlite inside the repo's mlruns/ unless MLFLOW_TRACKING_URI), a client on
it, and experiments created under a file lock (two processes creating a fresh sqlite store corrupt it).
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

from ..paths import MLRUNS

log = logging.getLogger(__name__)

# Off unless the user asked for it: this machine class has no internet, and telemetry is not ours to send.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Logging the model copies its files through MLflow's artifact download, which draws a tqdm bar in train.log.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow's HTTP client retries 7 times with exponential backoff: over 4 minutes against a server
# that is down. A run starts untracked after ~10 s instead; failed metric batches are retried later.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def tracking_uri(fallback: str | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else `fallback` (e.g. the store a run recorded in its run.json), else
    sqlite:///<repo>/mlruns/mlflow.db (absolute)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or fallback or f"sqlite:///{MLRUNS / 'mlflow.db'}"


# Query parameters dropped by public_uri: a database URI may carry ?password=, a proxy ?token= or ?sig=.
SECRET_PARAM = re.compile(r"pass|pwd|token|secret|key|auth|sig|credential", re.IGNORECASE)


def public_uri(uri: str) -> str:
    """`uri` as files and messages show it (run.json, logs): without its user:password@ and without query
    parameters named like a secret. The credentials stay in the environment (with_credentials)."""
    parts = urllib.parse.urlsplit(uri)
    if "@" in parts.netloc:
        uri = uri.replace(parts.netloc, parts.netloc.rsplit("@", 1)[1], 1)
    if parts.query:
        kept = [(key, value) for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
                if not SECRET_PARAM.search(key)]
        uri = uri.replace(f"?{parts.query}", f"?{urllib.parse.urlencode(kept)}" if kept else "", 1)
    return uri


def with_credentials(uri: str) -> str:
    """A URI read back from run.json (public_uri) with the credentials of MLFLOW_TRACKING_URI when that names
    the same store; else `uri` as it is (MLflow then reads MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN)."""
    current = os.environ.get("MLFLOW_TRACKING_URI")
    return current if current and public_uri(current) == uri else uri


def _local_dir(uri: str) -> Path | None:
    """Folder of a local sqlite store (for its lock file and artifacts), else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent
    return None


@contextmanager
def store_lock(uri: str):
    """Serialise store creation (two processes creating a fresh sqlite store corrupt it), and a new run's choice of
    colour (two trials starting at once would take the same)."""
    folder = _local_dir(uri)
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".store.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def get_client(uri: str | None = None):
    """An MlflowClient on `uri` (default tracking_uri()), the store created if needed (under the lock)."""
    from mlflow.tracking import MlflowClient

    uri = with_credentials(uri) if uri else tracking_uri()
    schema_log = logging.getLogger("mlflow.store.db.utils")
    level = schema_log.level
    schema_log.setLevel(logging.WARNING)     # "Creating initial MLflow database tables..." on a user's first run
    try:
        with store_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)     # creates the sqlite schema on first use
    finally:
        schema_log.setLevel(level)
    return client


def get_experiment_id(client, name: str) -> str:
    """Id of experiment `name`, created (artifacts beside the store) if missing."""
    uri = tracking_uri()
    with store_lock(uri):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        folder = _local_dir(uri)
        location = str(folder / name) if folder else None
        return client.create_experiment(name, artifact_location=location)


