"""research.detached.supervise on a stand-in command (a few lines of Python that checkpoint, get killed, fail or wait
for a signal as told), so each case costs a Python start-up, not a trainer's."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, temporary_home, wait_for

from research.errors import ExitCode
from research.detached import registry
from research.detached.launch import passed_env, supervised_pane_script
from research.detached.supervise import RESTART, STAY, Supervisor, policy, supervise_command
from research.rundir.supervision import read_keep_alive

# The k-th run of the stand-in does the k-th '+'-joined list of steps (the last one again after that).
STAND_IN = r'''
import os, signal, sys, time, json
from pathlib import Path
run_dir, plan = Path(sys.argv[1]), sys.argv[2].split(",")
runs = run_dir / "runs.txt"
n = len(runs.read_text().splitlines()) if runs.exists() else 0
with open(runs, "a") as f:
    f.write(f"{os.getpid()}\n")
(run_dir / "status.json").write_text(json.dumps({"status": "running", "epoch": n, "epochs": 9, "val_top1": 0.5,
                                                "pid": os.getpid(), "updated": time.time()}))
for step in plan[min(n, len(plan) - 1)].split("+"):
    if step == "ckpt":                      # progress: a new checkpoint name, as list_checkpoints sees it
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        (run_dir / "checkpoints" / f"step-{n + 1:010d}.ckpt").write_bytes(b"")
    elif step == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif step == "oom":                     # into a memory cgroup with a small limit, then allocate until killed
        Path(os.environ["STAND_IN_CGROUP_PROCS"]).write_text(str(os.getpid()))
        hog = []
        while True:
            hog.append(b"x" * (8 << 20))
    elif step == "guard":
        print("2026-01-01 00:00:00 ERROR every output of the net had the same value at epoch 1: the head is dead",
              flush=True)
        sys.exit(3)
    elif step.startswith("exit"):
        sys.exit(int(step[4:]))
    elif step == "wait":                    # like the trainer: a stop signal -> checkpoint, exit 128+N
        def stop(signum, frame):
            with open(run_dir / "signals.txt", "a") as f:
                f.write(signal.Signals(signum).name + "\n")
            sys.exit(128 + signum)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, stop)
        print("waiting", flush=True)
        time.sleep(60)
'''
# A notify command: appends each event as one JSON line, the RESEARCH_* variables and what came on stdin.
RECORDER = r'''
import json, os, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({**{k: v for k, v in os.environ.items() if k.startswith("RESEARCH_")},
                        "stdin": sys.stdin.read()}) + "\n")
'''


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A run directory, and a temporary HOME with a stand-in crontab for the registry of supervised runs."""
    for key, value in temporary_home(tmp_path / "home").items():
        monkeypatch.setenv(key, value)
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    (tmp_path / "recorder.py").write_text(RECORDER)
    folder = tmp_path / "run"
    folder.mkdir()
    return folder


def stand_in(run_dir: Path, plan: str) -> list[str]:
    return [sys.executable, str(run_dir.parent / "stand_in.py"), str(run_dir), plan]


def recorder(run_dir: Path) -> str:
    """The notify command that records into run_dir/../events.jsonl."""
    return f"{sys.executable} {run_dir.parent / 'recorder.py'} {run_dir.parent / 'events.jsonl'}"


def runs_of(run_dir: Path) -> int:
    return len((run_dir / "runs.txt").read_text().splitlines())


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def register(run_dir: Path, command: list[str]) -> None:
    registry.add(registry.Entry(str(run_dir), "run", None, command, str(run_dir), {}))


def test_the_policy_restarts_what_a_rerun_can_fix_and_nothing_else():
    assert policy(ExitCode.OK)[0] == "done"
    assert policy(ExitCode.FAILED)[0] == RESTART                        # a crash
    for code in (ExitCode.USER_ERROR, ExitCode.UNHEALTHY, ExitCode.SAVE_FAILED):
        assert policy(code)[0] == STAY
    assert "free space" in policy(ExitCode.SAVE_FAILED)[1]
    assert policy(128 + signal.SIGKILL) == (RESTART, "killed by SIGKILL: kill -9 or the OOM killer")
    assert policy(128 + signal.SIGSEGV) == (RESTART, "killed by SIGSEGV: a crash of the process")
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):         # stopped on purpose, checkpointed
        assert policy(128 + stop)[0] == STAY
    assert policy(ExitCode.PRUNED)[0] == "done"                        # its sweep stopped it: not restarted
    assert policy(6)[0] == STAY                                          # a status the policy does not know


def test_killed_twice_comes_back_each_time_and_the_events_arrive_in_order(run_dir, capsys):
    log = run_dir.parent / "events.jsonl"
    command = stand_in(run_dir, "ckpt+kill,ckpt+kill,ckpt+exit0")
    register(run_dir, command)
    notify = recorder(run_dir) + "; exit 1"        # it also fails: logged, the run goes on
    status = Supervisor(run_dir, command, "digits", notify_command=notify, backoff_s=(0.1,)).run()
    assert status == 0 and runs_of(run_dir) == 3
    got = events(log)
    assert [e["RESEARCH_EVENT"] for e in got] == ["restarted", "restarted", "finished"]
    first = got[0]
    assert first["RESEARCH_MESSAGE"] == "killed by SIGKILL: kill -9 or the OOM killer"
    assert (first["RESEARCH_RUN_NAME"], first["RESEARCH_RUN_DIR"], first["RESEARCH_EPOCH"]) == (
        "digits", str(run_dir), "0")                          # where the killed run was (its status.json)
    assert first["RESEARCH_VAL_TOP1"] == "0.5" and first["RESEARCH_RESTARTS"] == "1"
    assert first["stdin"].count("\n") == 1 and first["stdin"].startswith("digits: restarted: killed by SIGKILL")
    record = read_keep_alive(run_dir)
    assert record["state"] == "finished" and [r["exit_status"] for r in record["restarts"]] == [137, 137]
    assert "exit status 1" in capsys.readouterr().out                     # the failing notify command, logged
    assert registry.entries() == []                                       # finished: a reboot does not start it


def test_a_crash_loop_stops_after_max_restarts_and_says_why(run_dir):
    log = run_dir.parent / "events.jsonl"
    command = stand_in(run_dir, "ckpt+kill,kill")       # progress once, then killed without a new checkpoint
    register(run_dir, command)
    status = Supervisor(run_dir, command, "digits", max_restarts=2, notify_command=recorder(run_dir),
                        backoff_s=(0.1,)).run()
    assert status == 1 and runs_of(run_dir) == 3                # 2 restarts with no checkpoint between them
    assert [e["RESEARCH_EVENT"] for e in events(log)] == ["restarted", "restarted", "crash-loop"]
    record = read_keep_alive(run_dir)
    assert record["state"] == "crash-loop" and "2 restart(s) in a row without a new checkpoint" in record["message"]
    assert registry.entries() == []


def test_a_dead_head_is_not_restarted_and_the_guards_message_is_told(run_dir):
    log = run_dir.parent / "events.jsonl"
    (run_dir / "console.log").write_text("")
    command = stand_in(run_dir, "guard")
    with open(run_dir / "console.log", "a") as console:       # as the pane's tee would write it
        proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "supervise.py"), str(run_dir), "--name",
                                 "digits", "--notify", recorder(run_dir), "--", *command],
                                stdout=console, stderr=subprocess.STDOUT)
        assert proc.wait(60) == 3
    assert runs_of(run_dir) == 1
    (event,) = events(log)
    assert event["RESEARCH_EVENT"] == "guard" and event["RESEARCH_EXIT_STATUS"] == "3"
    assert event["RESEARCH_MESSAGE"].startswith("every output of the net had the same value at epoch 1")
    assert "not restarted" in (run_dir / "console.log").read_text()


@pytest.mark.parametrize("stop", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM], ids=lambda sig: sig.name)
def test_a_stop_on_purpose_is_passed_on_and_the_run_stays_stopped(run_dir, stop):
    # SIGHUP is what tmux kill-session sends the pane; Ctrl-C in the pane sends SIGINT.
    register(run_dir, ["unused"])
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "supervise.py"), str(run_dir), "--name", "digits",
                             "--", *stand_in(run_dir, "wait")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "waiting"
    proc.send_signal(stop)
    assert proc.wait(60) == 128 + stop
    assert (run_dir / "signals.txt").read_text().split() == [signal.Signals(stop).name]      # passed on, once
    assert runs_of(run_dir) == 1 and read_keep_alive(run_dir)["state"] == "stopped"
    assert registry.entries() == []                     # nor started again after a reboot


def test_sigterm_of_a_shutdown_leaves_the_run_to_the_boot_entry(run_dir, tmp_path):
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    (fake_bin / "systemctl").write_text("#!/bin/sh\necho stopping\n")     # systemd is shutting the machine down
    (fake_bin / "systemctl").chmod(0o755)
    register(run_dir, ["unused"])
    env = dict(os.environ, PATH=f"{fake_bin}:{os.environ['PATH']}")
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "supervise.py"), str(run_dir), "--name", "digits",
                             "--", *stand_in(run_dir, "wait")], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "waiting"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143
    assert read_keep_alive(run_dir)["state"] == "shutdown"
    assert [entry.run_dir for entry in registry.entries()] == [str(run_dir)]


def test_a_killed_supervisor_is_started_again_and_its_trainer_checkpoints_first(run_dir):
    command = stand_in(run_dir, "wait,exit0")
    supervisor = supervise_command(run_dir, command, "digits")
    script = supervised_pane_script(supervisor, run_dir, run_dir, passed_env())
    pane = subprocess.Popen(["bash", "-c", script], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: (run_dir / "runs.txt").exists() and read_keep_alive(run_dir).get("state") == "watching",
                 30, "the first run", run_dir)
        os.kill(read_keep_alive(run_dir)["supervisor"]["pid"], signal.SIGKILL)      # as the OOM killer would
        assert pane.wait(60) == 0
    finally:
        if pane.poll() is None:
            os.killpg(pane.pid, signal.SIGKILL)
    assert (run_dir / "signals.txt").read_text().split() == ["SIGTERM"]   # the orphan stopped, checkpointed
    record = read_keep_alive(run_dir)
    assert runs_of(run_dir) == 2 and record["state"] == "finished"
    assert record["restarts"][-1]["cause"].startswith("the keep-alive supervisor was killed")
    log = (run_dir / "console.log").read_text()
    assert "starting it again" in log and log.rstrip().endswith("exited with status 0")


def test_stall_is_told_once_while_the_command_lives(run_dir):
    log = run_dir.parent / "events.jsonl"
    command = [sys.executable, "-c", "import time; time.sleep(1)"]      # never writes status.json
    started = time.monotonic()
    Supervisor(run_dir, command, "digits", notify_command=recorder(run_dir), stall_after_s=0.3,
               poll_s=0.1).run()
    assert time.monotonic() - started < 10
    assert [e["RESEARCH_EVENT"] for e in events(log)] == ["stalled", "finished"]
    assert not (Path(os.environ["HOME"]) / ".local").exists()     # never registered: nothing written to HOME


@pytest.fixture
def memory_cgroup(tmp_path):
    """A memory cgroup limited to 64 MB (cgroup v1 or v2); its cgroup.procs path. Skipped where it cannot be made."""
    name = f"research-test-{tmp_path.name}-{os.getpid()}"
    for folder, limit in ((Path("/sys/fs/cgroup/memory") / name, "memory.limit_in_bytes"),
                          (Path("/sys/fs/cgroup") / name, "memory.max")):
        try:
            folder.mkdir()
        except OSError:
            continue
        try:
            (folder / limit).write_text(str(64 << 20))
        except OSError:
            folder.rmdir()
            continue
        yield folder / "cgroup.procs"
        folder.rmdir()
        return
    pytest.skip("cannot make a memory cgroup here (needs root, or a delegated cgroup v2 subtree)")


def test_the_oom_killers_sigkill_is_told_apart_and_restarted(run_dir, memory_cgroup, monkeypatch):
    monkeypatch.setenv("STAND_IN_CGROUP_PROCS", str(memory_cgroup))
    log = run_dir.parent / "events.jsonl"
    command = stand_in(run_dir, "oom,exit0")
    assert Supervisor(run_dir, command, "digits", notify_command=recorder(run_dir), backoff_s=(0.1,)).run() == 0
    restarted, finished = events(log)
    assert restarted["RESEARCH_MESSAGE"].startswith("killed by the OOM killer")
    assert restarted["RESEARCH_EXIT_STATUS"] == "137" and finished["RESEARCH_EVENT"] == "finished"


def test_a_failing_notify_command_is_told_without_its_text(run_dir, capsys):
    """The notify command may hold a webhook's token; what the supervisor prints goes to console.log (0644)."""
    assert Supervisor(run_dir, stand_in(run_dir, "exit0"), "digits", notify_command="echo refused; exit 3 # hook-T0KEN",
                      backoff_s=(0.1,)).run() == 0
    out = capsys.readouterr().out
    assert "the notify command failed for 'finished': exit status 3: refused" in out and "hook-T0KEN" not in out
    assert "--notify" not in supervise_command(run_dir, ["true"], "digits")
