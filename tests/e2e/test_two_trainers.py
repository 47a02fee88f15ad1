"""Two tools/train.py on one run directory: the second is refused, naming the first; kill -9 frees it."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import pytest
from helpers import PYTHON, REPO, make_env, run_tool

SMOKE = "recipes/smoke/lenet_digits_tiny.yaml"


@pytest.mark.slow
def test_second_trainer_on_the_same_folder_exits_2_naming_the_first(tmp_path):
    env = make_env(tmp_path)
    run_dir = tmp_path / "run"
    first = subprocess.Popen([PYTHON, "tools/train.py", SMOKE, "--output", str(run_dir), "--set", "train.epochs=100"],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "status.json").is_file():        # written once the first one holds the folder
            assert first.poll() is None and time.monotonic() < deadline, "the first trainer did not start"
            time.sleep(0.1)
        second = run_tool("train.py", SMOKE, "--output", run_dir, "--set", "train.epochs=100", env=env, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr, second.stderr
        assert (f"{run_dir} is in use by another run (pid {first.pid} on {socket.gethostname()}, since "
                in second.stderr)
        assert first.poll() is None                         # the first one trains on
        first.send_signal(signal.SIGKILL)                   # the OS drops its lock: nothing stale is left
        first.wait(30)
        third = run_tool("train.py", SMOKE, "--output", run_dir, env=env, timeout=300)   # the same run, 4 epochs
        assert third.returncode == 0, third.stdout + third.stderr
        assert json.loads((run_dir / ".lock").read_text())["pid"] != first.pid
    finally:
        first.kill()
        first.wait()


def test_output_that_is_a_file_or_read_only_exits_2(tmp_path):
    env = make_env(tmp_path)
    (tmp_path / "afile").write_text("")
    proc = run_tool("train.py", SMOKE, "--output", tmp_path / "afile", env=env, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{tmp_path / 'afile'} is a file, not a folder" in proc.stderr
    proc = run_tool("train.py", SMOKE, "--output", "/proc/run", env=env, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "could not write /proc/run" in proc.stderr
