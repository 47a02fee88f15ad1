"""Command-line options shared by the tools that start a run (train.py, launch.py)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal, get_args

# The command that resumes a run, when it is not tools/train.py's own (tools/launch.py sets it in the tmux
# pane): the trainer names it when it tells how to resume after a stop or a full disk.
RESUME_COMMAND_ENV = "RESEARCH_RESUME_COMMAND"
# What a run does with a checkpoint already in its run directory: --resume is "require", --fresh "fresh".
Resume = Literal["auto", "require", "fresh"]
RESUME_MODES: tuple[str, ...] = get_args(Resume)


def resume_mode(args: argparse.Namespace) -> Resume:
    """The one value of --resume / --fresh (mutually exclusive; neither: "auto")."""
    return "fresh" if args.fresh else "require" if args.resume else "auto"


def add_run_options(parser: argparse.ArgumentParser, recipe_required: bool = True) -> None:
    """RECIPE, --gpus, --set, --output and --resume/--fresh, worded alike in every tool."""
    parser.add_argument("recipe", nargs=None if recipe_required else "?",
                        help="recipe YAML file, e.g. recipes/lenet_digits.yaml")
    parser.add_argument("--gpus", default=None, help="comma-separated GPU ids, e.g. 0,1 (data-parallel); "
                                                   "omit to train on the CPU")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, YAML-typed, e.g. --set train.lr=0.05 "
                             "--set train.lr_steps=[30,60]; repeatable; validated like the file")
    parser.add_argument("--output", type=Path, default=None,
                        help="run directory (checkpoints, logs, exported model); default runs/<recipe name>/")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="require resuming from the newest valid checkpoint in the run directory "
                           "(without it, a checkpoint of the same recipe is resumed when present)")
    mode.add_argument("--fresh", action="store_true",
                      help="start over: move the existing run directory aside (to <dir>.old-<time>) first")
