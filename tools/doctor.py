"""Can this machine run the reference recipe on its GPUs? python tools/doctor.py [--output RUN_DIR]."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.devices import set_cpu_threads  # noqa: E402  (before mxnet is imported, as tools/train.py)
from research.errors import ExitCode, exit_status_help, tool_exit  # noqa: E402
from research.paths import RUNS  # noqa: E402

set_cpu_threads()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Before a multi-day run: the NVIDIA driver and the newest CUDA it runs, the installed MXNet build, "
                    "each CUDA library it links (found where, or missing), each GPU with its compute capability "
                    "and memory and whether the build has kernels for it (read from libmxnet.so itself), NCCL, "
                    "free disk for the run directory, tmux and the MLflow store. Where GPUs are usable it runs a "
                    "small convolution forward and backward on each and compares it with the CPU. Ends with the "
                    "one fix when something stops the GPU path (docs/long-runs.md).",
        epilog=exit_status_help(ExitCode.OK, (ExitCode.USER_ERROR, "not ready: the last lines name what stops a GPU "
                                                                   "run and the one fix")))
    parser.add_argument("--output", type=Path, default=RUNS, help=f"the run directory whose disk to check "
                                                                   f"(default {RUNS})")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.doctor import examine, format_report

    report = examine(args.output)
    print(format_report(report))
    return ExitCode.OK if report.ready else ExitCode.USER_ERROR


if __name__ == "__main__":
    tool_exit(main)
