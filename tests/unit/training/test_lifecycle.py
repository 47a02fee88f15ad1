"""The lifecycle's edges: the resume hint of a launched run."""
from research.cli import RESUME_COMMAND_ENV
from research.config import recipe_from_dict
from research.training.lifecycle import Lifecycle

RECIPE = {"name": "r", "net": {"name": "lenet", "classes": 10}, "data": {"kind": "digits"},
          "train": {"epochs": 4, "lr": 0.1, "batch_size": 64}}


def test_the_resume_hint_is_the_launch_command_when_tools_launch_started_the_run(tmp_path, monkeypatch):
    run = Lifecycle(tmp_path, recipe_from_dict(RECIPE), ["tools/train.py", "r.yaml", "--fresh"])
    assert run.resume_command() == "python tools/train.py r.yaml --resume"
    monkeypatch.setenv(RESUME_COMMAND_ENV, "python tools/launch.py r.yaml --keep-alive")
    assert run.resume_command() == "python tools/launch.py r.yaml --keep-alive"
