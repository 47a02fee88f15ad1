"""Start a training run detached in tmux: python tools/launch.py recipes/lenet_digits.yaml [--gpus 0,1]."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run tools/train.py RECIPE in a new detached tmux session named after the run, its output "
                    "teed to RUN_DIR/console.log, so it survives logging out. Running the same command again "
                    "after a stop, crash or reboot resumes the run (same run directory, same MLflow run).",
        epilog="The session stays open after the run ends and shows the trainer's exit status (0 done, 2 user "
               "error, 3 NaN loss, 128+N stopped by signal N). Set RESEARCH_TMUX_SOCKET=NAME to use a private "
               "tmux server (tmux -L NAME) instead of your default one.")
    parser.add_argument("recipe", help="recipe YAML file, e.g. recipes/lenet_digits.yaml")
    parser.add_argument("--gpus", default="", help="comma-separated GPU ids, e.g. 0,1; omit to train on the CPU")
    parser.add_argument("--name", default=None,
                        help="tmux session name; default the recipe name (characters other than letters, digits, "
                             "'-' and '_' become '_': tmux forbids '.' and ':')")
    parser.add_argument("--output", type=Path, default=None,
                        help="run directory; default runs/<recipe name>/ (the trainer's default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set train.epochs=2; repeatable (see tools/train.py)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="require a checkpoint to resume from (without it, one is used when present)")
    mode.add_argument("--fresh", action="store_true",
                      help="start over: move the existing run directory aside (to <dir>.old-<time>) first")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.errors import UserError
    from research.launch import SOCKET_ENV, launch

    try:
        started = launch(args.recipe, args.overrides, gpus=args.gpus, name=args.name, output=args.output,
                         fresh=args.fresh, resume=args.resume, socket=os.environ.get(SOCKET_ENV) or None)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    relaunch = shlex.join(["python", "tools/launch.py", *[a for a in argv if a != "--fresh"]])
    print(started.instructions(relaunch))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
