"""The state of every run under an output root (tools/status.py), from each run directory's status.json and
keep-alive record (research/rundir/): a run whose process is gone (kill -9, reboot) shows as "dead", or
"restarting" while its keep-alive supervisor is about to start it again."""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..detached.launch import SessionInfo
from ..durations import format_duration
from ..rundir.files import STATUS, SUBFOLDERS
from ..rundir.status import UNREADABLE, classify, read_status
from ..rundir.supervision import read_keep_alive, supervisor_alive
from ..tables import fitted_table, percent, terminal_width

SKIP_DIRS = {*SUBFOLDERS, "__pycache__"}     # a run's own subfolders hold no runs


@dataclass
class StatusRow:
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


def find_run_dirs(root: Path, max_depth: int = 3) -> list[Path]:
    """Folders under `root` (itself included) that hold a status.json, sorted by path."""
    found = []
    root = Path(root)
    for folder, subdirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        if STATUS in files:
            found.append(Path(folder))
        subdirs[:] = [d for d in subdirs if d not in SKIP_DIRS and not d.startswith(".") and depth < max_depth]
    return sorted(found)


def collect(root: Path, sessions: dict[Path, SessionInfo] | None = None,
            now: float | None = None) -> list[StatusRow]:
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
        status = read_status(run_dir)
        if status is None:                     # removed since the walk found it
            continue
        if status.state == UNREADABLE:
            runs.append(StatusRow(name, str(run_dir), UNREADABLE, session=session and session.name))
            continue
        state = classify(status, now)
        if session and session.alive and float(status.updated or 0) < session.created:
            state = "starting"
        record = read_keep_alive(run_dir)
        if state == "dead" and record.get("state") in ("restarting", "watching") and supervisor_alive(record):
            state = "restarting"
        restarts = record.get("restarts") if record else None
        runs.append(StatusRow(
            name, str(run_dir), state, epoch=status.epoch, epochs=status.epochs, batch=status.batch,
            batches=status.batches, train_loss=status.train_loss, val_top1=status.val_top1,
            img_per_s=status.img_per_s, eta_s=status.eta_s, age_s=now - status.updated if status.updated else None,
            host=status.host, pid=status.pid, run_id=status.run_id, session=session and session.name,
            kind=status.kind or "run", trials=status.trials, trials_done=status.trials_done,
            restarts=len(restarts) if restarts is not None else None,
            last_restart=restarts[-1].get("cause") if restarts else None, went_back=status.went_back,
            pruned=status.pruned if state == "pruned" else None))
    listed = {Path(run.run_dir) for run in runs}
    for run_dir, session in sorted(sessions.items()):
        if run_dir not in listed and (run_dir == root or root in run_dir.parents):
            name = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
            runs.append(StatusRow(name, str(run_dir), "starting" if session.alive else "exited",
                                  session=session.name))
    return runs


def as_json(runs: list[StatusRow]) -> str:
    return json.dumps([asdict(run) for run in runs], indent=1)


def format_table(runs: list[StatusRow], width: int | None = None) -> str:
    """One run per line, '-' where a figure is not known yet, within `width` columns (default the terminal's): a
    sweep's trials are indented under its row by their own folder's name, and run names wrap if still too wide."""
    header = ("run", "state", "epoch", "val top-1", "img/s", "ETA", "updated", "tmux")
    supervised = any(run.restarts is not None for run in runs)      # a column only when a run has a supervisor
    sweeps = [run.name + "/" for run in runs if run.kind == "sweep"]
    rows = []
    for run in runs:
        running = run.state == "running"
        under = next((sweep for sweep in sweeps if run.name.startswith(sweep)), "")
        rows.append([
            "  " + run.name[len(under):] if under else run.name, run.state, format_epoch(run), percent(run.val_top1),
            f"{run.img_per_s:.0f}" if run.img_per_s is not None else "-",
            format_duration(run.eta_s) if running and run.eta_s is not None else "-",
            f"{format_duration(run.age_s)} ago" if run.age_s is not None else "-",
            run.session or "-"] + ([format_restarts(run)] if supervised else []))
    header += ("restarts",) if supervised else ()
    table = fitted_table(header, rows, width or terminal_width(), 0, 16, "plain")     # run names wrap if need be
    notes = [f"{run.name} resumed {run.went_back}" for run in runs if run.went_back]
    notes += [f"{run.name} pruned {run.pruned}" for run in runs if run.pruned]
    return "\n".join([table, *notes])


def format_restarts(run: StatusRow) -> str:
    """'2, last: killed by SIGKILL' for a supervised run: the count and the last cause's first words."""
    if run.restarts is None:
        return "-"
    if not run.restarts or not run.last_restart:
        return str(run.restarts)
    return f"{run.restarts}, last: {run.last_restart.split(' (')[0].split(':')[0]}"


def format_epoch(run: StatusRow) -> str:
    """'12/80' epochs done, with how far the next one has got while it runs: '12/80 +43%'; a sweep: '3/4 trials'."""
    if run.kind == "sweep":
        return f"{run.trials_done}/{run.trials} trials" if run.trials is not None else "-"
    if run.epochs is None:
        return "-"
    text = f"{run.epoch}/{run.epochs}"
    if run.state == "running" and run.batch and run.batches:
        text += f" +{run.batch / run.batches:.0%}"
    return text

