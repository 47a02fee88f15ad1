"""Measure speed: python tools/benchmark.py data recipes/squeezenet_imagenet.yaml [--threads 1,2,4]."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.devices import set_cpu_threads  # noqa: E402  (before mxnet is imported, as tools/train.py)

set_cpu_threads()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure images/s. 'data': the recipe's RecordIO train pipeline (decode + augment) "
                    "against a bare ImageRecordIter, per decode-thread count: compare with the images/s "
                    "the GPUs train at to know whether they will starve.",
        epilog="Exit status: 0 done, 2 a user error (bad recipe, missing .rec). Figures on a shared or "
               "busy machine are noisy: run twice.")
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="decode + augment images/s of the recipe's train data")
    data.add_argument("recipe", help="recipe YAML with data.kind: recordio")
    data.add_argument("--threads", default="1,2,4,0",
                      help="comma-separated decode-thread counts to try; 0 = one per core (default 1,2,4,0)")
    data.add_argument("--seconds", type=float, default=10.0, help="seconds measured per row (default 10)")
    data.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a recipe value, e.g. --set train.batch_size=64; repeatable")
    # 'train' (model images/s per device set, research/train/benchmark.py) is added here as a second parser.
    return parser.parse_args(argv)


def run_data(args: argparse.Namespace) -> int:
    from research.config import load_recipe
    from research.data.benchmark import benchmark_data

    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        print(f"error: --threads {args.threads!r}: expected integers such as 1,2,4", file=sys.stderr)
        return 2
    recipe = load_recipe(args.recipe, args.overrides)
    rows = benchmark_data(recipe, threads, args.seconds)
    print(f"{'pipeline':<16} {'threads':>7} {'instances':>9} {'decode_thr':>10} {'img/s':>8} "
          f"{'img/s/thread':>12} {'img/cpu_s':>9}")
    for row in rows:
        print(f"{row['pipeline']:<16} {row['threads']:>7} {row['instances']:>9} {row['decode_threads']:>10} "
              f"{row['img_per_s']:>8.0f} {row['img_per_s_per_thread']:>12.0f} {row['img_per_cpu_s']:>9.0f}")
    print("img/cpu_s: images per CPU-second used by this process = images/s per fully busy core.")
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.config import RecipeError

    try:
        return run_data(args)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
