"""One owner per run directory (an flock), --fresh (the old contents set aside) and the leftovers of killed
writes, removed under the lock."""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from datetime import datetime
from pathlib import Path

from .. import atomic
from ..errors import UserError
from .files import CHECKPOINTS, LOCK

log = logging.getLogger("research.training")


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
    for folder in (run_dir, run_dir / CHECKPOINTS):
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
