"""The run directory: where a run goes, one owner at a time (an flock), whether it starts or resumes,
and the files that describe it: status.json for tools/status.py, run.json naming its MLflow run.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from datetime import datetime
from pathlib import Path

from .. import atomic
from ..config import Recipe, RecipeError
from ..errors import UserError
from ..paths import RUNS
from ..tracking import public_uri, tracking_uri
from . import checkpoint

log = logging.getLogger("research.training")
LOCK = ".lock"
STATUS_BYTES = 4096      # status.json is padded to this size: on a full disk it is rewritten in place (no new block)


def default_run_dir(recipe: Recipe) -> Path:
    return RUNS / recipe.name


class RunDirBusy(UserError):
    """Another live process holds the run directory."""


class RunDirLock:
    """One owner per run directory: an flock on RUN_DIR/.lock, held from `acquire` until `release`.

    The OS drops an flock with its descriptor when the process dies (kill -9 included), so a stale
    lock never blocks a resume.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._file = None

    def acquire(self) -> RunDirLock:
        """Take the lock, creating the folder. Raises:
            RunDirBusy: naming the holder's pid, host and start time.
            UserError: the folder cannot be made or written (a file, read-only, no permission).
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        except FileExistsError:
            raise UserError(f"{self.path.parent} is a file, not a folder: pass --output a folder for the run.") from None
        except OSError as err:
            raise UserError(atomic.explain(self.path.parent, err)) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe_holder(handle.read())
            handle.close()
            raise RunDirBusy(f"{self.path.parent} is in use by another run ({holder}); wait for it to end, "
                             f"stop it (kill -TERM sends a trainer to a checkpoint first), or pass --output for "
                             f"another folder.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()          # closing the descriptor drops the flock
            self._file = None


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        since = datetime.fromtimestamp(float(info["since"])).strftime("%Y-%m-%d %H:%M:%S")
        return f"pid {info['pid']} on {info['host']}, since {since}"
    except (ValueError, KeyError, TypeError):
        return "a process that is just starting"


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete the temporary files and folders of writes that a kill cut short (atomic.py names them
    .<name>.<random>.tmp / .old). Call with the lock held: then no live writer owns them."""
    removed = []
    for folder in (run_dir, run_dir / checkpoint.FOLDER):
        if folder.is_dir():
            removed += atomic.remove_temporaries(folder)
    if removed:
        log.info("removed %d file(s) left by a write that was cut short: %s", len(removed),
                 ", ".join(str(p.relative_to(run_dir)) for p in removed[:5]) + (" ..." if len(removed) > 5 else ""))
    return removed


def set_aside(run_dir: Path) -> Path | None:
    """--fresh: move what `run_dir` holds (the lock file and its lock stay) to <dir>.old-<time>."""
    kept = [p for p in run_dir.iterdir() if p.name != LOCK] if run_dir.is_dir() else []
    if not kept:
        return None
    aside = run_dir.with_name(f"{run_dir.name}.old-{datetime.now():%Y%m%d-%H%M%S}")
    aside.mkdir()
    for path in kept:
        path.rename(aside / path.name)
    print(f"--fresh: the previous contents of {run_dir} were moved to {aside}")
    return aside


def find_resume(run_dir: Path, recipe: Recipe, require: bool) -> dict | None:
    """The checkpoint a run resumes from (the newest that verifies), or None for a new run.

    Raises:
        RecipeError: `require` (--resume) without a checkpoint, or a folder holding another recipe's run
            (its checkpoint's recipe, or, killed before its first checkpoint, its recipe.yaml).
    """
    latest = checkpoint.find_latest(run_dir / checkpoint.FOLDER)
    if latest is None:
        if require:
            raise RecipeError(f"--resume: no valid checkpoint in {run_dir / checkpoint.FOLDER}. "
                              f"Drop --resume to start a new run.")
        if read_run_json(run_dir).get("run_id"):        # its MLflow run is continued: the same recipe's?
            _check_same_recipe(run_dir, _saved_recipe(run_dir), recipe)
        return None
    path, content = latest
    _check_same_recipe(run_dir, content["state"].recipe, recipe)
    log.info("resuming from %s (epoch %d, step %d)", path, content["state"].epoch, content["state"].step)
    return content


def prepare_run_dir(run_dir: Path, recipe: Recipe, resume: bool, fresh: bool) -> dict | None:
    """What a trainer started on `run_dir` would do first (tools/launch.py checks it before the session):
    set the old run aside for `fresh`, then find the checkpoint to resume. Raises as find_resume."""
    if fresh:
        set_aside(run_dir)
    return find_resume(run_dir, recipe, resume)


def _saved_recipe(run_dir: Path) -> dict:
    import yaml
    try:
        return yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _check_same_recipe(run_dir: Path, saved: dict, recipe: Recipe) -> None:
    if saved.get("name") != recipe.name or saved.get("net") != recipe.to_dict()["net"]:
        raise RecipeError(f"{run_dir} holds a run of recipe '{saved.get('name')}' (net {saved.get('net')}). "
                          f"Use --output for another folder, or --fresh to set the old run aside.")


def write_status(run_dir: Path, status: str, run_id: str | None, **figures) -> None:
    """run_dir/status.json for tools/status.py: written atomically, read without locks.

    `figures` are the job's own (epoch, epochs, val_top1, eta_s, ...; see training.report). The file
    is padded to STATUS_BYTES: when the disk is full the atomic write fails, and the same-sized file
    is then rewritten in place, which needs no new block, so the final status still lands.
    """
    info = {"status": status, **figures, "run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
            "updated": time.time()}
    text = json.dumps(info, indent=1)
    text += " " * (STATUS_BYTES - 1 - len(text.encode())) + "\n"
    path = run_dir / "status.json"
    try:
        try:
            atomic.write_text(path, text)
        except OSError as err:
            if not atomic.is_disk_full(err) or not path.is_file() or len(text.encode()) > path.stat().st_size:
                raise
            _rewrite_in_place(path, text.encode())
    except OSError as err:          # the run stops on its checkpoint, not on the status file
        if not write_status.failed:
            log.error("status not updated: %s", atomic.explain(path, err))
        write_status.failed = True
    else:
        write_status.failed = False


write_status.failed = False        # a failure is said once, until a write succeeds again (retried every log interval)


def read_status(run_dir: Path) -> dict:
    """status.json's content, {} if absent or unreadable (tools/status.py's reader says which)."""
    return _read_object(run_dir / "status.json")


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


def write_run_json(run_dir: Path, run_id: str | None, experiment_id: str | None) -> None:
    """run_dir/run.json: the MLflow run this directory's run logs to (resume, compare, evaluate). The store's
    URI without credentials: the file is readable by others and travels with the folder."""
    atomic.write_text(run_dir / "run.json", json.dumps({"run_id": run_id, "experiment_id": experiment_id,
                                                        "tracking_uri": public_uri(tracking_uri())}, indent=1))


def read_run_json(run_dir: Path) -> dict:
    """run.json's content, {} if absent or unreadable."""
    return _read_object(run_dir / "run.json")


def _read_object(path: Path) -> dict:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}
