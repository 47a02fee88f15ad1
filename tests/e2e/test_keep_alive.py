"""tools/launch.py --keep-alive as a user leaves it: the trainer kill -9'd twice, then a "reboot" (everything
killed at once, then the crontab's @reboot command run as cron runs it), on a private tmux server and a
temporary HOME with a stand-in crontab."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import needs_tmux, read_status, run_tool, statuses, tmux, wait_for

RECIPE = "recipes/smoke/lenet_digits_tiny.yaml"      # 4 epochs of 22 batches, status every 5
NOTIFY = 'echo "$RESEARCH_EVENT|$RESEARCH_EPOCH|$RESEARCH_MESSAGE|$RESEARCH_MLFLOW_URL" >> {events}'


def training(run_dir: Path, not_pid: int | None, epoch: int) -> bool:
    """A trainer other than `not_pid` is in the epoch after `epoch` (past its first report)."""
    info = read_status(run_dir)
    return (info.get("status") == "running" and info.get("pid") != not_pid and (info.get("epoch") or 0) >= epoch
            and bool(info.get("batch")))


def kill_9(run_dir: Path, after_epoch: int, previous: int | None) -> tuple[int, float]:
    wait_for(lambda: training(run_dir, previous, after_epoch), 120, f"training after epoch {after_epoch}", run_dir)
    pid = read_status(run_dir)["pid"]
    os.kill(pid, signal.SIGKILL)
    return pid, time.monotonic()


def power_cut(env: dict, run_dir: Path) -> None:
    """Nothing gets to run after the cut: supervisor and trainer frozen, then killed, then the tmux server."""
    pids = [json.loads((run_dir / "keep-alive.json").read_text())["supervisor"]["pid"], read_status(run_dir)["pid"]]
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            os.kill(pid, sig)
    tmux(env, "kill-server")


def boot_as_cron_would(home: Path) -> None:
    (line,) = [line for line in (home / "crontab.txt").read_text().splitlines() if line.startswith("@reboot ")]
    subprocess.run(["/bin/sh", "-c", line.removeprefix("@reboot ").replace("\\%", "%")], check=True, timeout=120,
                   env={"HOME": str(home), "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LOGNAME": "user"})


@needs_tmux
@pytest.mark.slow                       # four trainer start-ups
def test_supervised_run_survives_two_kill_9_and_a_reboot_and_says_so(tmp_path, tmux_env):
    from mlflow.tracking import MlflowClient

    run_dir, events, home = tmp_path / "runs" / "digits", tmp_path / "events.txt", Path(tmux_env["HOME"])
    proc = run_tool("launch.py", RECIPE, "--output", run_dir, "--keep-alive", "--notify", NOTIFY.format(events=events),
                    env=tmux_env, timeout=120, check=True)
    assert "restarted after a reboot by your crontab's @reboot line" in proc.stdout

    latencies, pid = [], None
    for after_epoch in (1, 2):                             # mid-epoch, with a new checkpoint since the last kill
        pid, killed = kill_9(run_dir, after_epoch, pid)
        wait_for(lambda: training(run_dir, pid, after_epoch), 120, "the restarted trainer", run_dir)
        latencies.append(time.monotonic() - killed)
    wait_for(lambda: training(run_dir, pid, 3), 120, "epoch 4", run_dir)
    power_cut(tmux_env, run_dir)
    assert tmux(tmux_env, "list-sessions") == ""
    boot_as_cron_would(home)
    wait_for(lambda: read_status(run_dir).get("status") == "finished", 180, "status.json: finished", run_dir)
    wait_for(lambda: "supervisor exited with status 0" in (run_dir / "console.log").read_text(), 60,
             "the supervisor to end", run_dir)
    print(f"kill -9 to training again: {', '.join(f'{s:.1f} s' for s in latencies)}")

    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    client = MlflowClient(tmux_env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("lenet_digits_tiny").experiment_id])
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "val/top1")) == [1, 2, 3, 4]
    assert run.data.tags["keep_alive.restarts"] == "3"
    assert run.data.tags["keep_alive.last_cause"] == "its supervisor and tmux session were gone (tools/launch.py --boot)"

    got = [line.split("|") for line in events.read_text().splitlines()]
    assert [event for event, *_ in got] == ["restarted", "restarted", "restarted", "finished"]
    assert [message for _, _, message, _ in got[:2]] == ["killed by SIGKILL: kill -9 or the OOM killer"] * 2
    assert got[-1][1] == "4" and all(f"/runs/{run_id}" in link for *_, link in got)
    shown = statuses(tmux_env, tmp_path / "runs")["digits"]
    assert (shown["state"], shown["restarts"]) == ("finished", 3)
    assert not (home / "crontab.txt").exists()         # none before the launch, none after the last supervised run
    assert "no supervised runs" in run_tool("launch.py", "--list", env=tmux_env, check=True).stdout
