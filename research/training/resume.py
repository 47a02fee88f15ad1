"""Where a run goes and whether it starts or resumes: the default run directory, the checkpoint to resume
from, and a folder that holds another recipe's run refused. The directory's files are research/rundir/'s."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..cli import Resume
from ..config import Recipe, RecipeError, flatten, is_how_key, recipe_from_dict
from ..paths import RUNS
from ..rundir.files import CHECKPOINTS, RECIPE
from ..rundir.lock import set_aside
from ..rundir.run_json import read_run_json
from ..tracking.names import changed_values, changes_text, folder_name
from . import checkpoint

log = logging.getLogger("research.training")


# A run directory's run continues with a recipe that differs from its own in these keys only: a longer run (the lr
# schedule is a function of the epochs, so the rest of the run follows the new total), and config.HOW_KEYS (its data's
# place, threads, reporting, checkpoints, tracking). Any other difference is another run, in a folder of its own
# (default_run_dir), or with --resume this run continued with the change recorded.
EXTENDS = ("train.epochs",)


def _another_run(keys) -> list[str]:
    """The keys among these whose other values make another run (neither EXTENDS nor config.HOW_KEYS)."""
    return [key for key in keys if key not in EXTENDS and not is_how_key(key)]


def default_run_dir(recipe: Recipe) -> Path:
    """runs/<recipe name>/ for the recipe file's values (its train.epochs aside), else runs/<recipe name>-<what differs>/
    named as the sweep names its trials' folders (runs/lenet_digits-lr-0.05/): the same command finds its run again,
    and a command with other values never continues another's run. A run begun before these folders, with --set
    values, in runs/<recipe name>/ (the same values), is continued there."""
    changed = changed_values(recipe)
    differs = {key: changed[key] for key in _another_run(changed)}
    plain = RUNS / recipe.name
    if not differs:
        return plain
    named = RUNS / f"{recipe.name}-{folder_name(differs)}"
    saved = _saved_recipe(plain)
    if not named.exists() and saved and not _another_run(recipe_changes(saved, recipe)):
        return plain
    return named


def recipe_changes(saved: dict, recipe: Recipe) -> dict[str, tuple[Any, Any]]:
    """key -> (the run directory's value, this recipe's) for every recipe value that differs; {} without a saved recipe."""
    if not saved:
        return {}
    try:               # through the schema: a key added since the run was saved has its default (train.amp: off)
        old = recipe_from_dict(saved, origin="the run directory's recipe").flat()
    except RecipeError:                       # a key removed or renamed since: compared as saved
        old = dict(flatten(saved))
    new = recipe.flat()
    return {key: (old.get(key), new.get(key)) for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)}


def find_resume(run_dir: Path, recipe: Recipe, require: bool) -> tuple[dict | None, dict[str, tuple[Any, Any]]]:
    """The checkpoint a run resumes from (the newest that verifies), or None for a new run; and what this recipe
    changes in the directory's run (recipe_changes; {} for a new run), for its MLflow run to record.

    Raises:
        RecipeError: `require` (--resume) without a checkpoint; a folder holding another recipe's run (its
            checkpoint's recipe, or, killed before its first checkpoint, its recipe.yaml); or, without `require`,
            a run of this recipe with other values than train.epochs and config.HOW_KEYS (named, with the ways
            forward).
    """
    latest = checkpoint.find_latest(run_dir / CHECKPOINTS)
    if latest is None:
        if require:
            raise RecipeError(f"--resume: no valid checkpoint in {run_dir / CHECKPOINTS}. "
                              f"Drop --resume to start a new run.")
        if read_run_json(run_dir).run_id:        # its MLflow run is continued: the same recipe's?
            return None, _check_same_recipe(run_dir, _saved_recipe(run_dir), recipe, require)
        return None, {}
    path, content = latest
    changes = _check_same_recipe(run_dir, content["state"].recipe, recipe, require)
    log.info("resuming from %s (epoch %d, step %d)", path, content["state"].epoch, content["state"].step)
    return content, changes


def prepare_run_dir(run_dir: Path, recipe: Recipe, resume: Resume) -> None:
    """What a trainer started on `run_dir` would do first (tools/launch.py checks it before the session):
    set the old run aside for "fresh", else find the checkpoint to resume. Raises as find_resume."""
    if resume == "fresh":
        set_aside(run_dir)
    else:
        find_resume(run_dir, recipe, require=resume == "require")


def _saved_recipe(run_dir: Path) -> dict:
    import yaml
    try:
        return yaml.safe_load((run_dir / RECIPE).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _check_same_recipe(run_dir: Path, saved: dict, recipe: Recipe, require: bool) -> dict[str, tuple[Any, Any]]:
    """The changes from the run directory's recipe `saved` to `recipe` (recipe_changes), when they leave it the same
    run or `require` (--resume) continues it with them; else RecipeError."""
    changes = recipe_changes(saved, recipe)        # through the schema: a net key added since is no other net
    if saved.get("name") != recipe.name or any(key.startswith("net.") for key in changes):
        raise RecipeError(f"{run_dir} holds a run of recipe '{saved.get('name')}' (net {saved.get('net')}). "
                          f"Use --output for another folder, or --fresh to set the old run aside.")
    differs = {key: changes[key] for key in _another_run(changes)}
    if differs and not require:
        told = changes_text(differs, ", ")
        raise RecipeError(f"{run_dir} holds a run of {recipe.name} with other values: {told}. Train them as a run of "
                          f"their own with --output DIR (without --output, a folder named by what differs from the "
                          f"recipe file), set the old run aside with --fresh, or continue it with these values with "
                          f"--resume (its MLflow run records the change). From Python: output=..., resume='fresh' "
                          f"or resume='require'.")
    return changes
