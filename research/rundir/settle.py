"""Settling a run whose process died unsettled (kill -9) and that nothing will restart (a keep-alive supervisor
that gave up): status.json and the MLflow run say FAILED, with the reason, instead of RUNNING for ever."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .run_json import read_run_json
from .status import read_status, write_status


def settle_abandoned(run_dir: Path, why: str) -> None:
    """status.json "failed" with `why`, its MLflow run FAILED with `why` as the failure tag; nothing if
    status.json does not say running. A later rerun of the same command resumes it as usual."""
    status = read_status(run_dir)
    if status is None or status.state != "running":
        return
    write_status(run_dir, replace(status, state="failed", failure=why))
    run = read_run_json(run_dir)
    if run.run_id:
        from ..tracking import Tracker
        tracker = Tracker.attach(run.run_id, run.tracking_uri)
        tracker.set_tags({"failure": why[:500]})
        tracker.end("FAILED")
