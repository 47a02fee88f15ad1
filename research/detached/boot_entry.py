"""The one boot entry that starts the user's supervised runs again after a reboot, without root: a line in
the user's crontab (@reboot), or a systemd --user unit where there is no crontab.

RESEARCH_KEEP_ALIVE_BOOT=cron|systemd|none picks one instead. The command the entry runs is given by
research/detached/registry.py (tools/launch.py --boot, with the PATH of the launch).
"""
from __future__ import annotations

import getpass
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Literal

Kind = Literal["cron", "systemd", "none"]
KIND_ENV = "RESEARCH_KEEP_ALIVE_BOOT"
MARKER = "# research keep-alive (tools/launch.py --list)"     # ends our crontab line
UNIT = "research-keep-alive.service"


class BootEntryError(RuntimeError):
    """crontab or the unit file could not be read or written; the message says which and why."""


def kind() -> Kind:
    """What this machine offers: a crontab command first (it needs nothing else), else a running systemd."""
    chosen = os.environ.get(KIND_ENV, "")
    if chosen in ("cron", "systemd", "none"):
        return chosen
    if shutil.which("crontab"):
        return "cron"
    if shutil.which("systemctl") and Path("/run/systemd/system").is_dir():     # systemd is PID 1 (sd_booted)
        return "systemd"
    return "none"


def install(command: str) -> str:
    """Install (or replace) the entry that runs `command` at boot; returns what it is and what it needs.

    Raises:
        BootEntryError: `command` holds a line break or another control character, which would split the
            crontab line (the rest of it becoming a job of its own) or the unit file; nothing is written.
    """
    odd = next((i for i, char in enumerate(command) if char < " " and char != "\t" or char == "\x7f"), None)
    if odd is not None:
        raise BootEntryError(f"the command it would run holds a line break or another control character "
                             f"({command[max(odd - 30, 0):odd + 30]!r}: from PATH, this checkout's path or the "
                             f"interpreter's), which would split the crontab line or the unit file; not installed")
    which = kind()
    if which == "cron":
        lines = [line for line in _crontab() if MARKER not in line]
        escaped = command.replace("%", "\\%")          # cron turns a bare % into a newline
        _write_crontab(lines + [f"@reboot {escaped} {MARKER}"])
        return "your crontab's @reboot line (crontab -l shows it)"
    if which == "systemd":
        unit = unit_path()
        unit.parent.mkdir(parents=True, exist_ok=True)
        unit.write_text(unit_text(command))
        wants = unit.parent / "default.target.wants" / UNIT          # what `systemctl --user enable` makes
        wants.parent.mkdir(exist_ok=True)
        if not wants.is_symlink():
            wants.symlink_to(Path("..") / UNIT)
        _systemctl("daemon-reload")
        said = f"the systemd --user unit {unit}"
        if not lingering():
            said += (f"; it starts at boot only if systemd keeps a user manager for {getpass.getuser()} without a "
                     f"login: run `loginctl enable-linger` once (with sudo if it asks), else the runs come back "
                     f"when you next log in")
        return said
    return ""


def remove() -> None:
    """Remove the entry, of either kind (the user may have switched): the crontab is left as it was before
    `install`, line for line (none at all if ours was its only line)."""
    if shutil.which("crontab"):
        lines = _crontab()
        if any(MARKER in line for line in lines):
            _write_crontab([line for line in lines if MARKER not in line])
    unit = unit_path()
    wants = unit.parent / "default.target.wants" / UNIT
    if unit.exists() or wants.is_symlink():
        wants.unlink(missing_ok=True)
        unit.unlink(missing_ok=True)
        _systemctl("daemon-reload")


def installed() -> str:
    """The entry as it stands ('' if none): the crontab line or the unit file's path."""
    if shutil.which("crontab"):
        line = next((line for line in _crontab(missing_ok=True) if MARKER in line), "")
        if line:
            return f"crontab: {line}"
    return f"systemd --user unit: {unit_path()}" if unit_path().exists() else ""


def unit_path() -> Path:
    return Path.home() / ".config" / "systemd" / "user" / UNIT


def unit_text(command: str) -> str:
    """A oneshot unit of the user's manager: it runs `command` once at start, and the tmux server that
    command starts stays (RemainAfterExit, KillMode=process: systemd does not end it with the unit)."""
    escaped = command.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return "\n".join([
        "[Unit]",
        "Description=Start again the runs that tools/launch.py --keep-alive supervises",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "KillMode=process",
        f'ExecStart=/bin/sh -c "{escaped}"',
        "",
        "[Install]",
        "WantedBy=default.target",
        ""])


def lingering() -> bool:
    """True if logind keeps this user's systemd manager running without a login (loginctl enable-linger)."""
    return (Path("/var/lib/systemd/linger") / getpass.getuser()).exists()


def _crontab(missing_ok: bool = False) -> list[str]:
    """The user's crontab lines, read as bytes and split at newlines only (text mode would turn a CR into a
    newline, str.splitlines split at a form feed: the table would not be written back as it was)."""
    try:
        out = subprocess.run(["crontab", "-l"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        if missing_ok:
            return []
        raise BootEntryError(f"crontab -l failed: {err}") from None
    if out.returncode != 0:
        said = out.stderr.decode(errors="replace").strip()
        if "no crontab" in said or missing_ok:          # "no crontab for USER": an empty one
            return []
        raise BootEntryError(f"crontab -l failed: {said}")
    table = out.stdout.decode(errors="surrogateescape")
    return table.removesuffix("\n").split("\n") if table else []


def _write_crontab(lines: list[str]) -> None:
    """Install `lines` as the user's crontab; no lines: no crontab (crontab -r)."""
    command = ["crontab", "-"] if lines else ["crontab", "-r"]
    try:
        out = subprocess.run(command, input="".join(line + "\n" for line in lines).encode(errors="surrogateescape"),
                             capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        raise BootEntryError(f"{shlex.join(command)} failed: {err}") from None
    if out.returncode != 0:
        raise BootEntryError(f"{shlex.join(command)} failed: {out.stderr.decode(errors='replace').strip()} (is cron "
                             f"allowed for you? /etc/cron.allow, /etc/cron.deny)")


def _systemctl(*args: str) -> None:
    """Best effort: a user manager that is not running (no login yet) reads the unit files when it starts."""
    try:
        subprocess.run(["systemctl", "--user", *args], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pass
