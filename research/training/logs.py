"""Logging for a run: the console at once, RUN_DIR/train.log (rank 0) once the run directory is known."""
from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from .. import atomic
from ..rundir.files import TRAIN_LOG

LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes: a notebook's current cell, pytest's capture."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging() -> None:
    """Console logging now (once per process: a notebook cell run twice does not print lines twice);
    records are also buffered until `add_file_log` knows the run dir."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(getattr(h, "_research", None) == "console" for h in root.handlers):
        console = _StderrHandler()
        console.setFormatter(LOG_FORMAT)
        console._research = "console"
        root.addHandler(console)
    if not any(getattr(h, "_research", None) == "buffer" for h in root.handlers):
        buffer = logging.handlers.MemoryHandler(capacity=10000, flushLevel=logging.CRITICAL + 1)
        buffer._research = "buffer"
        root.addHandler(buffer)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def add_file_log(run_dir: Path | None) -> None:
    """Append to run_dir/train.log, starting with what was logged before; None (a distributed worker other than
    rank 0, which writes no file): what was buffered is dropped."""
    root = logging.getLogger()
    buffers = [h for h in root.handlers if getattr(h, "_research", None) == "buffer"]
    target = None
    remove_file_log()                       # a previous run in this process (a notebook) logged elsewhere
    if run_dir is not None:
        target = _RunLog(run_dir / TRAIN_LOG)
        target.setFormatter(LOG_FORMAT)
        target._research = "file"
        root.addHandler(target)
    for buffer in buffers:
        if target is not None:
            for record in buffer.buffer:
                target.handle(record)
        root.removeHandler(buffer)


def remove_file_log() -> None:
    """Close the run's train.log handler: the run is over, later records belong elsewhere."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_research", None) == "file"]:
        root.removeHandler(handler)
        handler.close()


class _RunLog(logging.FileHandler):
    """train.log that, on a full disk, says so once on the console instead of a traceback per record."""
    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if not self.failed and isinstance(err, OSError):
            self.failed = True
            sys.stderr.write(f"train.log not written: {atomic.explain(self.baseFilename, err)}\n")
        elif not isinstance(err, OSError):
            super().handleError(record)


def flush_logs() -> None:
    """Write out what the handlers hold (before train.log is logged as an artifact)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
