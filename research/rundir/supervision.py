"""RUN_DIR/keep-alive.json: the keep-alive supervisor's record of a run (research/detached/supervise.py writes
it): its state, the restarts and their causes, and the supervisor's own process, for tools/status.py,
tools/launch.py --list and --boot."""
from __future__ import annotations

import json
import socket
from pathlib import Path

from .. import atomic
from .files import KEEP_ALIVE
from .status import pid_alive

# The record's states the supervisor is done with (a boot entry does not start these again).
FINAL = {"finished", "stopped", "failed", "guard", "pruned", "crash-loop"}


def read_keep_alive(run_dir: Path) -> dict:
    """RUN_DIR/keep-alive.json, {} if the run was never supervised (or the file is unreadable)."""
    try:
        content = json.loads((Path(run_dir) / KEEP_ALIVE).read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def write_keep_alive(run_dir: Path, record: dict) -> None:
    """Write the record atomically. Raises OSError (a full disk: the supervisor says so and goes on)."""
    atomic.write_text(Path(run_dir) / KEEP_ALIVE, json.dumps(record, indent=1))


def keep_alive_path(run_dir: Path) -> Path:
    return Path(run_dir) / KEEP_ALIVE


def supervisor_alive(record: dict) -> bool:
    """True if the keep-alive record's supervisor process still runs on this host."""
    info = record.get("supervisor") or {}
    return (info.get("host") == socket.gethostname() and bool(info.get("pid")) and
            pid_alive(int(info["pid"]), float(info.get("started") or 0)))
