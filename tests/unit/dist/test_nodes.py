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

from research.dist.nodes import (CONNECTED_LINE, Job, Node, agent_env, launch, node_argv, node_env, plan_nodes,
                                read_hosts)
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
    ("10.0.0.1\n-oProxyCommand=touch${IFS}/tmp/x\n", r"hosts:2: '-oProxyCommand=.*cannot start with '-'"),
    ("-oProxyCommand=x@10.0.0.2\n", "cannot start with '-'"), ("alice@-oProxyCommand=x\n", "cannot start with '-'"),
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
    assert all(argv[0] == PY and "ssh" not in argv for argv in (node_argv(n, ["x"]) for n in nodes))


def test_remote_plan_uses_ssh_batch_mode_and_passes_the_environment_off_the_command_line(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    nodes = plan_nodes(["10.0.0.1", "10.0.0.1", "me@10.0.0.2"])
    roles = [(n.role, n.host) for n in nodes]
    assert roles == [("scheduler", "10.0.0.1"), ("server", "10.0.0.1"), ("server", "me@10.0.0.2"),
                     ("worker", "10.0.0.1"), ("worker", "10.0.0.1"), ("worker", "me@10.0.0.2")]
    env = node_env(nodes, 5, 9091)
    assert env["DMLC_PS_ROOT_URI"] == "10.0.0.1" and env["DMLC_NODE_HOST"] == "10.0.0.2"
    assert "DMLC_INTERFACE" not in env
    argv = node_argv(nodes[5], ["python", "tools/train.py", "r.yaml"])
    assert argv[:4] == ["ssh", "-T", "-o", "BatchMode=yes"] and argv[-3:-1] == ["--", "me@10.0.0.2"]
    remote = argv[-1]
    assert remote.startswith(f"cd {os.getcwd()} && exec ") and remote.endswith("-- python tools/train.py r.yaml")
    assert "s3cret-pw" not in " ".join(argv) and "tracker" not in " ".join(argv)
    sent = agent_env(nodes[5], env)
    assert (sent["DMLC_ROLE"], sent["DMLC_PS_ROOT_URI"], sent["MLFLOW_TRACKING_URI"]) == ("worker", "10.0.0.1",
                                                                                          "http://tracker:5000")
    assert sent["MLFLOW_TRACKING_PASSWORD"] == "s3cret-pw" and "UNRELATED_SECRET" not in sent
    assert "MLFLOW_TRACKING_PASSWORD" not in agent_env(plan_nodes(["localhost"])[2], {})   # it has it already


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
    argvs, envs = [], []
    for i, (node, code) in enumerate(zip(nodes, codes)):
        script = write(tmp_path / f"{node.label}.py", code)
        argvs.append(node_argv(Node("worker", 0, "localhost", "127.0.0.1"),
                               [PY, "-c", f"import os; open(os.environ['PIDFILE'], 'w').write(str(os.getpid()))\n"
                                          f"exec(open({str(script)!r}).read())"], grace=2.0))
        envs.append({"PIDFILE": str(tmp_path / f"{i}.pid")})
    return Job(nodes, argvs, envs, timeout=timeout, grace=2.0)


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
    argv = node_argv(Node("worker", 0, "localhost", "127.0.0.1"),
                     [PY, "-c", "import os, time; open(os.environ['PIDFILE'], 'w').write(str(os.getpid())); "
                                "time.sleep(600)"], grace=2.0)
    agent = subprocess.Popen(argv, stdin=subprocess.PIPE)
    agent.stdin.write(f'{{"PIDFILE": "{pidfile}"}}\n'.encode())
    agent.stdin.flush()
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


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch) -> None:
    """A stand-in ssh first on PATH: it runs the remote command here in a clean environment, as sshd would
    after login; options end at '--' (or the first word that is not one)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write(bin_dir / "ssh", """\
        #!/bin/bash
        while [[ $1 == -* ]]; do [[ $1 == -- ]] && { shift; break; }; [[ $1 == -o ]] && shift; shift; done
        echo "ssh to $1" >&2
        exec env -i HOME="$HOME" PATH=/usr/bin:/bin bash -c "$2"
        """).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_remote_nodes_run_over_ssh_in_this_directory_with_the_environment(tmp_path, monkeypatch, capsys, fake_ssh):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    remote = Node("worker", 0, "alice@10.0.0.5", "10.0.0.5")
    show = ("import os, sys; print(os.getcwd(), os.environ['DMLC_ROLE'], os.environ['MLFLOW_TRACKING_URI'], "
            "sys.executable, flush=True)")
    nodes = [Node("scheduler", 0, "alice@10.0.0.5", "10.0.0.5"), remote]
    printed = tmp_path / "scheduler-printed"      # the worker ends the job: not before the scheduler's line is out
    argvs = [node_argv(remote, [PY, "-c", f"{show}; print('{CONNECTED_LINE}', flush=True); "
                                          f"open('{printed}', 'w').close(); import time; time.sleep(60)"]),
             node_argv(remote, ["python", "-c", f"import os, time\nwhile not os.path.exists('{printed}'): "
                                                f"time.sleep(0.05)\n{show}"])]
    envs = [agent_env(remote, {"DMLC_ROLE": "scheduler"}), agent_env(remote, {"DMLC_ROLE": "worker"})]
    assert Job(nodes, argvs, envs, timeout=30, grace=2.0).run() == 0
    out = capsys.readouterr()
    assert f"[worker0] {os.getcwd()} worker sqlite:///x.db {PY}" in out.out     # `python`: the launcher's
    assert f"[scheduler] {os.getcwd()} scheduler sqlite:///x.db {PY}" in out.out
    assert "ssh to alice@10.0.0.5" in out.out


def test_a_secret_in_the_environment_is_on_no_command_line(tmp_path, monkeypatch, capsys, fake_ssh):
    """As another user of either machine would look for it: in every process's /proc/PID/cmdline (what ps
    shows), while the job runs; the worker over ssh still gets it in its environment."""
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-d1st-pw")
    remote = Node("worker", 0, "alice@10.0.0.5", "10.0.0.5")
    nodes = [Node("scheduler", 0, "alice@10.0.0.5", "10.0.0.5"), remote]
    look = ("import os\nsecret = os.environ['MLFLOW_TRACKING_PASSWORD'].encode()\nseen = []\n"
            "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try: seen += [pid] if secret in open(f'/proc/{pid}/cmdline', 'rb').read() else []\n"
            "    except OSError: pass\n"
            "print('secret on', len(seen), 'command lines', flush=True)")
    argvs = [node_argv(remote, [PY, "-c", f"print('{CONNECTED_LINE}', flush=True); import time; time.sleep(60)"]),
             node_argv(remote, ["python", "-c", look])]
    envs = [agent_env(remote, {"DMLC_ROLE": "scheduler"}), agent_env(remote, {"DMLC_ROLE": "worker"})]
    assert Job(nodes, argvs, envs, timeout=30, grace=2.0).run() == 0
    assert "[worker0] secret on 0 command lines" in capsys.readouterr().out
