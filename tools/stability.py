"""Does SqueezeNet 1.0 train at the reference set-up? python tools/stability.py run --out runs/stability.jsonl
then python tools/stability.py report runs/stability.jsonl --png docs/img/squeezenet-stability.png."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.errors import ExitCode, UserError, exit_status_help, tool_exit  # noqa: E402
from research.devices import set_cpu_threads  # noqa: E402  (before mxnet is imported)

set_cpu_threads()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Short SqueezeNet 1.0 probes with the reference optimiser (batch 128, 1,000 outputs, SGD "
                    "0.01, momentum 0.9, wd 2e-4, mean-subtracted 0-255 pixels) on scikit-learn's digits "
                    "upscaled to RGB: each run learns, stalls, dies or goes NaN at a step.",
        epilog=exit_status_help(ExitCode.OK, (ExitCode.USER_ERROR, "a bad argument")))
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the probes not yet in --out (appends one JSON line per probe)")
    run.add_argument("--out", type=Path, required=True, help="JSON lines file, e.g. runs/stability.jsonl")
    run.add_argument("--variants", nargs="+", default=None, help="configs (default: all of VARIANTS)")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    run.add_argument("--steps", type=int, default=200)
    run.add_argument("--size", type=int, default=64, help="image side in px (the reference: 227)")
    report = sub.add_parser("report", help="print the markdown table; --png draws the loss curves")
    report.add_argument("results", type=Path, nargs="+", help="JSON lines files written by run")
    report.add_argument("--png", type=Path, help="where to draw the loss curves")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.bench.stability import VARIANTS, read_records, sweep, table

    if args.command == "run":
        names = args.variants or list(VARIANTS)
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            raise UserError(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        sweep(names, args.seeds, args.steps, args.size, args.out)
        return 0
    records = read_records(args.results)
    print(table(records))
    if args.png:
        from research.bench.stability import plot_probe_curves
        plot_probe_curves(records, args.png)
    return 0


if __name__ == "__main__":
    tool_exit(main)
