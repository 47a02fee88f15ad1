"""Where a run goes and whether it starts or resumes: the default run directory, the checkpoint to resume
from, and a folder that holds another recipe's run refused. The directory's files are research/rundir/'s."""
from __future__ import annotations

import logging
from pathlib import Path

from ..cli import Resume
from ..config import Recipe, RecipeError
from ..paths import RUNS
from ..rundir.files import CHECKPOINTS, RECIPE
from ..rundir.lock import set_aside
from ..rundir.run_json import read_run_json
from . import checkpoint

log = logging.getLogger("research.training")


def default_run_dir(recipe: Recipe) -> Path:
    return RUNS / recipe.name


def find_resume(run_dir: Path, recipe: Recipe, require: bool) -> dict | None:
    """The checkpoint a run resumes from (the newest that verifies), or None for a new run.

    Raises:
        RecipeError: `require` (--resume) without a checkpoint, or a folder holding another recipe's run
            (its checkpoint's recipe, or, killed before its first checkpoint, its recipe.yaml).
    """
    latest = checkpoint.find_latest(run_dir / CHECKPOINTS)
    if latest is None:
        if require:
            raise RecipeError(f"--resume: no valid checkpoint in {run_dir / CHECKPOINTS}. "
                              f"Drop --resume to start a new run.")
        if read_run_json(run_dir).run_id:        # its MLflow run is continued: the same recipe's?
            _check_same_recipe(run_dir, _saved_recipe(run_dir), recipe)
        return None
    path, content = latest
    _check_same_recipe(run_dir, content["state"].recipe, recipe)
    log.info("resuming from %s (epoch %d, step %d)", path, content["state"].epoch, content["state"].step)
    return content


def prepare_run_dir(run_dir: Path, recipe: Recipe, resume: Resume) -> dict | None:
    """What a trainer started on `run_dir` would do first (tools/launch.py checks it before the session):
    set the old run aside for "fresh", else find the checkpoint to resume. Raises as find_resume."""
    if resume == "fresh":
        set_aside(run_dir)
        return None
    return find_resume(run_dir, recipe, require=resume == "require")


def _saved_recipe(run_dir: Path) -> dict:
    import yaml
    try:
        return yaml.safe_load((run_dir / RECIPE).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _check_same_recipe(run_dir: Path, saved: dict, recipe: Recipe) -> None:
    if saved.get("name") != recipe.name or saved.get("net") != recipe.to_dict()["net"]:
        raise RecipeError(f"{run_dir} holds a run of recipe '{saved.get('name')}' (net {saved.get('net')}). "
                          f"Use --output for another folder, or --fresh to set the old run aside.")
