"""RUN_DIR/run.json: the MLflow run a run directory logs to (written before the first epoch, so a run killed
before its first checkpoint restarts in the same MLflow run), read by resume, compare, evaluate and the
keep-alive supervisor."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from .files import RUN_JSON


@dataclass(frozen=True)
class RunJson:
    """run.json's content; all None for a directory without one (or with a damaged one)."""
    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None      # the store it was logged to, as the run saw it


def read_run_json(run_dir: Path) -> RunJson:
    """RUN_DIR/run.json; RunJson() if it is missing or damaged (a run that never opened its MLflow run)."""
    try:
        content = json.loads((Path(run_dir) / RUN_JSON).read_text())
    except (OSError, ValueError):
        return RunJson()
    if not isinstance(content, dict):
        return RunJson()
    return RunJson(content.get("run_id"), content.get("experiment_id"), content.get("tracking_uri"))


def write_run_json(run_dir: Path, run_id: str | None, experiment_id: str | None) -> None:
    """RUN_DIR/run.json for the MLflow run `run_id`, with the store this process logs to, its URI without
    credentials: the file is readable by others and travels with the folder."""
    from ..tracking import public_uri, tracking_uri
    atomic.write_text(Path(run_dir) / RUN_JSON, json.dumps({"run_id": run_id, "experiment_id": experiment_id,
                                                            "tracking_uri": public_uri(tracking_uri())}, indent=1))


def has_run_json(path: Path) -> bool:
    """True if `path` is a run directory that names its MLflow run (research.compare tells them from names)."""
    return (Path(path) / RUN_JSON).is_file()
