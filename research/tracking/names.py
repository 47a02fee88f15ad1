"""What a run is called in MLflow: what differs from its recipe file (`lr=0.05 epochs=3`), so runs of one
recipe tell apart in the runs table, the chart legends and tools/compare.py."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Recipe

# JSON {tag: value} that every new run gets: tools/sweep.py names each trial's parent run (mlflow.parentRunId)
# and the trial (mlflow.runName) this way, for the trainer it starts as a subprocess (research/sweeps/spec.py).
RUN_TAGS_ENV = "RESEARCH_RUN_TAGS"


def label(values: dict[str, Any]) -> str:
    """'lr=0.05 epochs=3' for {"train.lr": 0.05, "train.epochs": 3}: the last part of each key, unless two
    keys share it (then the whole key)."""
    short = [key.rsplit(".", 1)[-1] for key in values]
    return " ".join(f"{name if short.count(name) == 1 else key}={format_value(value)}"
                    for key, name, value in zip(values, short, values.values()))


def format_value(value: Any) -> str:
    """A recipe value as --set would take it: 0.05, true, [8,15], sgd."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):            # the shorter of 1000000.0 and 1e+06, 0.02 and 0.02
        return min(repr(value), f"{value:g}", key=len) if float(f"{value:g}") == value else repr(value)
    return json.dumps(value, separators=(",", ":"))


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
    """What differs from the recipe file, else the recipe's name."""
    return label(changed_values(recipe)) or recipe.name


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
