"""Supervise a run's command (what tools/launch.py --keep-alive runs in the tmux pane): restart it after a
kill -9, the OOM killer or a crash; leave it stopped after a user's stop or a failure a rerun cannot fix."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.errors import tool_exit  # noqa: E402
from research.detached.supervise import MAX_RESTARTS, policy_help  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        usage="%(prog)s RUN_DIR --name NAME [options] -- COMMAND ...",
        description="Run COMMAND for RUN_DIR and run it again when it ends with a status a rerun can fix. "
                    "tools/launch.py --keep-alive starts this in the run's tmux pane; you rarely run it yourself. "
                    "What happened is in RUN_DIR/keep-alive.json and, as lines starting [keep-alive], on stdout.",
        epilog=f"By the command's exit status: {policy_help()}. Ctrl-C, SIGTERM and SIGHUP are passed on to "
               f"the command, which is then not restarted. This tool exits with the command's last status (128+N "
               f"after stop signal N; 1 after giving up on a crash loop).")
    parser.add_argument("run_dir", type=Path, help="the run directory (its checkpoints tell progress)")
    parser.add_argument("--name", required=True, help="the run's name in messages and notifications")
    parser.add_argument("--max-restarts", type=int, default=MAX_RESTARTS,
                        help=f"give up after this many restarts in a row without a new checkpoint; default {MAX_RESTARTS}")
    parser.add_argument("--notify", default=None, metavar="CMD",
                        help="shell command run on each event (default: $RESEARCH_NOTIFY, which is how "
                             "tools/launch.py passes it, on no command line)")
    parser.add_argument("--restart-cause", default=None,
                        help="this start is a restart, for this reason (the pane script and --boot pass it)")
    own, command = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser.parse_args(own)
    if not command:
        parser.error("no command to supervise: pass it after --")
    args.command = command
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.detached.notify import NOTIFY_ENV
    from research.detached.supervise import Supervisor

    notify = args.notify if args.notify is not None else os.environ.get(NOTIFY_ENV) or None
    supervisor = Supervisor(args.run_dir.resolve(), args.command, args.name, args.max_restarts, notify)
    return supervisor.run(args.restart_cause)


if __name__ == "__main__":
    tool_exit(main)
