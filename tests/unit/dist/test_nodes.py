"""The distributed launcher: hosts file, node plan and environment, the watch/stop logic."""
from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from research.dist.nodes import CONNECTED_LINE, Job, Node, launch, node_argv, node_env, plan_nodes, read_hosts
from research.errors import UserError

PY = sys.executable


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------- hosts file and plan

def test_hosts_file_lists_one_worker_per_line(tmp_path):
    hosts = write(tmp_path / "hosts", """\
        # two workers on this machine
        localhost

        localhost   # the second
        """)
    assert read_hosts(hosts) == ["localhost", "localhost"]


@pytest.mark.parametrize("text, words", [
    ("", "lists no hosts"),
    ("# only a comment\n", "lists no hosts"),
    ("localhost 2\n", "hosts:1"),
    ("localhost\n10.0.0.2\n", "mixes localhost"),
])
def test_bad_hosts_files_are_named(tmp_path, text, words):
    with pytest.raises(UserError, match=words):
        read_hosts(write(tmp_path / "hosts", text))


def test_missing_hosts_file_is_named(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        read_hosts(tmp_path / "nope")


def test_loopback_plan_pins_every_node_to_loopback():
    nodes = plan_nodes(["localhost", "localhost"], num_servers=1)
    assert [n.label for n in nodes] == ["scheduler", "server0", "worker0", "worker1"]
    envs = [node_env(nodes, i, 9300) for i in range(len(nodes))]
    assert [e["DMLC_ROLE"] for e in envs] == ["scheduler", "server", "worker", "worker"]
    for env in envs:
        assert env["DMLC_PS_ROOT_URI"] == env["DMLC_NODE_HOST"] == "127.0.0.1"
        assert env["DMLC_INTERFACE"] == "lo"
        assert (env["DMLC_PS_ROOT_PORT"], env["DMLC_NUM_SERVER"], env["DMLC_NUM_WORKER"]) == ("9300", "1", "2")
    # every other node listens on its own port just above the scheduler's: one range to open in a firewall
    assert [e.get("PORT") for e in envs] == [None, "9301", "9302", "9303"]
    assert all(argv[0] == PY and "ssh" not in argv for argv in (node_argv(n, envs[0], ["x"]) for n in nodes))


def test_remote_plan_uses_ssh_batch_mode_and_passes_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    nodes = plan_nodes(["10.0.0.1", "10.0.0.1", "me@10.0.0.2"])
    roles = [(n.role, n.host) for n in nodes]
    assert roles == [("scheduler", "10.0.0.1"), ("server", "10.0.0.1"), ("server", "me@10.0.0.2"),
                     ("worker", "10.0.0.1"), ("worker", "10.0.0.1"), ("worker", "me@10.0.0.2")]
    env = node_env(nodes, 5, 9091)
    assert env["DMLC_PS_ROOT_URI"] == "10.0.0.1" and env["DMLC_NODE_HOST"] == "10.0.0.2"
    assert "DMLC_INTERFACE" not in env
    argv = node_argv(nodes[5], env, ["python", "tools/train.py", "r.yaml"])
    assert argv[:4] == ["ssh", "-T", "-o", "BatchMode=yes"] and argv[-2] == "me@10.0.0.2"
    remote = argv[-1]
    assert remote.startswith(f"cd {os.getcwd()} && exec ")
    for expected in ("DMLC_ROLE=worker", "DMLC_PS_ROOT_URI=10.0.0.1", "MLFLOW_TRACKING_URI=http://tracker:5000",
                     "-- python tools/train.py r.yaml"):
        assert expected in remote
    assert "UNRELATED_SECRET" not in remote


def test_a_host_that_resolves_to_loopback_is_refused(monkeypatch):
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "127.0.1.1")
    with pytest.raises(UserError, match="loopback"):
        plan_nodes(["gpu-box-1", "gpu-box-2"])


def test_launch_refuses_an_empty_command():
    with pytest.raises(UserError, match="after --"):
        launch(["localhost"], [])


# ---------------------------------------------------------------- watching and stopping (no MXNet)

def fake_job(tmp_path: Path, worker_codes: list[str], timeout: float = 20.0, server_code: str = "") -> Job:
    """Scheduler, server and workers as small python programs behind real agents."""
    nodes = [Node("scheduler", 0, "localhost", "127.0.0.1"), Node("server", 0, "localhost", "127.0.0.1")]
    nodes += [Node("worker", i, "localhost", "127.0.0.1") for i in range(len(worker_codes))]
    forever = "import time\nwhile True: time.sleep(1)"
    codes = [f"print('{CONNECTED_LINE} the others', flush=True)\n{forever}", server_code or forever]
    codes += worker_codes
    argvs = []
    for i, (node, code) in enumerate(zip(nodes, codes)):
        script = write(tmp_path / f"{node.label}.py", code)
        argv = node_argv(Node("worker", 0, "localhost", "127.0.0.1"), {"PIDFILE": str(tmp_path / f"{i}.pid")},
                         [PY, "-c", f"import os; open(os.environ['PIDFILE'], 'w').write(str(os.getpid()))\n"
                                    f"exec(open({str(script)!r}).read())"], grace=2.0)
        argvs.append(argv)
    return Job(nodes, argvs, timeout=timeout, grace=2.0)


def pids(tmp_path: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted(tmp_path.glob("*.pid"))]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_dying_worker_ends_the_whole_job(tmp_path, capsys):
    job = fake_job(tmp_path, ["import time\nwhile True: time.sleep(1)",
                              "import time, sys\ntime.sleep(1)\nsys.exit(3)"])
    tic = time.monotonic()
    code = job.run()
    assert code == 3                                   # the worker's own status (3: NaN loss in tools/train.py)
    assert time.monotonic() - tic < 15
    assert "worker1 on localhost exited with status 3" in capsys.readouterr().err
    assert len(pids(tmp_path)) == 4 and not any(map(alive, pids(tmp_path)))


def test_a_server_exiting_early_is_a_failure(tmp_path, capsys):
    job = fake_job(tmp_path, ["import time\nwhile True: time.sleep(1)"], server_code="import time\ntime.sleep(1)")
    assert job.run() == 1
    assert "server0 on localhost exited (status 0) before the workers finished" in capsys.readouterr().err
    assert not any(map(alive, pids(tmp_path)))


def test_finished_workers_end_the_servers(tmp_path):
    job = fake_job(tmp_path, ["print('done')", "print('done')"])
    assert job.run() == 0
    assert not any(map(alive, pids(tmp_path)))


def test_a_worker_left_running_after_the_others_finished_is_ended(tmp_path, capsys):
    job = fake_job(tmp_path, ["print('done')", "import time\nwhile True: time.sleep(1)"], timeout=3)
    assert job.run() == 1
    assert "still running 3 s after the first worker finished" in capsys.readouterr().err
    assert not any(map(alive, pids(tmp_path)))


def test_signals_go_to_the_workers_and_their_status_comes_back(tmp_path, capsys):
    worker = """\
        import signal, sys, time
        def stop(signum, frame):
            print('worker got', signal.Signals(signum).name, flush=True)
            sys.exit(128 + signum)
        signal.signal(signal.SIGTERM, stop)
        print('distributed: worker rank 0 of 1 (test)', flush=True)
        while True: time.sleep(0.1)
        """
    job = fake_job(tmp_path, [textwrap.dedent(worker)])
    threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    assert job.run() == 128 + signal.SIGTERM
    out = capsys.readouterr()
    assert "[rank0] worker got SIGTERM" in out.out        # relayed by the agent, prefixed with the kvstore rank
    assert "run the same launch_dist command again" in out.err
    assert not any(map(alive, pids(tmp_path)))


def test_the_agent_ends_its_process_when_the_launcher_goes_away(tmp_path):
    import subprocess
    pidfile = tmp_path / "child.pid"
    argv = node_argv(Node("worker", 0, "localhost", "127.0.0.1"), {"PIDFILE": str(pidfile)},
                     [PY, "-c", "import os, time; open(os.environ['PIDFILE'], 'w').write(str(os.getpid())); "
                                "time.sleep(600)"], grace=2.0)
    agent = subprocess.Popen(argv, stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(pidfile.read_text())
        assert alive(child)
        agent.stdin.close()                              # what a SIGKILLed launcher or a dropped ssh looks like
        assert agent.wait(timeout=10) == 128 + signal.SIGTERM
        assert not alive(child)
    finally:
        agent.kill()
        agent.wait()


def test_remote_nodes_run_over_ssh_in_this_directory_with_the_environment(tmp_path, monkeypatch, capsys):
    """A stand-in ssh runs the remote command here, as sshd would after login."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write(bin_dir / "ssh", """\
        #!/bin/bash
        while [[ $1 == -* ]]; do [[ $1 == -o ]] && shift; shift; done
        echo "ssh to $1" >&2
        exec env -i HOME="$HOME" PATH=/usr/bin:/bin bash -c "$2"
        """).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    remote = Node("worker", 0, "alice@10.0.0.5", "10.0.0.5")
    show = ("import os, sys; print(os.getcwd(), os.environ['DMLC_ROLE'], os.environ['MLFLOW_TRACKING_URI'], "
            "sys.executable, flush=True)")
    nodes = [Node("scheduler", 0, "alice@10.0.0.5", "10.0.0.5"), remote]
    printed = tmp_path / "scheduler-printed"      # the worker ends the job: not before the scheduler's line is out
    argvs = [node_argv(remote, {"DMLC_ROLE": "scheduler"},
                       [PY, "-c", f"{show}; print('{CONNECTED_LINE}', flush=True); "
                                  f"open('{printed}', 'w').close(); import time; time.sleep(60)"]),
             node_argv(remote, {"DMLC_ROLE": "worker"},
                       ["python", "-c", f"import os, time\nwhile not os.path.exists('{printed}'): time.sleep(0.05)\n"
                                        f"{show}"])]
    assert Job(nodes, argvs, timeout=30, grace=2.0).run() == 0
    out = capsys.readouterr()
    assert f"[worker0] {os.getcwd()} worker sqlite:///x.db {PY}" in out.out     # `python`: the launcher's
    assert f"[scheduler] {os.getcwd()} scheduler sqlite:///x.db {PY}" in out.out
    assert "ssh to alice@10.0.0.5" in out.out
