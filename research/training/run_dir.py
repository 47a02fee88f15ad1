"""The run directory: where a run goes, whether it starts or resumes, and the files that describe it
(status.json for tools/status.py, run.json naming its MLflow run)."""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import datetime
from pathlib import Path

from .. import atomic
from ..config import Recipe, RecipeError
from ..paths import RUNS
from ..tracking import tracking_uri
from . import checkpoint
from .lock import LOCK

log = logging.getLogger("research.training")


def default_run_dir(recipe: Recipe) -> Path:
    return RUNS / recipe.name


def prepare_run_dir(run_dir: Path, recipe: Recipe, resume: bool, fresh: bool) -> dict | None:
    """Decide between a new run and a resumed one; return the checkpoint to resume or None.

    Raises:
        RecipeError: --resume without a checkpoint, or a folder holding another recipe's run.
    """
    kept = [p for p in run_dir.iterdir() if p.name != LOCK] if run_dir.is_dir() else []
    if fresh and kept:
        aside = run_dir.with_name(f"{run_dir.name}.old-{datetime.now():%Y%m%d-%H%M%S}")
        aside.mkdir()
        for path in kept:                  # item by item: the lock file (and the lock) stay with the folder
            path.rename(aside / path.name)
        print(f"--fresh: the previous contents of {run_dir} were moved to {aside}")
    latest = None if fresh else checkpoint.find_latest(run_dir / "checkpoints")
    if latest is None:
        if resume:
            raise RecipeError(f"--resume: no valid checkpoint in {run_dir / 'checkpoints'}. "
                              f"Drop --resume to start a new run.")
        return None
    path, content = latest
    saved = content["state"].recipe
    if saved.get("name") != recipe.name or saved.get("net") != recipe.to_dict()["net"]:
        raise RecipeError(f"{run_dir} holds a run of recipe '{saved.get('name')}' (net {saved.get('net')}). "
                          f"Use --output for another folder, or --fresh to set the old run aside.")
    log.info("resuming from %s (epoch %d, step %d)", path, content["state"].epoch, content["state"].step)
    return content


def write_status(run_dir: Path, state: checkpoint.TrainState, recipe: Recipe, status: str,
                 run_id: str | None, in_epoch: dict | None = None) -> None:
    """run_dir/status.json for tools/status.py: written atomically, read without locks.

    `in_epoch` (batch, batches, step, train_loss, img_per_s, eta_epoch_s, eta_s) comes every
    train.log_every batches from InEpochReport; without it the figures are the last epoch's.
    """
    last = state.history[-1] if state.history else {}
    done = len(state.history)
    info = {"status": status, "epoch": state.epoch, "epochs": recipe.train.epochs,
            "val_top1": last.get("val/top1"), "img_per_s": last.get("speed/img_per_s"),
            "eta_s": (recipe.train.epochs - state.epoch) * state.elapsed_s / done if done else None,
            "run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(), "updated": time.time(),
            **(in_epoch or {})}
    try:
        atomic.write_text(run_dir / "status.json", json.dumps(info, indent=1))
    except OSError as err:          # a full disk: the run stops on its checkpoint, not on the status file
        if not write_status.failed:
            log.error("status not updated: %s", atomic.explain(run_dir / "status.json", err))
        write_status.failed = True


write_status.failed = False        # said once: it is retried every log_every batches


def write_run_json(run_dir: Path, run_id: str | None, experiment_id: str | None) -> None:
    """run_dir/run.json: the MLflow run this directory's run logs to (tools/compare.py, tools/evaluate.py)."""
    atomic.write_text(run_dir / "run.json", json.dumps({"run_id": run_id, "experiment_id": experiment_id,
                                                        "tracking_uri": tracking_uri()}, indent=1))
