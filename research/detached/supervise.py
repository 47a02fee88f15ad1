"""Keep a run alive (tools/launch.py --keep-alive): run its command, and when it ends with a status a rerun
can fix (SIGKILL from kill -9 or the OOM killer, a crash), run it again after a short back-off; the trainer
resumes from its newest checkpoint into the same MLflow run. RESTART_POLICY says what each status means.

The supervisor runs in the tmux pane and the trainer is its child, in a process group of its own: Ctrl-C,
SIGTERM and SIGHUP (tmux kill-session) reach the supervisor, which passes them on and then leaves the run
stopped. If the supervisor itself is killed, the trainer gets SIGTERM (checkpoint, exit) and the pane
script starts the supervisor again. What happened is kept in RUN_DIR/keep-alive.json (tools/status.py
shows it; the MLflow run gets it as tags) and told to the user's notify command (research/detached/notify.py).
"""
from __future__ import annotations

import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from .. import atomic
from ..errors import STOP_SIGNALS, ExitCode, describe, shell_status, signal_exit_code, signal_of
from ..paths import TOOLS
from ..rundir import console
from ..rundir.files import CHECKPOINTS, KEEP_ALIVE
from ..rundir.run_json import read_run_json
from ..rundir.settle import settle_abandoned
from ..rundir.status import read_status
from ..rundir.supervision import keep_alive_path, read_keep_alive, write_keep_alive
from ..training import checkpoint
from . import registry
from .notify import Event, notify

MAX_RESTARTS = 3                      # restarts in a row without a new checkpoint before giving up
BACKOFF_S = (2, 30, 120, 300)         # wait before the 1st, 2nd, ... restart in a row without a new checkpoint
STALL_AFTER_S = 1800                  # no status.json update for this long (or 4x the longest gap seen): stalled
POLL_S = 5.0
RESTART, STAY, DONE = "restart", "stay stopped", "done"

# The command's exit status (research.errors: 128+N for signal N) -> what the supervisor does, and what a rerun
# would do, after the status's own words (errors.describe). Statuses not listed: 128+N of any other signal
# restarts, anything else stays stopped.
RESTART_POLICY: dict[int, tuple[str, str]] = {
    ExitCode.OK: (DONE, ""),
    ExitCode.FAILED: (RESTART, "a crash; the traceback is in console.log"),
    ExitCode.USER_ERROR: (STAY, "a rerun fails the same way; fix what the message names, then launch again"),
    ExitCode.UNHEALTHY: (STAY, "a rerun repeats it; change the recipe"),
    ExitCode.SAVE_FAILED: (STAY, "a rerun fails the same way until space is freed; free space, then launch again"),
    ExitCode.PRUNED: (DONE, "a rerun would not train it on"),
    signal_exit_code(signal.SIGHUP): (STAY, "on purpose (tmux kill-session or kill-server, a closed terminal)"),
    signal_exit_code(signal.SIGINT): (STAY, "on purpose (Ctrl-C)"),
    signal_exit_code(signal.SIGKILL): (RESTART, "kill -9 or the OOM killer"),
    signal_exit_code(signal.SIGTERM): (STAY, "on purpose"),
}
OTHER_SIGNAL = (RESTART, "a crash of the process")
UNKNOWN = (STAY, "the restart policy does not know it")


def policy(exit_status: int) -> tuple[str, str]:
    """(decision, why) for an exit status as a shell shows it (128+N for signal N)."""
    decision, rerun = RESTART_POLICY.get(exit_status) or (OTHER_SIGNAL if signal_of(exit_status) else UNKNOWN)
    if exit_status == ExitCode.OK:
        return DONE, "finished"
    return decision, f"{describe(exit_status) or f'exit status {exit_status}'}: {rerun}"


def policy_help() -> str:
    """The restart policy in words, grouped by decision, for tools/launch.py --help."""
    said = {code: f"{code} {policy(code)[1]}" for code in RESTART_POLICY}
    restart = [said[code] for code, (decision, _) in RESTART_POLICY.items() if decision == RESTART]
    stay = [said[code] for code, (decision, _) in RESTART_POLICY.items() if decision == STAY]
    return (f"0 done; restarted: {'; '.join(restart)}; 128+N for any other signal N (a crash: SIGSEGV, SIGABRT ...). "
            f"Left stopped: {'; '.join(stay)}; any other status")


def supervise_command(run_dir: Path, command: list[str], name: str, max_restarts: int = MAX_RESTARTS) -> list[str]:
    """The command line that supervises `command` (what the tmux pane runs under --keep-alive). The notify
    command is not on it (a webhook's token would show in ps): the pane passes it as $RESEARCH_NOTIFY."""
    return [sys.executable, str(TOOLS / "supervise.py"), str(run_dir), "--name", name,
            "--max-restarts", str(max_restarts), "--", *command]


def system_going_down() -> bool:
    """True while systemd shuts the machine down: its SIGTERM is then no user's stop, and boot restarts the run."""
    try:
        out = subprocess.run(["systemctl", "is-system-running"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.stdout.strip() == "stopping"


def oom_kills() -> int | None:
    """The kernel's count of OOM kills since boot (/proc/vmstat), to tell the OOM killer from a kill -9."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class Supervisor:
    """Runs `command` for `run_dir` until it finishes, stops on purpose, fails for a reason a rerun cannot fix,
    or restarts `max_restarts` times in a row without a new checkpoint."""

    def __init__(self, run_dir: Path, command: list[str], name: str, max_restarts: int = MAX_RESTARTS,
                 notify_command: str | None = None, backoff_s: tuple[float, ...] = BACKOFF_S,
                 stall_after_s: float = STALL_AFTER_S, poll_s: float = POLL_S):
        self.run_dir, self.command, self.name = Path(run_dir), list(command), name
        self.max_restarts, self.notify_command = max_restarts, notify_command
        self.backoff_s, self.stall_after_s, self.poll_s = backoff_s, stall_after_s, poll_s
        self.stop_signal: str | None = None          # the first Ctrl-C / SIGTERM / SIGHUP the supervisor got
        self.proc: subprocess.Popen | None = None
        self.record: dict = {}
        self._tags_due = False
        self._log_offset = 0               # console.log's size when the command started: its own lines follow

    # -- the loop ---------------------------------------------------------------------------
    def run(self, restart_cause: str | None = None) -> int:
        """Supervise until the run is settled; returns the exit status for the pane: the command's last, 128+N
        after stop signal N, 1 after a crash loop; never 137, which the pane script reads as the supervisor
        itself killed. `restart_cause`: this start is a restart (after a reboot, or after the supervisor was
        killed) and counts as one."""
        previous = {sig: signal.signal(sig, self._on_stop_signal) for sig in STOP_SIGNALS}
        try:
            return self._supervise(restart_cause)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _supervise(self, restart_cause: str | None) -> int:
        self._open_record(fresh=restart_cause is None)
        if restart_cause:
            if not self._may_restart(restart_cause, None):
                return self._give_up(None)
            self._say(f"starting {self._what()} again: {restart_cause} (restart {len(self.record['restarts'])})")
        while True:
            exit_status, cause = self._run_once()
            decision, why = policy(exit_status)
            if decision == RESTART and self.stop_signal is not None:     # e.g. Ctrl-C, then a kill -9
                return self._settle(self._stop_status(), policy(self._stop_status())[1])
            if decision != RESTART:
                return self._settle(exit_status, cause or why)
            self._say(f"{self._what()} exited with status {exit_status}: {cause or why}")
            if not self._may_restart(cause or why, exit_status):
                return self._give_up(exit_status)
            if not self._back_off():
                return self._settle(self._stop_status(), f"{policy(self._stop_status())[1]}, during the back-off")

    def _stop_status(self) -> int:
        return signal_exit_code(signal.Signals[self.stop_signal])

    def _run_once(self) -> tuple[int, str | None]:
        """Start the command, watch it until it exits; (exit status as a shell shows it, a sharper cause or None)."""
        self._log_offset = console.size(console.console_log(self.run_dir))
        kills_before = oom_kills()
        try:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        except OSError as err:             # 127: what a shell returns for a command it cannot run
            return 127, f"could not start {shlex.join(self.command)}: {err}"
        self._write_record("watching", f"{self._what()} running as pid {self.proc.pid}")
        if self.record.get("restarts") and self.record["restarts"][-1].get("notified") is False:
            self._notify_restart()
        exit_status = self._watch(self.proc)
        _kill_group(self.proc.pid)          # what the command left behind (data workers) holds the run's files
        self.proc = None
        oom_killed = kills_before is not None and (oom_kills() or 0) > kills_before
        if exit_status == signal_exit_code(signal.SIGKILL) and oom_killed:
            return exit_status, "killed by the OOM killer (out of memory; /proc/vmstat counted an OOM kill)"
        return exit_status, None

    def _watch(self, proc: subprocess.Popen) -> int:
        """Wait for `proc`, every poll_s: MLflow tags once the restarted trainer reports, and a stall check."""
        started, last_seen, longest_gap, stalled = time.time(), time.time(), 0.0, False
        while True:
            try:
                code = proc.wait(self.poll_s)
                return shell_status(code)                      # Popen's -N for signal N: a shell's 128+N
            except subprocess.TimeoutExpired:
                pass
            reported = read_status(self.run_dir)
            if reported is not None and reported.pid == proc.pid and float(reported.updated or 0) > last_seen:
                longest_gap = max(longest_gap, float(reported.updated) - last_seen)
                last_seen = float(reported.updated)
                if stalled:
                    self._say(f"{self._what()} is reporting again")
                    stalled = False
                if self._tags_due:
                    self._tag_mlflow_run()
            quiet = time.time() - max(last_seen, started)
            if not stalled and quiet > max(self.stall_after_s, 4 * longest_gap):
                stalled = True
                why = (f"{self._what()} (pid {proc.pid}) is alive but has not updated status.json for "
                       f"{quiet / 60:.0f} min; attach to its tmux session, or kill -9 it to have it restarted")
                self._say(why)
                self._send("stalled", why)

    def _on_stop_signal(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.stop_signal is None:
            self.stop_signal = name
            self._say(f"{name} received: passing it on; the run will not be restarted")
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signum)      # a second Ctrl-C too: the trainer then exits at once
            except ProcessLookupError:
                pass

    # -- restarts ---------------------------------------------------------------------------
    def _may_restart(self, cause: str, exit_status: int | None) -> bool:
        """Count a restart for `cause`; False if it would be one too many without a new checkpoint."""
        newest = _newest_checkpoint(self.run_dir)
        if newest != self.record.get("checkpoint"):
            self.record["checkpoint"], self.record["without_progress"] = newest, 0
        if self.record["without_progress"] >= self.max_restarts:
            self.record["crash_loop"] = (f"a crash loop: {self.max_restarts} restart(s) in a row without a new "
                                         f"checkpoint between them (--max-restarts {self.max_restarts}), and it "
                                         f"ended again: {cause}")
            return False
        self.record["without_progress"] += 1
        self.record.setdefault("restarts", []).append({       # where it was when it ended: what the notification tells
            "time": time.time(), "cause": cause, "exit_status": exit_status, **_figures(self.run_dir),
            "notified": False})
        self._tags_due = True
        return True

    def _back_off(self) -> bool:
        """Wait before the restart; False if a stop signal came meanwhile."""
        wait = self.backoff_s[min(self.record["without_progress"], len(self.backoff_s)) - 1]
        count = len(self.record["restarts"])
        self._write_record("restarting", f"restart {count} in {wait:g} s")
        self._say(f"restarting in {wait:g} s (restart {count}; {self.record['without_progress']} of at most "
                  f"{self.max_restarts} in a row without a new checkpoint)")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self.stop_signal is None:
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
        return self.stop_signal is None

    def _notify_restart(self) -> None:
        last = self.record["restarts"][-1]
        last["notified"] = True
        self._write_record("watching", self.record.get("message", ""))
        self._send("restarted", last["cause"], figures=last, exit_status=last["exit_status"])

    def _give_up(self, exit_status: int | None) -> int:
        why = self.record["crash_loop"]
        self._say(f"giving up: {why}. Read console.log, fix the cause, then launch again")
        settle_abandoned(self.run_dir, f"{why}; the supervisor gave up")     # not RUNNING for ever in MLflow
        self._finish("crash-loop", why, exit_status=exit_status)
        return ExitCode.FAILED

    def _settle(self, exit_status: int, why: str) -> int:
        """The run is over for the supervisor (or, in a shutdown, until the boot entry starts it again)."""
        if exit_status != ExitCode.OK and (signal_of(exit_status) in STOP_SIGNALS or self.stop_signal):
            if system_going_down():
                self._say("the machine is shutting down: the run is checkpointed and starts again at boot")
                self._write_record("shutdown", "stopped by the shutdown; the boot entry starts it again")
                self._send("shutdown", "the machine is shutting down; the run starts again at boot",
                           exit_status=exit_status)
                return exit_status
            kind = "stopped"
        else:
            kinds = {ExitCode.OK: "finished", ExitCode.UNHEALTHY: "guard", ExitCode.PRUNED: "pruned"}
            kind = kinds.get(exit_status, "failed")
        if kind in ("guard", "failed"):            # what the command said is the news; the policy's why after it
            said = self._last_error()
            message = f"{said} (not restarted: {why})" if said else f"{why} (see console.log)"
        else:
            message = why
        self._say(f"{self._what()} exited with status {exit_status}: {message}; not restarted")
        self._finish(kind, message, exit_status=exit_status)
        return exit_status

    def _finish(self, kind: str, message: str, exit_status: int | None) -> None:
        self._write_record(kind, message)
        registry.remove(self.run_dir)             # the boot entry no longer starts it
        if self._tags_due:
            self._tag_mlflow_run()
        self._send(kind, message, exit_status=exit_status)

    # -- the record, the user, MLflow -------------------------------------------------------
    def _open_record(self, fresh: bool) -> None:
        self.record = read_keep_alive(self.run_dir)
        self.record.setdefault("restarts", [])
        if fresh or "without_progress" not in self.record:       # started by a person: a new count
            self.record["checkpoint"], self.record["without_progress"] = _newest_checkpoint(self.run_dir), 0
        self.record.pop("crash_loop", None)
        self.record.update(name=self.name, max_restarts=self.max_restarts, command=self.command,
                           supervisor={"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})

    def _write_record(self, state: str, message: str) -> None:
        self.record.update(state=state, message=message, updated=time.time())
        try:
            write_keep_alive(self.run_dir, self.record)
        except OSError as err:            # a full disk: the trainer says so itself; supervision goes on
            self._say(f"could not write {KEEP_ALIVE}: {atomic.explain(keep_alive_path(self.run_dir), err)}")

    def _say(self, text: str) -> None:
        try:
            print(f"[keep-alive] {datetime.now():%Y-%m-%d %H:%M:%S} {text}", flush=True)
        except (OSError, RuntimeError):     # the pane's log is gone (tee killed), or a signal came mid-print
            pass                            # supervision goes on

    def _what(self) -> str:
        """'tools/train.py', or the command's first word: how messages name what is supervised."""
        script = next((arg for arg in self.command[1:] if arg.endswith(".py")), self.command[0])
        return "tools/" + Path(script).name if Path(script).parent == TOOLS else Path(script).name

    def _send(self, kind: str, message: str, figures: dict | None = None, **extra) -> None:
        """Tell the notify command; `figures` (epoch, epochs, val_top1) default to status.json's now."""
        info = _figures(self.run_dir) if figures is None else figures
        run = read_run_json(self.run_dir)
        epoch = f"epoch {info['epoch']}/{info['epochs']}" if info.get("epochs") else "before its first epoch"
        top1 = f", val top-1 {info['val_top1']:.2%}" if info.get("val_top1") is not None else ""
        news = kind if message == kind else f"{kind}: {message}"
        summary = f"{self.name}: {news} ({epoch}{top1}; {self.run_dir} on {socket.gethostname()})"
        link = ""
        if run.run_id and run.experiment_id:
            from ..tracking import run_url
            link = run_url(run.run_id, run.experiment_id)
        fields = {"run_name": self.name, "run_dir": self.run_dir, "mlflow_url": link, "mlflow_run_id": run.run_id,
                  "epoch": info.get("epoch"), "epochs": info.get("epochs"), "val_top1": info.get("val_top1"),
                  "message": message, "host": socket.gethostname(), "restarts": len(self.record["restarts"]), **extra}
        failure = notify(self.notify_command, Event(kind, summary, fields))
        if failure:        # the command itself is not shown: it may hold a token, and console.log is readable
            self._say(f"the notify command failed for '{kind}': {failure} (the run goes on)")

    def _tag_mlflow_run(self) -> None:
        """keep_alive.restarts / .last_cause / .causes on the run's MLflow run (named by run.json)."""
        run = read_run_json(self.run_dir)
        if not run.run_id:
            return
        from ..tracking import Tracker
        restarts = self.record["restarts"]
        causes = "; ".join(f"{datetime.fromtimestamp(r['time']):%Y-%m-%d %H:%M} {r['cause']}" for r in restarts)
        tracker = Tracker.attach(run.run_id, run.tracking_uri)
        tracker.set_tags({"keep_alive.restarts": len(restarts), "keep_alive.last_cause": restarts[-1]["cause"]
                          if restarts else "", "keep_alive.causes": causes[-5000:]})
        tracker.close()
        self._tags_due = False

    def _last_error(self) -> str:
        """The command's last error line in console.log (research/rundir/console.py), once tee has written it."""
        path = console.console_log(self.run_dir)
        size, deadline = -1, time.monotonic() + 2.0
        while console.size(path) != size and time.monotonic() < deadline:      # tee may still be writing
            size = console.size(path)
            time.sleep(0.2)
        return console.last_error(path, self._log_offset)


def _figures(run_dir: Path) -> dict:
    """Where the run is by its status.json: epoch, epochs and val_top1 (None where not known)."""
    reported = read_status(run_dir)
    return {key: getattr(reported, key, None) for key in ("epoch", "epochs", "val_top1")}


def _newest_checkpoint(run_dir: Path) -> str | None:
    found = checkpoint.list_checkpoints(Path(run_dir) / CHECKPOINTS)
    return found[-1].name if found else None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_PRCTL = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies (kill -9, the OOM killer), so the trainer
    checkpoints and exits instead of training on unsupervised; the pane script then starts a new supervisor.
    Also its own process group, which signals are passed on to (Popen's process_group=0 is Python 3.11+)."""
    os.setpgid(0, 0)
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)

