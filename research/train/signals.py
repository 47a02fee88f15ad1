"""Graceful stops: SIGINT, SIGTERM, SIGHUP finish the batch, checkpoint, mark the run KILLED."""
from __future__ import annotations

import logging
import os
import signal
import sys

log = logging.getLogger(__name__)


class StopRequest:
    """Set by a signal; the loop checks it after every batch. A second SIGINT exits at once."""

    def __init__(self):
        self.signal_name: str | None = None

    def __call__(self) -> bool:
        return self.signal_name is not None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            _detach_terminal()
        if self.signal_name is not None and signum == signal.SIGINT:
            log.error("second SIGINT: exiting now without a checkpoint")
            os._exit(130)
        if self.signal_name is None:
            self.signal_name = name
            log.warning("%s received: stopping after this batch and writing a checkpoint "
                        "(press Ctrl-C again to exit at once)", name)

    @property
    def exit_code(self) -> int:
        return 128 + signal.Signals[self.signal_name].value if self.signal_name else 0


def _detach_terminal() -> None:
    """The SSH session is gone: point stdout/stderr at /dev/null so writing cannot kill the run."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream.isatty():
                os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass
    os.close(devnull)
