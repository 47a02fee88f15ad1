"""MLflow tracking, the only part of research/ that imports mlflow: the store (store.py), what a run
records of where it came from (tags.py), one run logged off the training loop (tracker.py), the final
model as an MLflow pyfunc (logged_model.py) and links into the UI (ui.py)."""
from .store import get_client, public_uri, tracking_uri
from .tracker import Tracker, record_changes, resume_run, start_run
from .ui import compare_url, experiment_url, run_url, serve_hint, ui_command

__all__ = ["Tracker", "compare_url", "experiment_url", "get_client", "public_uri", "record_changes", "resume_run",
           "run_url", "serve_hint", "start_run", "tracking_uri", "ui_command"]
