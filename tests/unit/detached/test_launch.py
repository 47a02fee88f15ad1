"""research.detached.launch without tmux: session names, and the pane script's log, exit status and signals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from research.detached.launch import Launch, pane_script, passed_env, private_script, session_name
from research.errors import UserError


def test_session_names_are_tmux_safe():
    assert session_name("squeezenet1.0_imagenet") == "squeezenet1_0_imagenet"
    assert session_name("a:b c") == "a_b_c"
    assert session_name("lenet-digits") == "lenet-digits"


def run_script(tmp_path: Path, code: str) -> subprocess.Popen:
    script = pane_script([sys.executable, "-c", code], tmp_path, tmp_path, {"MLFLOW_TRACKING_URI": "sqlite:///x.db"})
    return subprocess.Popen(["bash", "-c", script], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_pane_script_logs_output_and_ends_with_the_trainers_status(tmp_path):
    code = "import os, sys; print(os.environ['MLFLOW_TRACKING_URI']); print('oops', file=sys.stderr); sys.exit(3)"
    assert run_script(tmp_path, code).wait(30) == 3
    lines = (tmp_path / "console.log").read_text().splitlines()
    assert lines[:2] == ["sqlite:///x.db", "oops"] and lines[-1].endswith("exited with status 3")


def test_log_keeps_the_trainers_last_words_after_sighup(tmp_path):
    # tmux dying hangs up the whole pane: tee must survive to log what the trainer says while it stops.
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGHUP, lambda *a: (time.sleep(0.5), print('checkpoint written'), sys.exit(129)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n")
    proc = run_script(tmp_path, code)
    log = tmp_path / "console.log"
    assert wait_for_text(log, "ready")
    os.killpg(proc.pid, signal.SIGHUP)          # what the kernel sends the pane's process group
    proc.wait(30)                               # bash dies at once; the trainer and tee carry on
    assert wait_for_text(log, "checkpoint written"), log.read_text()


def wait_for_text(path: Path, text: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return True
        time.sleep(0.1)
    return False


def test_passed_env_and_instructions_name_the_private_server(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///t.db")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    env = passed_env()
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:///t.db" and "UNRELATED_SECRET" not in env
    text = Launch("lenet_digits", tmp_path / "run", ["python"], socket="sock").instructions("python tools/launch.py r")
    assert "tmux -L sock attach -t lenet_digits" in text and "tmux -L sock send-keys -t lenet_digits C-c" in text
    assert f"tail -f {tmp_path / 'run' / 'console.log'}" in text and f"--root {tmp_path}" in text


def test_environment_names_with_shell_syntax_are_refused_and_left_out(monkeypatch, tmp_path):
    """A name is written unquoted into the script's export line: `export MLFLOW_X;touch pwned;=1` would run it."""
    monkeypatch.setenv(f"MLFLOW_X;touch {tmp_path}/pwned;", "1")
    assert not [key for key in passed_env() if ";" in key]
    with pytest.raises(UserError, match=r"environment variable 'A;touch x;' is not a shell variable name.*unset it"):
        pane_script(["true"], tmp_path, tmp_path, {"A;touch x;": "1"})


def test_values_with_newlines_and_quotes_reach_the_trainer_as_they_are(tmp_path):
    value = f"line one\nline two'; touch {tmp_path}/pwned; echo '$HOME `id`"
    script = pane_script([sys.executable, "-c", "import os; print(repr(os.environ['MLFLOW_ODD']))"], tmp_path,
                         tmp_path, {"MLFLOW_ODD": value})
    assert subprocess.run(["bash", str(private_script(script))], capture_output=True).returncode == 0
    assert (tmp_path / "console.log").read_text().splitlines()[0] == repr(value)
    assert not (tmp_path / "pwned").exists()


def test_the_pane_script_is_a_private_file_that_deletes_itself(tmp_path):
    """What the pane runs is `bash FILE`: the exported secrets are in a file only the user can read, for the
    instant before bash starts, and on no command line."""
    path = private_script("echo ran")
    assert oct(path.stat().st_mode & 0o777) == "0o700" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert subprocess.run(["bash", str(path)], capture_output=True, text=True).stdout == "ran\n"
    assert not path.parent.exists()
