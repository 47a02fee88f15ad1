"""research.inspection.status on status.json files written here: live, killed -9, rebooted, other-host and odd runs."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from research.detached.launch import SessionInfo
from research.inspection.status import collect, format_table
from research.rundir.status import Status, classify

HOST = socket.gethostname()


def write_status(run_dir: Path, **fields) -> Path:
    info = {"status": "running", "epoch": 3, "epochs": 10, "val_top1": 0.975, "img_per_s": 5012.4,
            "eta_s": 700.0, "run_id": "abc123", "pid": 1, "host": HOST, "updated": time.time()}
    info.update(fields)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "status.json").write_text(json.dumps(info))
    return run_dir


def by_name(runs):
    return {run.name: run for run in runs}


def test_live_trainer_on_this_host_is_running_with_its_figures(tmp_path):
    write_status(tmp_path / "lenet", pid=os.getpid())
    [run] = collect(tmp_path)
    assert (run.name, run.state, run.epoch, run.epochs, run.run_id) == ("lenet", "running", 3, 10, "abc123")
    table = format_table([run])
    assert "3/10" in table and "97.50%" in table and "5012" in table and "11m" in table   # ETA 700 s


def test_killed_with_sigkill_shows_dead_not_running(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_status(tmp_path / "run", pid=child.pid)
        assert collect(tmp_path)[0].state == "running"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert collect(tmp_path)[0].state == "dead"
    finally:
        child.kill()
        child.wait()


def test_pid_reused_after_a_reboot_is_dead(tmp_path):
    # This process is alive, but it started after the status was last written: another process.
    started = psutil.Process().create_time()
    write_status(tmp_path / "run", pid=os.getpid(), updated=started - 3600)
    assert collect(tmp_path)[0].state == "dead"


def test_other_host_is_stale_only_after_two_epochs_without_update():
    now = time.time()
    # 8,400 s an epoch (ETA 70 epochs x 8,400 s): 3 h without news is normal, 6 h is not.
    info = {"epoch": 10, "epochs": 80, "eta_s": 70 * 8400.0, "pid": 1, "host": "gpubox"}
    assert classify(Status("running", **info, updated=now - 3 * 3600), now, hostname=HOST) == "running"
    assert classify(Status("running", **info, updated=now - 6 * 3600), now, hostname=HOST) == "stale"
    unknown = {"epoch": 0, "epochs": 80, "eta_s": None, "pid": 1, "host": "gpubox"}
    assert classify(Status("running", **unknown, updated=now - 60), now, hostname=HOST) == "running"
    assert classify(Status("running", **unknown, updated=now - 2 * 86400), now, hostname=HOST) == "stale"


def test_ended_states_are_shown_as_written_even_without_their_process(tmp_path):
    for state in ("finished", "killed", "failed"):
        write_status(tmp_path / state, status=state, pid=2 ** 22 + 1)
    assert {name: run.state for name, run in by_name(collect(tmp_path)).items()} == {
        "finished": "finished", "killed": "killed", "failed": "failed"}


def test_damaged_status_file_is_listed_as_unreadable(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "status.json").write_text('{"status": "runn')
    write_status(tmp_path / "good", status="finished")
    runs = by_name(collect(tmp_path))
    assert runs["broken"].state == "unreadable" and runs["good"].state == "finished"


def test_nested_run_dirs_are_found_and_run_subfolders_skipped(tmp_path):
    write_status(tmp_path / "sweep" / "lr0.1", status="finished")
    write_status(tmp_path / "sweep" / "lr0.1" / "checkpoints", status="finished")   # not a run
    write_status(tmp_path / "lenet", status="killed")
    assert sorted(by_name(collect(tmp_path))) == ["lenet", "sweep/lr0.1"]
    assert [run.name for run in collect(tmp_path / "lenet")] == ["lenet"]             # root is the run dir


def test_tmux_sessions_are_matched_to_their_run_dirs(tmp_path):
    now = time.time()
    old = write_status(tmp_path / "relaunched", status="killed", updated=now - 600)
    new = write_status(tmp_path / "live", pid=os.getpid(), updated=now)
    sessions = {old: SessionInfo("relaunched", True, now - 5),     # newer than its status.json
                new: SessionInfo("live", True, now - 3600),
                tmp_path / "just_started": SessionInfo("just_started", True, now - 1),
                tmp_path / "crashed_at_start": SessionInfo("crashed_at_start", False, now - 30),
                Path("/elsewhere/run"): SessionInfo("elsewhere", True, now)}
    runs = by_name(collect(tmp_path, sessions, now=now))
    assert {name: (run.state, run.session) for name, run in runs.items()} == {
        "relaunched": ("starting", "relaunched"), "live": ("running", "live"),
        "just_started": ("starting", "just_started"), "crashed_at_start": ("exited", "crashed_at_start")}


def test_in_epoch_progress_shows_how_far_the_epoch_under_way_has_got(tmp_path):
    # pid 1 (the default) started long before the update 125 s ago; pytest itself may not have (it read "dead")
    write_status(tmp_path / "lenet", batch=43, batches=100, updated=time.time() - 125)
    [run] = collect(tmp_path)
    table = format_table([run])
    assert "3/10 +43%" in table and re.search(r"\b2m0[5-9]s ago", table)


def test_a_sweeps_trials_sit_under_it_and_the_table_fits_in_100_columns(tmp_path):
    # The README's sweep: 'lenet_digits-sweep-lr-warmup_epochs/lr-0.01_warmup_epochs-0' made rows 127 wide
    sweep = tmp_path / "lenet_digits-sweep-lr-warmup_epochs"
    write_status(sweep, status="finished", kind="sweep", trials=4, trials_done=4)
    for name in ("lr-0.01_warmup_epochs-0", "lr-0.02_warmup_epochs-1"):
        write_status(sweep / name, status="finished", epoch=20, epochs=20)
    lines = format_table(collect(tmp_path), width=100).splitlines()
    assert lines[2].startswith("  lr-0.01_warmup_epochs-0 ") and lines[3].startswith("  lr-0.02_warmup_epochs-1 ")
    assert max(map(len, lines)) <= 100
    assert max(map(len, format_table(collect(tmp_path), width=80).splitlines())) <= 80     # the names wrap
