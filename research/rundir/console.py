"""RUN_DIR/console.log, all that a detached run (the tmux pane's tee) or a sweep's trial printed: its size and
its last error line, by one rule for the keep-alive supervisor and the sweep."""
from __future__ import annotations

import re
from pathlib import Path

from .files import CONSOLE_LOG

MAX_CHARS = 300             # an error line is cut here (notifications, sweep.json, the sweep's summary)
TAIL_BYTES = 256 * 1024     # only the end of a long log is read
# A UserError's "error: ...", a logged ERROR (the guard's message, a failed checkpoint), a traceback's last line.
_ERROR = re.compile(r"^error: |^[\w.]+(Error|Exception): | ERROR ")
_LOG_PREFIX = re.compile(r"^.*? ERROR ")        # the log line's date, time, logger and level


def console_log(run_dir: Path) -> Path:
    return Path(run_dir) / CONSOLE_LOG


def size(path: Path) -> int:
    """Bytes in `path` (0 if there is none): where the output of a command started after now begins."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def last_error(path: Path, offset: int = 0) -> str:
    """The last line after byte `offset` that says what went wrong ('' if none), without its log prefix,
    cut to MAX_CHARS."""
    try:
        with open(path, "rb") as log:
            log.seek(max(offset, size(path) - TAIL_BYTES))
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    found = [line for line in lines if _ERROR.search(line)]
    if not found:
        return ""
    text = _LOG_PREFIX.sub("", found[-1], count=1).strip()
    return text[:MAX_CHARS] + ("..." if len(text) > MAX_CHARS else "")
