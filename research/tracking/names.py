"""What a run is called in MLflow: what differs from its recipe file (`lr=0.05 epochs=3`), short enough for the
runs table's default Run Name column (about 15 characters show), so runs of one recipe tell apart in the runs
table, the chart legends, the models list and tools/compare.py. The full values stay the run's params."""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Recipe

# JSON {tag: value} that every new run gets: tools/sweep.py names each trial's parent run (mlflow.parentRunId)
# and the trial (mlflow.runName) this way, for the trainer it starts as a subprocess (research/sweeps/spec.py).
RUN_TAGS_ENV = "RESEARCH_RUN_TAGS"


# Short names for long recipe keys in a run's name (`warmup=1` for train.warmup_epochs=1); any other key goes by
# its last part. Two keys that would read alike are named in full.
SHORT = {"warmup_epochs": "warmup", "batch_size": "bs", "base_batch_size": "base_bs", "momentum": "mom",
         "lr_schedule": "sched", "lr_steps": "steps", "lr_factor": "factor", "lr_power": "power",
         "clip_gradient": "clip", "batch_per": "per"}


def label(values: dict[str, Any], short: bool = False) -> str:
    """'lr=0.05 epochs=3' for {"train.lr": 0.05, "train.epochs": 3}: the last part of each key, unless two
    keys share it (then the whole key). `short`: the names of SHORT ('warmup=1'), for the MLflow run name."""
    names = [key.rsplit(".", 1)[-1] for key in values]
    if short:
        names = [SHORT.get(name, name) for name in names]
    return " ".join(f"{name if names.count(name) == 1 else key}={format_value(value)}"
                    for key, name, value in zip(values, names, values.values()))


def format_value(value: Any) -> str:
    """A recipe value as --set would take it: 0.05, true, [8,15], sgd."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):            # the shorter of 1000000.0 and 1e+06, 0.02 and 0.02
        return min(repr(value), f"{value:g}", key=len) if float(f"{value:g}") == value else repr(value)
    return json.dumps(value, separators=(",", ":"))


def changes_text(changes: dict[str, tuple[Any, Any]], sep: str = "; ") -> str:
    """'train.lr 0.02 -> 0.05; train.epochs 2 -> 3' for {key: (old, new)} (training.resume.recipe_changes)."""
    return sep.join(f"{key} {format_value(old)} -> {format_value(new)}" for key, (old, new) in changes.items())


def changed_values(recipe: Recipe) -> dict[str, Any]:
    """The recipe's values that differ from its recipe file's (its --set overrides, in the file's key order);
    {} when it has no file to compare with."""
    from ..config import RecipeError, load_recipe
    if not recipe.source:
        return {}
    try:
        original = load_recipe(recipe.source).flat()
    except (RecipeError, OSError):
        return {}
    return {key: value for key, value in recipe.flat().items() if original.get(key, object()) != value}


def run_name(recipe: Recipe) -> str:
    """What differs from the recipe file (short names; config.HOW_KEYS, such as data paths, left out), else the
    recipe's name."""
    from ..config import is_how_key
    return label({key: value for key, value in changed_values(recipe).items() if not is_how_key(key)},
                 short=True) or recipe.name


def model_name(recipe_name: str, name: str) -> str:
    """The logged model's name: the recipe and the run's name ('lenet_digits lr=0·05'), in the characters MLflow
    allows a model name (no / : . % or quotes: a decimal point becomes a middle dot)."""
    text = " ".join(dict.fromkeys(part for part in (recipe_name, name) if part))
    return text.replace(".", "\u00b7").translate(str.maketrans({c: "_" for c in "/:%\"'"}))


def tags_from_env() -> dict[str, str]:
    """The tags RESEARCH_RUN_TAGS gives every new run ({} unset); a value that is not a JSON object is ignored
    with a warning rather than stopping the run."""
    import logging
    text = os.environ.get(RUN_TAGS_ENV, "")
    if not text:
        return {}
    try:
        tags = json.loads(text)
    except ValueError:
        tags = None
    if not isinstance(tags, dict):
        logging.getLogger(__name__).warning("%s is not a JSON object of tags: ignored (%r)", RUN_TAGS_ENV, text[:200])
        return {}
    return {str(key): str(value) for key, value in tags.items()}


# A folder name's length at the most: file systems refuse names over 255 bytes, and a path should stay readable.
FOLDER_NAME_MAX = 100


def folder_name(values: dict[str, Any]) -> str:
    """A folder name for these values, shell-friendly (no =, comma, brackets, quotes or spaces): the last part of each
    key, a -, its value, the pairs joined by _: {"train.lr": 0.01, "train.lr_steps": [5, 10]} -> "lr-0.01_lr_steps-5-10".
    A longer name than FOLDER_NAME_MAX is cut and ends in a hash of the whole, so it still names these values alone."""
    name = "_".join(f"{key.rsplit('.', 1)[-1]}-" + re.sub(r"[^A-Za-z0-9.+-]+", "-", format_value(value).strip("[]{}()'\" "))
                    for key, value in values.items())
    if len(name) <= FOLDER_NAME_MAX:
        return name
    return f"{name[:FOLDER_NAME_MAX - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
