"""The library API's cheap parts: import cost, names, argument checks. Training: tests/e2e/test_api.py."""
from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest
from helpers import REPO, missing_gpu_message

import research
from research.api import _assignments
from research.config import RecipeError
from research.errors import UserError

SMOKE = REPO / "recipes" / "smoke" / "lenet_digits_tiny.yaml"


def test_import_loads_neither_mxnet_nor_mlflow():
    """The tools import research.* before they set MXNet's threads: importing it must stay cheap."""
    code = "import sys, research; print(sorted(m for m in ('mxnet', 'mlflow', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_train_is_the_api_function_and_the_training_package_is_apart():
    import research.inspection.compare
    import research.training.job  # noqa: F401  (importing the package leaves research.train alone)
    assert callable(research.train) and callable(research.compare)
    assert list(inspect.signature(research.train).parameters) == ["recipe", "gpus", "overrides", "output", "resume"]
    assert "UserError" in research.train.__doc__
    assert research.train is research.api.train


def test_overrides_as_a_dict_or_assignments():
    assert _assignments({"train.lr": 0.05, "train.lr_steps": [2, 3], "net.pretrained": ""}) == [
        "train.lr=0.05", "train.lr_steps=[2, 3]", 'net.pretrained=""']
    assert _assignments(["train.lr=0.05"]) == _assignments("train.lr=0.05") == ["train.lr=0.05"]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"overrides": {"train.lrr": 0.1}}, RecipeError, "Did you mean 'train.lr'?"),
    ({"overrides": {"train.epochs": "many"}}, RecipeError, "train.epochs: expected int"),
    ({"gpus": [99]}, UserError, None),      # None: missing_gpu_message, which depends on the build and the machine
    ({"resume": "yes"}, UserError, "expected one of auto, require, fresh"),
])
def test_user_errors_raise_before_any_work(tmp_path, kwargs, error, message):
    expected = message if message is not None else re.escape(missing_gpu_message(99))
    with pytest.raises(error, match=expected):
        research.train(SMOKE, output=tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_a_loaded_recipe_takes_overrides_too():
    from research.api import _load
    from research.config import load_recipe
    recipe = _load(load_recipe(SMOKE), ["train.lr=0.5"])
    assert recipe.train.lr == 0.5 and recipe.source == str(SMOKE)
    with pytest.raises(RecipeError, match="Did you mean 'train.lr'"):
        _load(recipe, ["train.lrr=1"])


def test_load_run_names_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        research.load_run(tmp_path)
