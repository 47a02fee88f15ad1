"""Graceful stops: SIGINT, SIGTERM, SIGHUP finish the batch, checkpoint, mark the run KILLED.

On several machines rank 0 alone decides when the job stops; the other workers use FollowerStop.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Callable

from ..errors import STOP_SIGNALS, signal_exit_code

log = logging.getLogger(__name__)


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP taken over between `install` and `restore`; the first one's name and time
    are kept (`requested`, `exit_code`). Subclasses say what a signal does in `_handle`."""

    SIGNALS = STOP_SIGNALS

    def __init__(self):
        self.signal_name: str | None = None
        self.received_at: float | None = None      # time.monotonic() when the first signal arrived
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    @property
    def exit_code(self) -> int:
        return signal_exit_code(signal.Signals[self.signal_name]) if self.signal_name else 0

    def install(self) -> None:
        """Take over the stop signals (main thread only: Python delivers signals there) until `restore`."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        """The handlers from before `install`: a notebook's next cell is interrupted as usual."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _first(self, signum: int) -> bool:
        """Note `signum` if it is the first; True then."""
        if self.signal_name is not None:
            return False
        self.signal_name, self.received_at = signal.Signals(signum).name, time.monotonic()
        return True

    def _handle(self, signum: int, frame) -> None:
        self._first(signum)


class StopRequest(StopSignals):
    """Set by a signal; the loop reads `requested` after every batch. A second SIGINT exits at once, or
    raises KeyboardInterrupt when `interactive` (a notebook kernel must survive it)."""

    def __init__(self, interactive: bool = False):
        super().__init__()
        self.interactive = interactive

    def _handle(self, signum: int, frame) -> None:
        if signum == signal.SIGHUP:
            _detach_terminal()
        if self.signal_name is not None and signum == signal.SIGINT:
            if self.interactive:
                self.restore()
                raise KeyboardInterrupt("second interrupt: stopped without a checkpoint")
            log.error("second SIGINT: exiting now without a checkpoint")
            os._exit(signal_exit_code(signal.SIGINT))
        if self._first(signum):
            log.warning("%s received: stopping after this batch and writing a checkpoint (%s again to %s)",
                        self.signal_name, *(("interrupt", "stop at once, without it") if self.interactive
                                            else ("press Ctrl-C", "exit at once")))


class FollowerStop:
    """Signal handling for workers other than rank 0: rank 0 alone decides when the job stops.

    Workers that each stopped on their own could stop at different steps, and one that pushes a step
    the others never push waits forever (rank 0's checkpoint with it). So a follower notes the first
    signal and trains on; rank 0 checkpoints and exits, then the launcher ends the followers. After the
    first signal the default handling is back, so the launcher's SIGTERM ends this process at once.
    """
    signal_name = None
    received_at = None
    exit_code = 0
    requested = False

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Nothing: a follower's process ends with its run (the launcher ends it after rank 0)."""

    def _handle(self, signum: int, frame) -> None:
        log.warning("%s received: rank 0 decides when the job stops (it writes the checkpoint, then the "
                    "launcher ends this worker)", signal.Signals(signum).name)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)


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


def on_stop_signal_even_if_blocked(callback: Callable[[str], None]) -> Callable[[], None]:
    """Call `callback(signal name)` from a thread on the first stop signal, even while the main thread is
    stuck in C++ (a dist kvstore waiting for a dead peer never returns to Python, so the Python handler,
    and with it the checkpoint and the MLflow status, would never run before the launcher's SIGKILL).

    Needs the handlers of StopRequest.install: CPython writes each handled signal to the wakeup fd at once.
    Returns the function that ends the watch; call it before the process exits (a thread still blocked
    then made MXNet's dist kvstore abort at exit: "terminate called without an active exception").
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    stops = {sig.value for sig in STOP_SIGNALS}

    def watch() -> None:
        while True:
            received = os.read(read_fd, 16)
            if 0 in received:                  # end() below
                return
            name = next((signal.Signals(n).name for n in received if n in stops), None)
            if name is not None:
                callback(name)
                return
    thread = threading.Thread(target=watch, name="stop-signal", daemon=True)
    thread.start()

    def end() -> None:
        signal.set_wakeup_fd(previous)
        try:
            os.write(write_fd, b"\0")
        except OSError:
            pass
        thread.join(timeout=10)
        os.close(read_fd)
        os.close(write_fd)
    return end
