"""The user's supervised runs, one file each under ~/.local/state/research/keep-alive/: what
tools/launch.py --list shows and what the boot entry (research/detached/boot_entry.py) starts again.

An entry holds what the tmux pane needs to start the run's supervisor again: its command, working
folder and environment (which may hold credentials, such as MLFLOW_TRACKING_PASSWORD: the folder is
private to the user). The boot entry is installed with the first entry and removed with the last.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from .. import atomic
from ..paths import TOOLS
from . import boot_entry


@dataclass
class Entry:
    run_dir: str
    session: str                # tmux session name
    socket: str | None          # a private tmux server (tmux -L), else the user's default one
    command: list[str]          # the supervisor's command line (research.detached.supervise.supervise_command)
    cwd: str
    env: dict[str, str]         # what the pane exports (research.detached.launch.passed_env)
    added: float = 0.0


def state_dir() -> Path:
    """~/.local/state/research (not $XDG_STATE_HOME: the boot entry runs without the login's environment)."""
    return Path.home() / ".local" / "state" / "research"


def entries_dir() -> Path:
    return state_dir() / "keep-alive"


def boot_command() -> str:
    """What the boot entry runs: this checkout's tools/launch.py --boot, with this PATH (for tmux), logged."""
    log = state_dir() / "boot.log"
    return (f"PATH={shlex.quote(os.environ.get('PATH', '/usr/bin:/bin'))} {shlex.quote(sys.executable)} "
            f"{shlex.quote(str(TOOLS / 'launch.py'))} --boot >> {shlex.quote(str(log))} 2>&1")


def entry_path(run_dir: str | Path) -> Path:
    return entries_dir() / (hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16] + ".json")


def add(entry: Entry) -> str:
    """Register `entry` and install the boot entry; returns how the run comes back after a reboot (to print)."""
    with _locked():
        entry.added = entry.added or time.time()
        atomic.write_text(entry_path(entry.run_dir), json.dumps(asdict(entry), indent=1))
        try:
            how = boot_entry.install(boot_command())
        except boot_entry.BootEntryError as err:
            return f"not restarted after a reboot: {err}; after one, run `python tools/launch.py --boot`"
    if not how:
        return ("not restarted after a reboot: this machine has neither crontab nor systemd --user (install cron: "
                "`sudo apt-get install cron`); after one, run `python tools/launch.py --boot`")
    return f"restarted after a reboot by {how}"


def remove(run_dir: str | Path) -> bool:
    """Drop the run's entry (no-op if none); the boot entry goes with the last one. True if there was one."""
    if not entry_path(run_dir).exists():         # nothing to drop: leave HOME as it is (an unregistered run)
        return False
    with _locked():
        path = entry_path(run_dir)
        existed = path.exists()
        path.unlink(missing_ok=True)
        if existed and not any(entries_dir().glob("*.json")):
            try:
                boot_entry.remove()
            except boot_entry.BootEntryError as err:
                print(f"[keep-alive] could not remove the boot entry: {err}", file=sys.stderr)
    return existed


def entries() -> list[Entry]:
    """Every registered run, oldest first; unreadable files are skipped."""
    found = []
    for path in sorted(entries_dir().glob("*.json")) if entries_dir().is_dir() else []:
        try:
            found.append(Entry(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(found, key=lambda entry: entry.added)


@contextmanager
def _locked() -> Iterator[None]:
    """One writer at a time (two supervisors ending at once both edit the crontab); the folder made private."""
    folder = entries_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    with open(state_dir() / "keep-alive.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
