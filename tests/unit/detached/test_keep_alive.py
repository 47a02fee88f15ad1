"""The registry of supervised runs and its boot entry (a stand-in crontab, a stand-in systemctl, a temporary
HOME), tools/launch.py --list / --forget / --boot, and what tools/status.py shows of a supervised run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import temporary_home

from research.errors import UserError
from research.detached import boot_entry, keep_alive, registry
from research.inspection.status import collect, format_table


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "home"
    for key, value in temporary_home(folder).items():
        monkeypatch.setenv(key, value)
    return folder


def entry(run_dir: Path) -> registry.Entry:
    return registry.Entry(str(run_dir), run_dir.name, "no-such-server", ["true"], str(run_dir), {"PATH": "/bin"})


def crontab(home: Path) -> list[str]:
    table = home / "crontab.txt"
    return table.read_text().splitlines() if table.exists() else []


def run_as_cron_would(home: Path, line: str) -> None:
    """The @reboot line's command as cron runs it: /bin/sh, HOME and a bare PATH, nothing of this shell."""
    command = line.removeprefix("@reboot ").replace("\\%", "%")
    subprocess.run(["/bin/sh", "-c", command], env={"HOME": str(home), "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh",
                                                    "LOGNAME": "user"}, check=True, timeout=60)


def test_one_crontab_line_serves_every_supervised_run_and_goes_with_the_last(home, tmp_path):
    (home / "crontab.txt").write_text("0 3 * * * backup.sh\n")             # the user's own line stays
    said = registry.add(entry(tmp_path / "a"))
    registry.add(entry(tmp_path / "b"))
    assert said.startswith("restarted after a reboot by your crontab's @reboot line")
    ours = [line for line in crontab(home) if line.startswith("@reboot")]
    assert len(ours) == 1 and "tools/launch.py --boot" in ours[0] and crontab(home)[0] == "0 3 * * * backup.sh"
    assert oct((home / ".local/state/research/keep-alive").stat().st_mode & 0o777) == "0o700"   # env may hold secrets
    registry.remove(tmp_path / "a")
    assert len(crontab(home)) == 2
    # The boot line, run as cron runs it: b had finished (its record says so), so it is dropped, and the line
    # with it; c's folder is missing (a disk not mounted yet?), so it is kept, and started by a later --boot.
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep-alive.json").write_text(json.dumps({"state": "finished"}))
    run_as_cron_would(home, ours[0])
    assert "b: finished already; no longer supervised" in (home / ".local/state/research/boot.log").read_text()
    assert registry.entries() == [] and crontab(home) == ["0 3 * * * backup.sh"]
    registry.add(entry(tmp_path / "c"))
    run_as_cron_would(home, crontab(home)[-1])
    assert "c: not found (a disk not mounted yet?)" in (home / ".local/state/research/boot.log").read_text()
    assert [e.run_dir for e in registry.entries()] == [str(tmp_path / "c")]


def test_systemd_user_unit_where_there_is_no_crontab(home, tmp_path, monkeypatch):
    calls = tmp_path / "systemctl-calls"
    (home / "bin" / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (home / "bin" / "systemctl").chmod(0o755)
    monkeypatch.setenv(boot_entry.KIND_ENV, "systemd")
    said = registry.add(entry(tmp_path / "a"))
    unit = home / ".config/systemd/user/research-keep-alive.service"
    wants = unit.parent / "default.target.wants" / unit.name
    assert wants.resolve() == unit and "WantedBy=default.target" in unit.read_text()
    assert "--user daemon-reload" in calls.read_text()
    if not boot_entry.lingering():
        assert "loginctl enable-linger" in said
    exec_start = next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
    assert exec_start == f'ExecStart=/bin/sh -c "{registry.boot_command()}"'     # nothing here needed escaping
    registry.remove(tmp_path / "a")
    assert not unit.exists() and not wants.is_symlink()


def test_without_cron_or_systemd_keep_alive_says_so_and_lists_the_run(home, tmp_path, monkeypatch):
    monkeypatch.setenv(boot_entry.KIND_ENV, "none")
    said = registry.add(entry(tmp_path / "a"))
    assert "neither crontab nor systemd" in said and "tools/launch.py --boot" in said
    listing = keep_alive.format_list()
    assert str(tmp_path / "a") in listing and "boot entry: none" in listing


def test_forget_drops_a_run_and_names_an_unknown_one(home, tmp_path):
    (tmp_path / "a").mkdir()
    registry.add(entry(tmp_path / "a"))
    assert "forgotten" in keep_alive.forget(tmp_path / "a")
    assert registry.entries() == [] and crontab(home) == []
    with pytest.raises(UserError, match="is not a supervised run.*--list"):
        keep_alive.forget(tmp_path / "a")


def test_the_restart_cause_after_boot_says_whether_the_machine_rebooted(tmp_path):
    before_boot = {"updated": psutil.boot_time() - 60}
    assert keep_alive.restart_cause(before_boot, tmp_path).startswith("the machine restarted")
    assert "supervisor and tmux session were gone" in keep_alive.restart_cause({"updated": time.time()}, tmp_path)


def test_status_shows_restarts_and_a_supervised_run_between_two_trainers(tmp_path):
    run_dir = tmp_path / "digits"
    run_dir.mkdir()
    (run_dir / "status.json").write_text(json.dumps({"status": "running", "epoch": 2, "epochs": 9, "pid": 2 ** 22 + 1,
                                                     "host": os.uname().nodename, "updated": time.time()}))
    record = {"state": "restarting", "supervisor": {"pid": os.getpid(), "host": os.uname().nodename,
                                                    "started": psutil.Process().create_time()},
              "restarts": [{"cause": "an unexpected error (a crash)"}, {"cause": "killed by SIGKILL: kill -9 or ..."}]}
    (run_dir / "keep-alive.json").write_text(json.dumps(record))
    [run] = collect(tmp_path)
    assert (run.state, run.restarts, run.last_restart) == ("restarting", 2, "killed by SIGKILL: kill -9 or ...")
    assert "restarts" in format_table([run]) and "2, last: killed by SIGKILL" in format_table([run])


def test_launch_list_runs_without_a_recipe(home, tmp_path):
    env = dict(os.environ, **temporary_home(home))
    proc = subprocess.run([sys.executable, str(Path(__file__).parents[3] / "tools" / "launch.py"), "--list"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("no supervised runs"), proc.stderr


def test_remove_leaves_the_crontab_byte_for_byte_as_it_was(home, tmp_path):
    """Whatever the user's table holds (a CR, a '%', a tab, blank lines), add then remove gives it back as it was;
    a user who had none has none again."""
    table = home / "crontab.txt"
    before = b"0 3 * * * backup.sh --at 3%4\r\n# my notes\x0c here\n\n\t*/5 * * * * sync\n"
    table.write_bytes(before)
    registry.add(entry(tmp_path / "a"))
    added = table.read_bytes()
    assert added.startswith(before) and added[len(before):].startswith(b"@reboot ") and added.count(b"\n") == 5
    registry.remove(tmp_path / "a")
    assert table.read_bytes() == before
    table.unlink()
    registry.add(entry(tmp_path / "a"))
    registry.remove(tmp_path / "a")
    assert not table.exists()


@pytest.mark.parametrize("kind", ["cron", "systemd"])
def test_a_line_break_never_reaches_the_crontab_or_the_unit(home, tmp_path, monkeypatch, kind):
    """A PATH (or a checkout's path) with a newline in it would split the @reboot line, the rest becoming a
    job of its own that cron runs every minute; the unit file would break the same way."""
    (home / "crontab.txt").write_text("0 3 * * * backup.sh\n")
    (home / "bin" / "systemctl").write_text("#!/bin/sh\n")
    (home / "bin" / "systemctl").chmod(0o755)
    monkeypatch.setenv(boot_entry.KIND_ENV, kind)
    monkeypatch.setenv("PATH", f"{os.environ['PATH']}:/x\n* * * * * touch {tmp_path}/pwned;")
    said = registry.add(entry(tmp_path / "a"))
    assert said.startswith("not restarted after a reboot: the command it would run holds a line break") and \
        "touch" in said and "python tools/launch.py --boot" in said
    assert (home / "crontab.txt").read_text() == "0 3 * * * backup.sh\n"
    assert not (home / ".config/systemd/user/research-keep-alive.service").exists()
    assert [e.run_dir for e in registry.entries()] == [str(tmp_path / "a")]      # the run itself is supervised
