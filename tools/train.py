"""Train a recipe: python tools/train.py recipes/lenet_digits.yaml [--gpus 0,1] [--set train.lr=0.05]."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.cli import add_run_options  # noqa: E402
from research.devices import set_cpu_threads  # noqa: E402  (before mxnet is imported)

set_cpu_threads()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train (or resume) the run a recipe describes, logged to MLflow. "
                    "A run whose output folder holds a checkpoint of the same recipe resumes automatically.",
        epilog="Exit status: 0 done, 2 a user error (bad recipe, missing data, bad --gpus), "
               "3 the loss became NaN, 128+N stopped by signal N (a checkpoint was written).")
    add_run_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.config import load_recipe
    from research.devices import get_contexts
    from research.errors import UserError       # bad recipe, missing data, absent GPU: one line, exit 2
    from research.preflight import check_recipe

    try:
        recipe = load_recipe(args.recipe, args.overrides)
        ctxs = get_contexts(args.gpus)
        check_recipe(recipe, ctxs)
        from research.train.run import default_run_dir, train
        run_dir = args.output or default_run_dir(recipe)
        command = ["tools/train.py", *argv]
        if recipe.task == "transfer":
            from research.transfer.run import run_transfer_job
            return run_transfer_job(recipe, ctxs, run_dir, command)
        return train(recipe, ctxs, run_dir, args.resume, args.fresh, command)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
