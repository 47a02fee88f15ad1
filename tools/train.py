"""Train a recipe: python tools/train.py recipes/lenet_digits.yaml [--gpus 0,1] [--set train.lr=0.05]."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.cli import add_run_options, resume_mode  # noqa: E402
from research.devices import set_cpu_threads  # noqa: E402  (before mxnet is imported)
from research.errors import ExitCode, exit_status_help, tool_exit  # noqa: E402

set_cpu_threads()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train (or resume) the run a recipe describes, logged to MLflow. "
                    "A run whose output folder holds a checkpoint of the same recipe resumes automatically.",
        epilog=exit_status_help(ExitCode.OK, ExitCode.FAILED, (ExitCode.USER_ERROR, "a user error (bad recipe, "
                                "missing data, bad --gpus, the run directory in use)"), ExitCode.UNHEALTHY,
                                ExitCode.SAVE_FAILED, ExitCode.PRUNED, ExitCode.SIGNAL))
    add_run_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.api import train_recipe
    from research.config import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    _, code = train_recipe(recipe, args.gpus, args.output, resume_mode(args), ["tools/train.py", *argv])
    return code


if __name__ == "__main__":
    tool_exit(main)
