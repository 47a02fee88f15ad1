"""List the runs under an output root: python tools/status.py [--root runs/] [--format text|json]."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.errors import UserError, tool_exit  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    from research.paths import RUNS
    parser = argparse.ArgumentParser(
        description="Show every run under the output root: state, epochs done of N (+ how far the epoch under way "
                    "has got), last val top-1, images/s, ETA, age of the last status update (a running trainer "
                    "reports every train.log_every batches) and the tmux session that runs it.",
        epilog="States: running, finished, killed (stopped by a signal; rerun the command to resume), failed, "
               "dead (status.json says running but its process is gone from this host: kill -9 or a reboot; "
               "rerun the command to resume), stale (running on another host that has not reported for "
               "over two epochs), starting / exited (a tmux session whose trainer has not written status.json "
               "yet / ended before it did: see RUN_DIR/console.log), waiting (a sweep's trial not started yet). "
               "A sweep (tools/sweep.py) has a row of its own, trials done of all, above its trials' rows. "
               "RESEARCH_TMUX_SOCKET=NAME looks for "
               "sessions on the private tmux server `tmux -L NAME`.")
    parser.add_argument("--root", type=Path, default=RUNS,
                        help=f"folder holding run directories (searched 3 levels deep); default {RUNS}")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text: a table; json: a list of objects with every field, for scripts")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.detached.launch import SOCKET_ENV, sessions_by_run_dir
    from research.inspection.status import as_json, collect, format_table

    if not args.root.is_dir():
        raise UserError(f"no output root at {args.root}: start a run with tools/launch.py RECIPE, "
                        f"or pass --root to the folder given as --output")
    runs = collect(args.root, sessions_by_run_dir(os.environ.get(SOCKET_ENV) or None))
    if args.format == "json":
        print(as_json(runs))
    elif runs:
        print(format_table(runs))
    else:
        print(f"no runs under {args.root} (a run directory holds a status.json)")
    return 0


if __name__ == "__main__":
    tool_exit(main)
