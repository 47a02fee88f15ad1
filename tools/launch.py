"""Start a training run detached in tmux: python tools/launch.py recipes/lenet_digits.yaml [--gpus 0,1] [--keep-alive]."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.cli import add_run_options, resume_mode  # noqa: E402
from research.detached.notify import EVENTS, NOTIFY_ENV  # noqa: E402
from research.detached.supervise import MAX_RESTARTS, policy_help  # noqa: E402
from research.errors import ExitCode, exit_status_help, tool_exit  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,          # the resume command leaves out --notify's command: it must be spelled out
        description="Run tools/train.py RECIPE in a new detached tmux session named after the run, its output "
                    "teed to RUN_DIR/console.log, so it survives logging out. Running the same command again "
                    "after a stop, crash or reboot resumes the run (same run directory, same MLflow run). "
                    "With --keep-alive nobody has to: the run is restarted after kill -9, the OOM killer, a crash "
                    "or a reboot (docs/long-runs.md).",
        epilog="The session stays open after the run ends and shows the trainer's exit status. Trainer's "
               + exit_status_help(ExitCode.OK, ExitCode.FAILED, ExitCode.USER_ERROR, ExitCode.UNHEALTHY,
                                  ExitCode.SAVE_FAILED, ExitCode.SIGNAL)
               + f" Under --keep-alive, by that status: {policy_help()}."
               + " This tool itself exits 0 once the session is started, 2 if it cannot start it. Set "
                 "RESEARCH_TMUX_SOCKET=NAME to use a private tmux server (tmux -L NAME) instead of your default one.")
    add_run_options(parser, recipe_required=False)
    parser.add_argument("--name", default=None,
                        help="tmux session name; default the recipe name (characters other than letters, digits, "
                             "'-' and '_' become '_': tmux forbids '.' and ':')")
    keep = parser.add_argument_group("keep-alive")
    keep.add_argument("--keep-alive", action="store_true",
                      help="supervise the run: restart it after kill -9, the OOM killer or a crash (resuming into "
                           "the same run directory and MLflow run), and after a reboot through one @reboot line in "
                           "your crontab or a systemd --user unit (installed now, removed with the last "
                           "supervised run); Ctrl-C, SIGTERM and tmux kill-session stop it for good")
    keep.add_argument("--max-restarts", type=int, default=MAX_RESTARTS, metavar="N",
                      help=f"give up after N restarts in a row without a new checkpoint (a crash loop); "
                           f"default {MAX_RESTARTS}")
    keep.add_argument("--notify", default=os.environ.get(NOTIFY_ENV) or None, metavar="CMD",
                      help=f"shell command run on each event ({', '.join(EVENTS)}) with RESEARCH_EVENT, "
                           f"RESEARCH_RUN_NAME, RESEARCH_RUN_DIR, RESEARCH_MLFLOW_URL, RESEARCH_EPOCH, RESEARCH_EPOCHS, "
                           f"RESEARCH_VAL_TOP1, RESEARCH_EXIT_STATUS, RESEARCH_MESSAGE set and a one-line summary on "
                           f"stdin, e.g. 'mail -s \"run news\" me@example.com'; at most 30 s a call; default "
                           f"${NOTIFY_ENV}. It reaches the supervisor through its environment, on no command line "
                           f"and in no log; export {NOTIFY_ENV} instead of passing a webhook's token here, where it "
                           f"is on this tool's command line while it runs")
    keep.add_argument("--list", action="store_true", help="show the supervised runs and the boot entry, then exit")
    keep.add_argument("--forget", type=Path, metavar="RUN_DIR",
                      help="drop RUN_DIR from the supervised runs: a reboot no longer starts it")
    keep.add_argument("--boot", action="store_true",
                      help="start again every supervised run that is not running (what the boot entry runs)")
    args = parser.parse_args(argv)
    if not (args.recipe or args.list or args.forget or args.boot):
        parser.error("the following arguments are required: recipe")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.detached.launch import SOCKET_ENV, KeepAlive, launch

    if args.list or args.forget or args.boot:
        from research.detached import keep_alive
        print(keep_alive.format_list() if args.list else keep_alive.forget(args.forget) if args.forget
              else "\n".join(keep_alive.boot()) or "no supervised runs")
        return 0
    supervised = KeepAlive(args.max_restarts, args.notify) if args.keep_alive else None
    relaunch = shlex.join(["python", "tools/launch.py", *resume_argv(argv)])
    notified = any(arg == "--notify" or arg.startswith("--notify=") for arg in argv)
    note = f" (and your --notify command, or export {NOTIFY_ENV})" if notified else ""
    started = launch(args.recipe, args.overrides, gpus=args.gpus, name=args.name, output=args.output,
                     resume=resume_mode(args), socket=os.environ.get(SOCKET_ENV) or None,
                     keep_alive=supervised, resume_command=relaunch)
    print(started.instructions(relaunch + note))
    return 0


def resume_argv(argv: list[str]) -> list[str]:
    """`argv` for the resume command: without --fresh, and without --notify and its command, which may hold a
    token (the resume command is printed, and logged by the trainer when it stops)."""
    out, skip = [], False
    for arg in argv:
        if not skip and arg != "--fresh" and arg != "--notify" and not arg.startswith("--notify="):
            out.append(arg)
        skip = arg == "--notify"
    return out


if __name__ == "__main__":
    tool_exit(main)
