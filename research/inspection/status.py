"""The state of every run under an output root, read from each RUN_DIR/status.json.

The trainer writes status.json atomically at start, every train.log_every batches, after every
epoch and at the end; a run it says is running whose process is gone (kill -9, reboot) shows as "dead",
or "restarting" while its keep-alive supervisor (RUN_DIR/keep-alive.json) is about to start it again.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import psutil
from tabulate import tabulate

from ..durations import format_duration

SKIP_DIRS = {"checkpoints", "model", "__pycache__"}     # a run's own subfolders hold no runs
CLOCK_SLACK_S = 2.0          # psutil's create_time is derived from the boot time in whole seconds
STALE_AFTER_S = 6 * 3600     # no update for this long from another host, epoch length unknown
KEEP_ALIVE = "keep-alive.json"   # the keep-alive supervisor's record of a run (research/detached/supervise.py)


class SessionInfo(NamedTuple):
    """What the listing needs from the tmux session that runs a run directory."""
    name: str
    alive: bool          # its command still runs (a finished one stays open, showing the exit status)
    created: float       # epoch seconds


@dataclass
class RunStatus:
    """One row of tools/status.py; fields the trainer did not write yet are None."""
    name: str
    run_dir: str
    state: str              # running, finished, killed, failed, dead, stale, starting, exited, unreadable, waiting
    epoch: int | None = None           # epochs done
    epochs: int | None = None
    batch: int | None = None           # batches done in the epoch under way, of `batches`
    batches: int | None = None
    train_loss: float | None = None    # running mean over the epoch under way
    val_top1: float | None = None
    img_per_s: float | None = None
    eta_s: float | None = None
    age_s: float | None = None
    host: str | None = None
    pid: int | None = None
    run_id: str | None = None
    session: str | None = None
    kind: str = "run"                  # "sweep": a sweep's own row (tools/sweep.py), its trials' rows below it
    trials: int | None = None          # a sweep: its trials, and those done (finished or failed)
    trials_done: int | None = None
    restarts: int | None = None        # a supervised run (--keep-alive): restarts so far, and the last one's cause
    last_restart: str | None = None
    went_back: str | None = None       # resumed from a checkpoint older than MLflow's record: from which epoch, why
    pruned: str | None = None          # a sweep's trial its pruner stopped: at which epoch, against what


def read_status(run_dir: Path) -> dict | None:
    """RUN_DIR/status.json as a dict, None if absent; ValueError if it is not a JSON object."""
    path = Path(run_dir) / "status.json"
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: {err}") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return info


def read_keep_alive(run_dir: Path) -> dict:
    """RUN_DIR/keep-alive.json, {} if the run was never supervised (or the file is unreadable)."""
    try:
        content = json.loads((Path(run_dir) / KEEP_ALIVE).read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def supervisor_alive(record: dict) -> bool:
    """True if the keep-alive record's supervisor process still runs on this host."""
    info = record.get("supervisor") or {}
    return (info.get("host") == socket.gethostname() and bool(info.get("pid")) and
            pid_alive(int(info["pid"]), float(info.get("started") or 0)))


def pid_alive(pid: int, since: float) -> bool:
    """True if process `pid` runs and started before time `since` (else the pid was reused); a zombie (killed,
    not yet reaped: its parent died too, e.g. the tmux pane's shell) is not alive."""
    try:
        process = psutil.Process(pid)
        started = process.create_time()
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.AccessDenied:
        return True
    return started <= since + CLOCK_SLACK_S


def classify(info: dict, now: float | None = None, hostname: str | None = None) -> str:
    """The state to show for a status.json: its own word, or dead/stale for a 'running' that is not."""
    status = info.get("status", "unknown")
    if status != "running":
        return status
    now = time.time() if now is None else now
    hostname = socket.gethostname() if hostname is None else hostname
    updated = float(info.get("updated") or 0)
    if info.get("host") == hostname:
        return "running" if info.get("pid") and pid_alive(int(info["pid"]), updated) else "dead"
    # Another host (shared filesystem): its pids mean nothing here, so judge by the update's age.
    return "stale" if now - updated > _expected_interval(info) * 2 + 600 else "running"


def _expected_interval(info: dict) -> float:
    """Seconds between status updates: one epoch, estimated from the ETA; STALE_AFTER_S if unknown."""
    left = (info.get("epochs") or 0) - (info.get("epoch") or 0)
    if info.get("eta_s") and left > 0:
        return float(info["eta_s"]) / left
    return STALE_AFTER_S / 2


def find_run_dirs(root: Path, max_depth: int = 3) -> list[Path]:
    """Folders under `root` (itself included) that hold a status.json, sorted by path."""
    found = []
    root = Path(root)
    for folder, subdirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        if "status.json" in files:
            found.append(Path(folder))
        subdirs[:] = [d for d in subdirs if d not in SKIP_DIRS and not d.startswith(".") and depth < max_depth]
    return sorted(found)


def collect(root: Path, sessions: dict[Path, SessionInfo] | None = None,
            now: float | None = None) -> list[RunStatus]:
    """Status of every run under `root`.

    Args:
        root: output root, e.g. runs/.
        sessions: run directory -> its tmux session, as research.detached.launch.sessions_by_run_dir
            returns. A live session newer than the run's status.json (the relaunched trainer
            has not reported yet) shows as "starting"; one whose run never wrote status.json
            shows as "starting", or "exited" once its command ended.
    """
    root = Path(root).resolve()
    now = time.time() if now is None else now
    sessions = {Path(k).resolve(): v for k, v in (sessions or {}).items()}
    runs = []
    for run_dir in find_run_dirs(root):
        name = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
        session = sessions.get(run_dir)
        try:
            info = read_status(run_dir)
        except ValueError:
            runs.append(RunStatus(name, str(run_dir), "unreadable", session=session and session.name))
            continue
        state = classify(info, now)
        if session and session.alive and float(info.get("updated") or 0) < session.created:
            state = "starting"
        record = read_keep_alive(run_dir)
        if state == "dead" and record.get("state") in ("restarting", "watching") and supervisor_alive(record):
            state = "restarting"
        restarts = record.get("restarts") if record else None
        runs.append(RunStatus(
            name, str(run_dir), state, epoch=info.get("epoch"), epochs=info.get("epochs"),
            batch=info.get("batch"), batches=info.get("batches"), train_loss=info.get("train_loss"),
            val_top1=info.get("val_top1"), img_per_s=info.get("img_per_s"), eta_s=info.get("eta_s"),
            age_s=now - info["updated"] if info.get("updated") else None, host=info.get("host"),
            pid=info.get("pid"), run_id=info.get("run_id"), session=session and session.name,
            kind=info.get("kind", "run"), trials=info.get("trials"), trials_done=info.get("trials_done"),
            restarts=len(restarts) if restarts is not None else None,
            last_restart=restarts[-1].get("cause") if restarts else None, went_back=info.get("went_back"),
            pruned=info.get("pruned") if state == "pruned" else None))
    listed = {Path(run.run_dir) for run in runs}
    for run_dir, session in sorted(sessions.items()):
        if run_dir not in listed and (run_dir == root or root in run_dir.parents):
            name = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
            runs.append(RunStatus(name, str(run_dir), "starting" if session.alive else "exited",
                                  session=session.name))
    return runs


def as_json(runs: list[RunStatus]) -> str:
    return json.dumps([asdict(run) for run in runs], indent=1)


def format_table(runs: list[RunStatus]) -> str:
    """A fixed-width table, one run per line; '-' where a figure is not known yet."""
    header = ("run", "state", "epoch", "val top-1", "img/s", "ETA", "updated", "tmux")
    supervised = any(run.restarts is not None for run in runs)      # a column only when a run has a supervisor
    rows = []
    for run in runs:
        running = run.state == "running"
        rows.append((
            run.name, run.state, format_epoch(run),
            f"{run.val_top1:.2%}" if run.val_top1 is not None else "-",
            f"{run.img_per_s:.0f}" if run.img_per_s is not None else "-",
            format_duration(run.eta_s) if running and run.eta_s is not None else "-",
            f"{format_duration(run.age_s)} ago" if run.age_s is not None else "-",
            run.session or "-") + ((format_restarts(run),) if supervised else ()))
    table = tabulate(rows, headers=header + (("restarts",) if supervised else ()), tablefmt="plain",
                     disable_numparse=True)
    notes = [f"{run.name} resumed {run.went_back}" for run in runs if run.went_back]
    notes += [f"{run.name} pruned {run.pruned}" for run in runs if run.pruned]
    return "\n".join([table, *notes])


def format_restarts(run: RunStatus) -> str:
    """'2, last: killed by SIGKILL' for a supervised run: the count and the last cause's first words."""
    if run.restarts is None:
        return "-"
    if not run.restarts or not run.last_restart:
        return str(run.restarts)
    return f"{run.restarts}, last: {run.last_restart.split(' (')[0].split(':')[0]}"


def format_epoch(run: RunStatus) -> str:
    """'12/80' epochs done, with how far the next one has got while it runs: '12/80 +43%'; a sweep: '3/4 trials'."""
    if run.kind == "sweep":
        return f"{run.trials_done}/{run.trials} trials" if run.trials is not None else "-"
    if run.epochs is None:
        return "-"
    text = f"{run.epoch}/{run.epochs}"
    if run.state == "running" and run.batch and run.batches:
        text += f" +{run.batch / run.batches:.0%}"
    return text

