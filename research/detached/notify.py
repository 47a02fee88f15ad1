"""Tell the user what happened to a supervised run: a command of theirs (`mail`, `curl` to a webhook,
`ntfy`) gets the event in RESEARCH_* environment variables and a one-line summary on stdin.

A notify command that fails or hangs never harms the run: it runs in its own process group with a
time limit (then the group is killed), and its failure is logged, not raised.
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field

NOTIFY_ENV = "RESEARCH_NOTIFY"     # the user's standing --notify command, e.g. in ~/.profile
TIMEOUT_S = 30.0
# What each event means; the supervisor (research/detached/supervise.py) sends them, in the order they happen.
EVENTS = {
    "restarted": "the run was started again; RESEARCH_MESSAGE says why (a kill -9, the OOM killer, a crash, a reboot)",
    "finished": "every epoch done",
    "pruned": "a sweep's trial its pruner stopped early, after a checkpoint (RESEARCH_MESSAGE); not restarted",
    "failed": "ended with an exit status a rerun cannot fix (RESEARCH_EXIT_STATUS, RESEARCH_MESSAGE); not restarted",
    "guard": "stopped by the guard: the loss became NaN or the net's head is dead or stalled (RESEARCH_MESSAGE)",
    "stopped": "stopped on purpose (Ctrl-C, SIGTERM, tmux kill-session); not restarted",
    "crash-loop": "restarted too often without a new checkpoint between restarts: the supervisor gave up",
    "stalled": "the trainer is alive but has not updated status.json for a long time (a hang?)",
    "shutdown": "the machine is shutting down: the run was checkpointed and starts again at boot",
}


@dataclass
class Event:
    """One thing that happened to a run, as the notify command receives it."""
    kind: str                   # a key of EVENTS
    summary: str                # one line, also on the command's stdin
    fields: dict[str, str] = field(default_factory=dict)   # RESEARCH_<KEY> variables (RUN_NAME, EPOCH, ...)

    def environment(self) -> dict[str, str]:
        return {"RESEARCH_EVENT": self.kind, "RESEARCH_SUMMARY": self.summary,
                **{f"RESEARCH_{key.upper()}": "" if value is None else str(value) for key, value in self.fields.items()}}


def notify(command: str | None, event: Event, timeout_s: float = TIMEOUT_S) -> str | None:
    """Run `command` (a shell command line) for `event`; returns None if it succeeded, else why not (to log).

    Never raises and never waits longer than `timeout_s`: a command still running then is killed with
    its children (its own process group), so a `curl` to a dead host cannot hold the supervisor.
    """
    if not command:
        return None
    env = {**os.environ, **event.environment()}
    with tempfile.TemporaryFile() as output:      # not a pipe: a child left running cannot block a read
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=output,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as err:
            return f"could not run it: {err}"
        try:
            proc.stdin.write((event.summary + "\n").encode())
            proc.stdin.close()
        except OSError:
            pass                                  # it did not read its stdin: fine
        try:
            status = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return f"still running after {timeout_s:.0f} s: killed"
        if status == 0:
            return None
        output.seek(0)
        said = output.read()[-500:].decode(errors="replace").strip().replace("\n", " | ")
        return f"exit status {status}" + (f": {said}" if said else "")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
