"""Start a training run detached in tmux: python tools/launch.py recipes/lenet_digits.yaml [--gpus 0,1]."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.cli import add_run_options  # noqa: E402
from research.errors import ExitCode, exit_status_help  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run tools/train.py RECIPE in a new detached tmux session named after the run, its output "
                    "teed to RUN_DIR/console.log, so it survives logging out. Running the same command again "
                    "after a stop, crash or reboot resumes the run (same run directory, same MLflow run).",
        epilog="The session stays open after the run ends and shows the trainer's exit status. Trainer's "
               + exit_status_help(ExitCode.OK, ExitCode.FAILED, ExitCode.USER_ERROR, ExitCode.UNHEALTHY,
                                  ExitCode.SAVE_FAILED, ExitCode.SIGNAL)
               + " This tool itself exits 0 once the session is started, 2 if it cannot start it. Set "
                 "RESEARCH_TMUX_SOCKET=NAME to use a private tmux server (tmux -L NAME) instead of your default one.")
    add_run_options(parser)
    parser.add_argument("--name", default=None,
                        help="tmux session name; default the recipe name (characters other than letters, digits, "
                             "'-' and '_' become '_': tmux forbids '.' and ':')")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.errors import UserError
    from research.runs.launch import SOCKET_ENV, launch

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
