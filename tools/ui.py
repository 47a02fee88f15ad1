"""The MLflow UI for this repo's store: print the one-liner, tunnel and links, or --serve it."""
from __future__ import annotations

import argparse
import getpass
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.errors import UserError, tool_exit  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Print how to open the MLflow UI on this store (bound to 127.0.0.1, the light "
                    "settings), the SSH tunnel for a remote box, and links to each experiment's "
                    "training runs; with --serve, start the server too.")
    parser.add_argument("--experiment", default=None, help="link only this experiment (default: all)")
    parser.add_argument("--port", type=int, default=None,
                        help="port to serve on and to link to (default $RESEARCH_UI_PORT, else 5000)")
    parser.add_argument("--serve", action="store_true",
                        help="start the server in this terminal (Ctrl-C stops it)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.inspection.compare import open_client
    from research.tracking import tracking_uri, ui_command
    from research.tracking.ui import QUIET_ENV, SERVER_ENV, experiment_url, server_args, ui_port

    args.port = args.port or ui_port()
    print(f"Serve the UI (with the repo virtualenv active):\n  {ui_command(args.port)}")
    print(f"From a laptop, tunnel to this machine, then open the links there:\n"
          f"  ssh -N -L {args.port}:127.0.0.1:{args.port} {getpass.getuser()}@{platform.node()}")
    try:
        experiments = open_client().search_experiments()
    except UserError as err:
        print(f"({err})")
        experiments = []
    chosen = [e for e in experiments if args.experiment in (None, e.name)]
    if args.experiment and not chosen:
        names = ", ".join(sorted(e.name for e in experiments)) or "none"
        raise UserError(f"no experiment '{args.experiment}' in {tracking_uri()}. Experiments: {names}.")
    if chosen:
        print("Training runs of each experiment (MLflow 3 otherwise opens on its GenAI view):")
        for experiment in sorted(chosen, key=lambda e: e.name):
            print(f"  {experiment.name}: {experiment_url(experiment.experiment_id, args.port)}")
    if not args.serve:
        return 0
    sys.stdout.flush()
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", **QUIET_ENV, **os.environ, **SERVER_ENV}   # ui_command()'s settings
    os.execve(sys.executable, [sys.executable, "-m", "mlflow", *server_args(args.port, quiet=True)], env)


if __name__ == "__main__":
    tool_exit(main)
