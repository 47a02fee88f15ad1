"""Distributed training: python tools/launch_dist.py --hosts hosts.txt -- python tools/train.py RECIPE ..."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.errors import tool_exit  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Start a distributed job on MXNet's parameter-server kvstore: the scheduler and servers, "
                    "and the command after -- once per worker, on the hosts listed (over ssh with BatchMode, in "
                    "this working directory), or all on this machine when the hosts file says localhost. "
                    "The recipe needs train.kvstore: dist_sync (or --set train.kvstore=dist_sync).",
        epilog="Signals (Ctrl-C, SIGTERM, SIGHUP) go to the workers: rank 0 writes a checkpoint and stops, then "
               "everything is ended; run the same command again to resume. If any process dies, all the others "
               "are ended (SIGTERM, SIGKILL after 10 s). Exit status: 0 all workers finished, 2 a user error "
               "(or the workers' status), 128+N stopped by signal N, 1 otherwise. See docs/distributed.md.")
    parser.add_argument("--hosts", required=True, type=Path,
                        help="hosts file: one line per worker, e.g. 'localhost' on two lines for 2 workers here, "
                             "or one IP address (or resolvable name, [user@]host) per worker machine")
    parser.add_argument("--servers", type=int, default=None,
                        help="kvstore server processes, placed round-robin over the distinct hosts "
                             "(default: one per distinct host)")
    parser.add_argument("--port", type=int, default=None,
                        help="scheduler port (DMLC_PS_ROOT_PORT) on the first host; the servers and workers "
                             "listen on the ports just above it (default 9091)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds allowed for all nodes to connect at the start, and for the rest to end "
                             "once a worker has finished or a stop signal came; then everything is ended "
                             "(default 300)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="after --: the worker command, e.g. -- python tools/train.py recipes/smoke/"
                             "lenet_digits_dist.yaml --output runs/dist")
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.dist.nodes import DEFAULT_PORT, launch, read_hosts

    hosts = read_hosts(args.hosts)
    return launch(hosts, args.command, args.servers, args.port or DEFAULT_PORT, args.timeout)


if __name__ == "__main__":
    tool_exit(main)
