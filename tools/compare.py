"""Compare MLflow runs: python tools/compare.py --experiment lenet_digits [--plot runs.png]."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.errors import ExitCode, exit_status_help, tool_exit  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="One row per run (status, epochs, best and final val top-1/top-5, wall time, img/s, "
                    "devices) and the recipe values that differ between the runs shown. Reads the store "
                    "at MLFLOW_TRACKING_URI, by default sqlite:///<repo>/mlruns/mlflow.db.",
        epilog=exit_status_help(ExitCode.OK, (ExitCode.USER_ERROR, "a user error (no such experiment or run, "
                                                                    "no runs)")))
    parser.add_argument("--experiment", default=None,
                        help="experiment name (the recipe name unless tracking.experiment set another); "
                             "default: the store's only experiment with runs")
    parser.add_argument("--runs", nargs="+", default=[], metavar="ID",
                        help="runs to compare, in this order: run ids, unique id prefixes (4+ hex digits) "
                             "or run directories (their run.json names the run)")
    parser.add_argument("--last", type=int, default=0, metavar="N",
                        help="only the N most recent runs of the experiment (default: all)")
    parser.add_argument("--format", choices=("text", "markdown", "csv"), default="text",
                        help="text tables (default), markdown tables, or one CSV with a row per run")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="also write a plot overlaying val top-1 and train loss per epoch of the runs")
    parser.add_argument("--port", type=int, default=None,
                        help="port of the MLflow UI in the printed compare link (default $RESEARCH_UI_PORT, else 5000)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.inspection.compare import collect, format_rows, plot_runs
    from research.tracking.ui import compare_url, serve_hint

    rows = collect(args.experiment, args.runs, args.last)
    if args.plot:
        plot_runs(rows, args.plot)
    print(format_rows(rows, args.format), end="")
    if args.format != "csv":
        link = compare_url([r.run_id for r in rows], [r.experiment_id for r in rows], args.port)
        print(f"\nIn the MLflow UI ({serve_hint(args.port)}): {link}")
        if args.plot:
            print(f"Plot: {args.plot}")
    return 0


if __name__ == "__main__":
    tool_exit(main)
