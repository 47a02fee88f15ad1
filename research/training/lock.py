"""One trainer per run directory: an flock on RUN_DIR/.lock, which the OS releases when the process
dies (kill -9 included), so a stale lock never blocks a resume.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from datetime import datetime
from pathlib import Path

from ..atomic import explain
from ..errors import UserError

LOCK = ".lock"


class RunDirBusy(UserError):
    """Another live process holds the run directory."""


class RunDirLock:
    """Held from `acquire` until `release` (or process death: the OS drops an flock with its descriptor)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._file = None

    def acquire(self) -> "RunDirLock":
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
            raise UserError(explain(self.path.parent, err)) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise RunDirBusy(f"{self.path.parent} is in use by another trainer ({holder}); wait for it to end, "
                             f"stop it (kill -TERM sends it to a checkpoint first), or pass --output for "
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


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        since = datetime.fromtimestamp(float(info["since"])).strftime("%Y-%m-%d %H:%M:%S")
        return f"pid {info['pid']} on {info['host']}, since {since}"
    except (ValueError, KeyError, TypeError):
        return "a process that is just starting"
