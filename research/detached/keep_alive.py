"""The user's supervised runs as tools/launch.py shows and restores them: --boot (what the boot entry runs)
starts again, each in its tmux session, every registered run that had not ended; --list and --forget.
"""
from __future__ import annotations

import subprocess
import time
from datetime import datetime
from pathlib import Path

import psutil
from tabulate import tabulate

from ..durations import format_duration
from ..errors import UserError
from ..rundir.status import is_alive, read_status
from ..rundir.supervision import FINAL, read_keep_alive, supervisor_alive
from . import boot_entry, registry
from .launch import list_sessions, new_session, supervised_pane_script, tmux


def boot() -> list[str]:
    """Start the supervisor of every registered run that is not running, each in its own tmux session; drop
    the entries of runs that have ended or whose folder is gone. Returns one line per run: what was done."""
    said = []
    for entry in registry.entries():
        run_dir = Path(entry.run_dir)
        record = read_keep_alive(run_dir)
        if not run_dir.is_dir():            # deleted, or on a disk not mounted yet at boot: not dropped on a guess
            said.append(f"{run_dir}: not found (a disk not mounted yet?); still registered, `python tools/launch.py "
                        f"--forget {run_dir}` drops it")
            continue
        if record.get("state") in FINAL:
            registry.remove(run_dir)
            said.append(f"{run_dir}: {record['state']} already; no longer supervised")
            continue
        if supervisor_alive(record) or is_alive(read_status(run_dir)):
            said.append(f"{run_dir}: still running; left alone")
            continue
        session = next((s for s in list_sessions(entry.socket) if s.name == entry.session), None)
        if session is not None and session.alive:
            said.append(f"{run_dir}: tmux session '{entry.session}' is taken by a live session; not started "
                        f"(kill that session, then run tools/launch.py --boot again)")
            continue
        if session is not None:        # the pane left open after the supervisor ended
            subprocess.run(tmux("kill-session", "-t", f"={entry.session}", socket=entry.socket), capture_output=True)
        cause = restart_cause(record, run_dir)
        try:
            new_session(entry.session, supervised_pane_script(entry.command, run_dir, Path(entry.cwd), entry.env,
                                                              cause), run_dir, entry.socket)
        except UserError as err:
            said.append(f"{run_dir}: {err}")
            continue
        said.append(f"{run_dir}: started again in tmux session '{entry.session}' ({cause})")
    return said


def restart_cause(record: dict, run_dir: Path) -> str:
    """Why the run needs starting: the machine rebooted since it was last seen, or its supervisor was gone."""
    status = read_status(run_dir)
    last_seen = max(float(record.get("updated") or 0), float(status.updated or 0) if status else 0.0)
    booted = psutil.boot_time()
    if booted > last_seen:
        return f"the machine restarted (booted {datetime.fromtimestamp(booted):%Y-%m-%d %H:%M})"
    return "its supervisor and tmux session were gone (tools/launch.py --boot)"


def format_list() -> str:
    """The supervised runs and the boot entry, for tools/launch.py --list."""
    rows = []
    for entry in registry.entries():
        record = read_keep_alive(Path(entry.run_dir))
        restarts = record.get("restarts") or []
        state = record.get("state", "starting")
        if state not in FINAL and state != "shutdown" and record and not supervisor_alive(record):
            state = "not running (tools/launch.py --boot starts it)"
        rows.append((entry.run_dir, entry.session, state, len(restarts),
                     restarts[-1]["cause"] if restarts else "-", _ago(entry.added)))
    installed = boot_entry.installed()
    lines = [tabulate(rows, headers=("run directory", "tmux", "state", "restarts", "last restart", "added"),
                      tablefmt="plain", disable_numparse=True) if rows else "no supervised runs"]
    if installed:
        lines.append(f"boot entry: {installed}")
    elif rows:
        lines.append("boot entry: none (no crontab or systemd --user here): after a reboot run "
                     "`python tools/launch.py --boot`")
    else:
        lines.append("boot entry: none (installed with the next --keep-alive run)")
    return "\n".join(lines)


def forget(run_dir: Path) -> str:
    """Drop a run from the supervised runs: a reboot no longer starts it (a live supervisor still restarts it
    after a crash until it ends). Raises UserError if it is not one of them."""
    if not registry.remove(Path(run_dir).resolve()):
        raise UserError(f"{run_dir} is not a supervised run; `python tools/launch.py --list` shows them.")
    return f"{run_dir}: forgotten; a reboot no longer starts it"


def _ago(when: float) -> str:
    return f"{format_duration(time.time() - when)} ago" if when else "-"
