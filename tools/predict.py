"""Top-5 classes of images with an exported model: python tools/predict.py runs/lenet_digits img.png ..."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.errors import ExitCode, UserError, exit_status_help, tool_exit  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Classify images with a model a run exported (symbol + params), preprocessed like the "
                    "recipe's validation data: resize and centre crop, mean/std, grayscale for 1-channel nets.",
        epilog=exit_status_help(ExitCode.OK, (ExitCode.USER_ERROR, "a user error (no model there, unreadable "
                                                                    "image)"))
               + " An image far from the training images (their brightness, kept in model/input_stats.json for "
               "digits and MNIST) gets a warning on stderr, and one light where the training digits were dark is "
               "told to invert it.")
    parser.add_argument("model", help="a run directory, its model/ folder, or a <prefix>-symbol.json file "
                                      "(params, classes.json and recipe.yaml are looked up beside it)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--recipe", default=None,
                        help="recipe YAML giving the preprocessing, when none lies beside the model")
    parser.add_argument("--top", type=int, default=5, help="classes to print per image (default 5)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.top < 1:
        raise UserError(f"--top {args.top}: print at least 1 class per image, e.g. --top 5")
    from research.model.input_check import UnusualInput
    from research.model.predict import Predictor

    predictor = Predictor(args.model, args.recipe)
    with warnings.catch_warnings(record=True) as unusual:      # an image unlike the training images
        warnings.simplefilter("always", UnusualInput)
        results = predictor.predict(args.images, k=args.top)
    for warning in unusual:
        print(f"warning: {warning.message}", file=sys.stderr, flush=True)
    width = max(len(name) for name in predictor.classes)
    for image, top in zip(args.images, results):
        print(image)
        for rank, (name, prob) in enumerate(top, 1):
            print(f"  {rank}. {name:<{width}}  {prob:.4f}")
    return 0


if __name__ == "__main__":
    tool_exit(main)
