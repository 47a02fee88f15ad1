"""Train a recipe: python tools/train.py recipes/lenet_digits.yaml [--gpus 0,1] [--set train.lr=0.05]."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.devices import set_cpu_threads  # noqa: E402  (before mxnet is imported)

set_cpu_threads()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train (or resume) the run a recipe describes, logged to MLflow. "
                    "A run whose output folder holds a checkpoint of the same recipe resumes automatically.",
        epilog="Exit status: 0 done, 2 a user error (bad recipe, missing data, bad --gpus), "
               "3 the loss became NaN, 128+N stopped by signal N (a checkpoint was written).")
    parser.add_argument("recipe", help="recipe YAML file, e.g. recipes/lenet_digits.yaml")
    parser.add_argument("--gpus", default="", help="comma-separated GPU ids, e.g. 0,1 (data-parallel); "
                                                   "omit to train on the CPU")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, YAML-typed, e.g. --set train.lr=0.05 "
                             "--set train.lr_steps=[30,60]; repeatable; validated like the file")
    parser.add_argument("--output", type=Path, default=None,
                        help="run directory (checkpoints, logs, exported model); default runs/<recipe name>/")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="require resuming from the newest valid checkpoint in the run directory")
    mode.add_argument("--fresh", action="store_true",
                      help="start over: move the existing run directory aside (to <dir>.old-<time>) first")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.config import RecipeError, load_recipe
    from research.devices import DeviceError, get_contexts
    from research.preflight import UserError, check_recipe

    try:
        recipe = load_recipe(args.recipe, args.overrides)
        ctxs = get_contexts(args.gpus)
        check_recipe(recipe, ctxs)
    except (RecipeError, DeviceError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from research.train.run import default_run_dir, train
    run_dir = args.output or default_run_dir(recipe)
    try:
        if recipe.task == "transfer":
            from research.transfer.run import run_transfer_job
            return run_transfer_job(recipe, ctxs, run_dir, ["tools/train.py", *argv])
        return train(recipe, ctxs, run_dir, args.resume, args.fresh, ["tools/train.py", *argv])
    except (RecipeError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
