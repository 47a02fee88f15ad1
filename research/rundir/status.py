"""RUN_DIR/status.json: where a run is, for tools/status.py, the keep-alive supervisor, a sweep and
research.load_run. One record (`Status`), one writer (`write_status`), one reader (`read_status`) with one
rule: no file is None, a damaged one a Status whose state is "unreadable". And whether a run is alive.

The trainer writes it atomically at start, every train.log_every batches, after every epoch and at the end;
a run it says is running whose process is gone (kill -9, reboot) is "dead" (`classify`).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import psutil

from .. import atomic
from .files import STATUS

log = logging.getLogger("research.training")
STATUS_BYTES = 4096          # the file is padded to this size: on a full disk it is rewritten in place (no new block)
CLOCK_SLACK_S = 2.0          # psutil's create_time is derived from the boot time in whole seconds
STALE_AFTER_S = 6 * 3600     # no update for this long from another host, epoch length unknown
UNREADABLE = "unreadable"    # the state of a status.json that is not a JSON object


@dataclass(frozen=True)
class Status:
    """status.json's content. `state` is the file's "status": running, finished, killed, failed or pruned (a sweep's
    trial), a sweep's waiting trial, or UNREADABLE; fields a writer did not set are None."""
    state: str
    run_id: str | None = None
    pid: int | None = None               # the writer's process, host and time (write_status sets them)
    host: str | None = None
    updated: float | None = None
    epoch: int | None = None             # epochs done, of `epochs`
    epochs: int | None = None
    batch: int | None = None             # batches done in the epoch under way, of `batches`
    batches: int | None = None
    step: int | None = None
    train_loss: float | None = None      # running mean over the epoch under way
    val_top1: float | None = None
    img_per_s: float | None = None
    eta_s: float | None = None           # the run's remaining time (training.report's one estimate)
    eta_epoch_s: float | None = None
    went_back: str | None = None         # resumed from a checkpoint older than MLflow's record: from which epoch, why
    pruned: str | None = None            # a sweep's trial its pruner stopped (state "pruned"): at which epoch, why
    failure: str | None = None           # why a run nothing will restart was settled as failed (settle.py)
    task: str | None = None              # the transfer job's "transfer", with its val_log_loss
    val_log_loss: float | None = None
    kind: str | None = None              # "sweep": a sweep's own folder (tools/sweep.py); None: a run
    trials: int | None = None            # a sweep: its trials, those done (finished or failed), and by state
    trials_done: int | None = None
    trials_finished: int | None = None
    trials_failed: int | None = None
    trials_pruned: int | None = None
    trials_running: int | None = None

    def to_json(self) -> dict:
        """The file's object: "status" first, the figures set, then who wrote it and when."""
        figures = {k: v for k, v in asdict(self).items() if v is not None and k not in _HEAD and k != "state"}
        return {"status": self.state, **figures, **{k: getattr(self, k) for k in _HEAD}}


_HEAD = ("run_id", "pid", "host", "updated")
_FIELDS = {f.name for f in fields(Status)} - {"state"}


def read_status(run_dir: Path) -> Status | None:
    """RUN_DIR/status.json; None if there is none, state UNREADABLE if it is not a JSON object (a write cut
    short, a file edited by hand). Keys this version does not know are left out."""
    try:
        content = json.loads((Path(run_dir) / STATUS).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return Status(UNREADABLE)
    if not isinstance(content, dict):
        return Status(UNREADABLE)
    return Status(str(content.get("status", "unknown")), **{k: v for k, v in content.items() if k in _FIELDS})


def run_state(run_dir: Path) -> str | None:
    """status.json's state word (running, finished, ...), None without a status.json."""
    status = read_status(run_dir)
    return None if status is None else status.state


def write_status(run_dir: Path, status: Status) -> None:
    """RUN_DIR/status.json, written atomically with this process's pid, host and time; read without locks.

    The file is padded to STATUS_BYTES: when the disk is full the atomic write fails, and the same-sized file
    is then rewritten in place, which needs no new block, so the final status still lands. A failure is
    logged once (until a write succeeds again), not raised: the run stops on its checkpoint, not on this file.
    """
    status = replace(status, pid=os.getpid(), host=socket.gethostname(), updated=time.time())
    text = json.dumps(status.to_json(), indent=1)
    text += " " * (STATUS_BYTES - 1 - len(text.encode())) + "\n"
    path = Path(run_dir) / STATUS
    try:
        try:
            atomic.write_text(path, text)
        except OSError as err:
            if not atomic.is_disk_full(err) or not path.is_file() or len(text.encode()) > path.stat().st_size:
                raise
            _rewrite_in_place(path, text.encode())
    except OSError as err:
        if not write_status.failed:
            log.error("status not updated: %s", atomic.explain(path, err))
        write_status.failed = True
    else:
        write_status.failed = False


write_status.failed = False        # a failure is said once, until a write succeeds again (retried every log interval)


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrite `path`'s blocks with `data` (no longer than the file): no allocation, so it works on a full disk.
    A reader could meet a half-written file for an instant; tools/status.py then says 'unreadable' once."""
    fd = os.open(path, os.O_WRONLY)
    try:
        written = os.pwrite(fd, data.ljust(os.fstat(fd).st_size), 0)
        if written < len(data):
            raise OSError(errno.EIO, "short write")
        os.fsync(fd)
    finally:
        os.close(fd)


# -- is it alive ----------------------------------------------------------------------------------------
def classify(status: Status, now: float | None = None, hostname: str | None = None) -> str:
    """The state to show: the file's own word, or "dead" / "stale" for a "running" whose writer is not."""
    if status.state != "running":
        return status.state
    now = time.time() if now is None else now
    hostname = socket.gethostname() if hostname is None else hostname
    updated = float(status.updated or 0)
    if status.host == hostname:
        return "running" if status.pid and pid_alive(int(status.pid), updated) else "dead"
    # Another host (shared filesystem): its pids mean nothing here, so judge by the update's age.
    return "stale" if now - updated > _expected_interval(status) * 2 + 600 else "running"


def is_alive(status: Status | None) -> bool:
    """True if a process still writes this status (classify says running)."""
    return status is not None and classify(status) == "running"


def _expected_interval(status: Status) -> float:
    """Seconds between status updates: one epoch, estimated from the ETA; STALE_AFTER_S if unknown."""
    left = (status.epochs or 0) - (status.epoch or 0)
    if status.eta_s and left > 0:
        return float(status.eta_s) / left
    return STALE_AFTER_S / 2


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
