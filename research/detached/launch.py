"""Detached runs: tools/train.py (or a sweep, tools/sweep.py) in a new tmux session, its output teed to
RUN_DIR/console.log; with keep-alive, the pane runs the supervisor (research/detached/supervise.py), which
runs the command.

The pane runs a script from a file only the user can read, which deletes itself when it starts: the
environment it exports may hold credentials (MLFLOW_TRACKING_PASSWORD, the --notify command's token), and
a `bash -c SCRIPT` would show them to every user of the machine in ps for as long as the run lasts.

RESEARCH_TMUX_SOCKET=<name> makes every tmux call use `tmux -L <name>` (a private server,
as the tests do), so nothing touches the user's own tmux server.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from ..cli import RESUME_COMMAND_ENV, Resume
from ..durations import format_duration
from ..errors import UserError
from ..paths import RUNS, TOOLS
from ..rundir.console import console_log
from ..rundir.status import classify, read_status
from ..rundir.supervision import FINAL, read_keep_alive, supervisor_alive
from . import registry
from .notify import NOTIFY_ENV
from .supervise import MAX_RESTARTS, supervise_command

SOCKET_ENV = "RESEARCH_TMUX_SOCKET"
RUN_DIR_OPTION = "@research_run_dir"       # a tmux user option: which run a session trains
# The tmux server may be older than this shell and hold another environment: pass these on.
PASSED_ENV = ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "HOME")
PASSED_ENV_PREFIXES = ("MLFLOW_", "MXNET_", "CUDA_", "OMP_", "KMP_", "DMLC_", "NCCL_")
SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")     # what `export NAME=...` may hold unquoted


def tmux(*args: str, socket: str | None = None) -> list[str]:
    """A tmux command line, on the private server `socket` if given."""
    return ["tmux", *(["-L", socket] if socket else []), *args]


def require_tmux() -> None:
    if shutil.which("tmux") is None:
        raise UserError("tmux is not installed: install it with `sudo apt-get install tmux` "
                        "(or run tools/train.py directly; it checkpoints on SIGHUP and resumes).")


def session_name(text: str) -> str:
    """A tmux-safe session name: tmux forbids '.' and ':'; other odd characters are awkward to type."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text).strip("_") or "run"


class SessionInfo(NamedTuple):
    """What tools/status.py needs from the tmux session that runs a run directory."""
    name: str
    alive: bool          # its command still runs (a finished one stays open, showing the exit status)
    created: float       # epoch seconds


@dataclass
class Session:
    name: str
    alive: bool              # False once every pane's command has exited (kept by remain-on-exit)
    run_dir: Path | None     # set for sessions that tools/launch.py started
    created: float           # epoch seconds


def list_sessions(socket: str | None = None) -> list[Session]:
    """Sessions on the tmux server; [] if tmux is absent or no server runs."""
    if shutil.which("tmux") is None:
        return []
    fmt = "\t".join(["#{session_name}", "#{pane_dead}", "#{session_created}", "#{%s}" % RUN_DIR_OPTION])
    out = subprocess.run(tmux("list-panes", "-a", "-F", fmt, socket=socket), capture_output=True, text=True)
    if out.returncode != 0:          # "no server running": no sessions
        return []
    sessions: dict[str, Session] = {}
    for line in out.stdout.splitlines():
        name, dead, created, run_dir = (line.split("\t") + [""] * 4)[:4]
        session = sessions.setdefault(name, Session(name, False, Path(run_dir) if run_dir else None,
                                                    float(created or 0)))
        session.alive = session.alive or dead != "1"
    return list(sessions.values())


def sessions_by_run_dir(socket: str | None = None) -> dict[Path, SessionInfo]:
    """Run directory -> the session that tools/launch.py started for it, for research.inspection.status.collect."""
    return {s.run_dir: SessionInfo(s.name, s.alive, s.created) for s in list_sessions(socket) if s.run_dir}


def check_run_dir_free(run_dir: Path) -> None:
    """UserError if a trainer is still writing to `run_dir` (status.json says so and it is alive), or a
    keep-alive supervisor still watches it (it may be between two trainers)."""
    record = read_keep_alive(run_dir)
    if supervisor_alive(record) and record.get("state") not in FINAL:
        raise UserError(f"{run_dir} is supervised by a keep-alive supervisor that is still running (pid "
                        f"{record['supervisor']['pid']}, tmux session '{record.get('name')}'). Stop it with Ctrl-C in "
                        f"that session or tmux kill-session, or use --output for another folder.")
    status = read_status(run_dir)
    if status is None or classify(status) != "running":
        return
    age = format_duration(datetime.now().timestamp() - float(status.updated or 0))
    raise UserError(f"{run_dir} is in use by a trainer that is still running (pid {status.pid} on "
                    f"{status.host}, status updated {age} ago). If it is stopping after Ctrl-C or "
                    f"SIGHUP, wait for it to exit, then run this command again; or use --output for another folder.")


@dataclass
class KeepAlive:
    """--keep-alive: restarts after a crash or kill -9, and after a reboot (research/detached/supervise.py)."""
    max_restarts: int = MAX_RESTARTS
    notify: str | None = None            # a shell command run on each event (research/detached/notify.py)


@dataclass
class Launch:
    session: str
    run_dir: Path
    command: list[str]
    socket: str | None = None
    keep_alive: KeepAlive | None = None
    after_reboot: str = ""              # how a supervised run comes back after a reboot (registry.add says)

    def instructions(self, relaunch: str) -> str:
        t = "tmux" + (f" -L {self.socket}" if self.socket else "")
        log = shlex.quote(str(console_log(self.run_dir)))
        status = "python tools/status.py"
        if self.run_dir.parent != RUNS:
            status += f" --root {shlex.quote(str(self.run_dir.parent))}"
        lines = [
            f"started tmux session '{self.session}': {shlex.join(self.command)}",
            f"run directory: {self.run_dir}",
            f"  attach (detach again with Ctrl-b d):  {t} attach -t {self.session}",
            f"  follow the log:                       tail -f {log}",
            f"  stop after this batch, checkpointed:  {t} send-keys -t {self.session} C-c",
            f"  all runs:                             {status}",
            f"  resume after a stop, crash or reboot: {relaunch}"]
        if self.keep_alive is not None:
            lines += [
                f"keep-alive: restarted after kill -9, the OOM killer or a crash (gives up after "
                f"{self.keep_alive.max_restarts} restarts in a row without a new checkpoint); Ctrl-C, SIGTERM and "
                f"tmux kill-session stop it for good",
                f"  {self.after_reboot}",
                "  supervised runs: python tools/launch.py --list"]
            lines += [f"  notify: your command, on each event (passed as ${NOTIFY_ENV}, on no command line)"] \
                if self.keep_alive.notify else []
        lines.append(f"The session stays open after the run ends, showing its exit status; "
                     f"close it with: {t} kill-session -t {self.session}")
        return "\n".join(lines)


def train_command(recipe_path: str, run_dir: Path, gpus: str | None, overrides: list[str],
                  resume: Resume = "auto") -> list[str]:
    """tools/train.py with this interpreter and an explicit --output, so a relaunch finds the run; never --fresh
    (the launch set the old run aside already: a restart must not do it again)."""
    command = [sys.executable, str(TOOLS / "train.py"), recipe_path, "--output", str(run_dir)]
    command += ["--gpus", gpus] if gpus is not None else []
    for assignment in overrides:
        command += ["--set", assignment]
    return command + (["--resume"] if resume == "require" else [])


def pane_script(command: list[str], run_dir: Path, cwd: Path, env: dict[str, str]) -> str:
    """The bash script the tmux pane runs.

    tee ignores SIGHUP and SIGINT so that the trainer's last lines (checkpoint written, how to
    resume) still reach console.log after the tmux server dies or Ctrl-C reaches the whole pane.
    The script exits with the trainer's status, which the dead pane shows (remain-on-exit).
    """
    log = shlex.quote(str(console_log(run_dir)))
    return "\n".join([
        *_pane_setup(cwd, env),
        f"{shlex.join(command)} 2>&1 | {_TEE.format(log=log)}",
        "status=${PIPESTATUS[0]}",
        f'echo "[launch] $(date "+%F %T") tools/{Path(command[1]).name} exited with status $status" | tee -a {log}',
        "exit $status"])


def supervised_pane_script(supervisor: list[str], run_dir: Path, cwd: Path, env: dict[str, str],
                           restart_cause: str | None = None) -> str:
    """The pane script under keep-alive: it runs the supervisor, and runs it again if it is killed (137:
    kill -9 or the OOM killer). The pipe to tee ends only when the orphaned trainer has exited too (the
    supervisor's death sends it SIGTERM: it checkpoints first), so two trainers never overlap."""
    log = shlex.quote(str(console_log(run_dir)))
    again = "the keep-alive supervisor was killed (SIGKILL: kill -9 or the OOM killer)"
    return "\n".join([
        *_pane_setup(cwd, env),
        f"cause={shlex.quote(restart_cause or '')}",
        "while :; do",
        f'  {shlex.join(supervisor[:2])} ${{cause:+--restart-cause "$cause"}} {shlex.join(supervisor[2:])} 2>&1 '
        f"| {_TEE.format(log=log)}",
        "  status=${PIPESTATUS[0]}",
        '  [ "$status" = 137 ] || break',
        f"  cause={shlex.quote(again)}",
        f'  echo "[launch] $(date "+%F %T") $cause: starting it again in 1 s" | tee -a {log}',
        "  sleep 1",
        "done",
        f'echo "[launch] $(date "+%F %T") the keep-alive supervisor exited with status $status" | tee -a {log}',
        "exit $status"])


_TEE = "(trap '' HUP INT; exec tee -a {log})"


def _pane_setup(cwd: Path, env: dict[str, str]) -> list[str]:
    """The script's first lines: cd, the environment."""
    odd = [key for key in env if not SHELL_NAME.fullmatch(key)]
    if odd:      # a name is written unquoted: `export A;cmd;=...` would run cmd
        raise UserError(f"environment variable {odd[0]!r} is not a shell variable name, so it cannot be passed "
                        f"to the run; unset it, then launch again.")
    return [f"cd {shlex.quote(str(cwd))} || exit 2",
            *[f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items())],
            "export PYTHONUNBUFFERED=1"]      # stdout is a pipe: unbuffered, so the log is live


def passed_env() -> dict[str, str]:
    """The variables the pane gets from this shell; names a shell cannot export are left out."""
    return {key: value for key, value in os.environ.items()
            if (key in PASSED_ENV or key.startswith(PASSED_ENV_PREFIXES)) and SHELL_NAME.fullmatch(key)}


def launch(recipe_path: str, overrides: list[str] = (), gpus: str | None = None, name: str | None = None,
           output: Path | None = None, resume: Resume = "auto", socket: str | None = None,
           keep_alive: KeepAlive | None = None, resume_command: str | None = None) -> Launch:
    """Start tools/train.py for `recipe_path` in a new detached tmux session (supervised with `keep_alive`:
    registered for the boot entry, which is installed if the machine has cron or systemd --user).
    `resume_command` (the launch command again) is what the trainer names when it tells how to resume.

    Checks first what would make the run fail or collide: tmux, the recipe and --gpus, a live
    session of that name, a trainer still writing to the run directory, and the trainer's own
    resume decision (e.g. --resume without a checkpoint). `resume` "fresh" moves the old run aside here,
    before console.log is opened in the run directory.

    Raises:
        UserError: with a message naming the problem and the fix.
    """
    from ..config import load_recipe
    from ..devices import parse_gpus

    require_tmux()
    recipe = load_recipe(recipe_path, list(overrides))
    parse_gpus(gpus)
    name = session_name(name or recipe.name)
    check_session_free(name, socket)
    from ..training.resume import default_run_dir, prepare_run_dir   # imports mxnet: after the cheap checks
    run_dir = Path(output).resolve() if output else default_run_dir(recipe)
    check_run_dir_free(run_dir)
    prepare_run_dir(run_dir, recipe, resume)
    return start_session(name, run_dir, train_command(recipe_path, run_dir, gpus, list(overrides), resume), socket,
                         keep_alive, resume_command)


def check_session_free(name: str, socket: str | None = None) -> None:
    """UserError if a tmux session `name` is running (one whose command has ended may be replaced)."""
    existing = next((s for s in list_sessions(socket) if s.name == name), None)
    if existing is not None and existing.alive:
        attach = shlex.join(tmux("attach", "-t", name, socket=socket))
        raise UserError(f"a tmux session named '{name}' is already running: attach with `{attach}`, "
                        f"or pass --name for another session.")


def start_session(name: str, run_dir: Path, command: list[str], socket: str | None = None,
                  keep_alive: KeepAlive | None = None, resume_command: str | None = None) -> Launch:
    """`command` (a tools/*.py) in a new detached tmux session `name`, its output teed to run_dir/console.log,
    the session tagged with `run_dir` for tools/status.py; a dead session of that name is replaced. With
    `keep_alive` the pane runs the supervisor, which runs `command`, and the run is registered for the boot
    entry (installed if the machine has cron or systemd --user).

    Raises:
        UserError: a live session of that name, or tmux could not start one.
    """
    check_session_free(name, socket)
    run_dir.mkdir(parents=True, exist_ok=True)
    if any(s.name == name for s in list_sessions(socket)):     # the previous run's pane, kept to show its exit status
        subprocess.run(tmux("kill-session", "-t", f"={name}", socket=socket), capture_output=True)
    with open(console_log(run_dir), "a") as log:
        log.write(f"[launch] {datetime.now():%Y-%m-%d %H:%M:%S} tmux session '{name}': {shlex.join(command)}\n")
    env = {**passed_env(), **({RESUME_COMMAND_ENV: resume_command} if resume_command else {})}
    if keep_alive is None:
        new_session(name, pane_script(command, run_dir, Path.cwd(), env), run_dir, socket)
        return Launch(name, run_dir, command, socket)
    supervisor = supervise_command(run_dir, command, name, keep_alive.max_restarts)
    # '' when there is none: a RESEARCH_NOTIFY the tmux server kept from an older shell is not used
    env[NOTIFY_ENV] = keep_alive.notify or ""
    entry = registry.Entry(str(run_dir), name, socket, supervisor, str(Path.cwd()), env)
    after_reboot = registry.add(entry)        # before the session: a run that ends at once drops its entry
    try:
        new_session(name, supervised_pane_script(supervisor, run_dir, Path.cwd(), entry.env), run_dir, socket)
    except UserError:
        registry.remove(run_dir)
        raise
    return Launch(name, run_dir, command, socket, keep_alive, after_reboot)


def new_session(name: str, script: str, run_dir: Path, socket: str | None) -> None:
    """A detached tmux session `name` running the bash `script` for `run_dir`, kept open after it ends.

    Raises:
        UserError: tmux could not start it.
    """
    # One tmux invocation: remain-on-exit is set before a fast-failing command could end the session.
    target = f"={name}:"            # '=': exact name, not the first session it is a prefix of
    path = private_script(script)   # on no command line: what it exports may hold credentials
    out = subprocess.run(tmux("new-session", "-d", "-s", name, "-x", "200", "-y", "50", "--", "bash", str(path),
                              ";", "set-option", "-w", "-t", target, "remain-on-exit", "on",
                              ";", "set-option", "-t", target, RUN_DIR_OPTION, str(run_dir), socket=socket),
                         capture_output=True, text=True)
    if out.returncode != 0:
        shutil.rmtree(path.parent, ignore_errors=True)
        subprocess.run(tmux("kill-session", "-t", target, socket=socket), capture_output=True)
        raise UserError(f"tmux could not start session '{name}': {out.stderr.strip()}")


def private_script(script: str) -> Path:
    """`script` in a new 0700 file in a new 0700 folder (of the temporary folder), with a first line that
    deletes both once bash runs it (bash goes on reading the file it has open)."""
    folder = Path(tempfile.mkdtemp(prefix="research-pane."))
    path = folder / "pane.sh"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
    with open(fd, "w") as handle:
        handle.write(f"rm -rf -- {shlex.quote(str(folder))}\n{script}\n")
    return path
