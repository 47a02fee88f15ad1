"""Training on several machines with MXNet's parameter-server kvstore: the launcher and the node agents.

Used by tools/launch_dist.py. It never imports mxnet: with DMLC_ROLE set, importing mxnet turns a process
into a ps-lite node. The workers' half of a job (the kvstore, rank 0's position and weights, the servers'
lr schedule) is research/dist/workers.py.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..errors import STOP_SIGNALS, ExitCode, UserError, shell_status, signal_exit_code, signal_of
from ..paths import REPO

DEFAULT_PORT = 9091
GRACE_S = 10.0                  # SIGTERM, then SIGKILL after this long
POLL_S = 0.1
RANK_LINE = re.compile(r"distributed: worker rank (\d+) of (\d+)")     # printed by train.kvstore.create_kvstore
CONNECTED_LINE = "the scheduler is connected to"                       # ps-lite, PS_VERBOSE=1
PASSED_ENV = ("DMLC_", "PS_", "MXNET_", "OMP_", "MLFLOW_", "CUDA_VISIBLE_DEVICES", "PYTHONPATH")
_BOOT = f"import sys; sys.path.insert(0, {str(REPO)!r}); "
# DMLC_ROLE=server|scheduler: `import mxnet` runs the ps-lite node until the job ends, then exits.
# research.dist.workers and the schedule it runs (training.schedules.lr_at) come first so that the servers can
# unpickle ScheduleLR: better an ImportError here than one inside the servers' optimizer callback.
NODE_CODE = _BOOT + "import research.dist.workers, research.training.schedules; import mxnet"
AGENT_CODE = _BOOT + "from research.dist.nodes import agent_main; sys.exit(agent_main(sys.argv[1:]))"


# ---------------------------------------------------------------- launcher

@dataclass(frozen=True)
class Node:
    """One process of the job."""
    role: str          # scheduler | server | worker
    index: int         # within its role (a worker's kvstore rank is assigned later by the scheduler)
    host: str          # hosts-file entry, [user@]name; a loopback host runs here without ssh
    address: str       # IP the other nodes reach it at (DMLC_NODE_HOST)

    @property
    def label(self) -> str:
        return self.role if self.role == "scheduler" else f"{self.role}{self.index}"

    @property
    def local(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    name = host.rsplit("@", 1)[-1]
    return name in ("localhost", "::1") or name.startswith("127.")


def read_hosts(path: str | Path) -> list[str]:
    """One host per worker ('localhost' twice = 2 workers on this machine); '#' comments and blanks skipped.

    Raises:
        UserError: unreadable or empty file, two words on a line, loopback mixed with other hosts.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise UserError(f"--hosts {path}: cannot read it ({err.strerror or err}). Write one host per worker, "
                        f"e.g. 'localhost' on two lines for 2 workers on this machine.") from None
    hosts = []
    for number, line in enumerate(lines, 1):
        entry = line.split("#", 1)[0].strip()
        if len(entry.split()) > 1:
            raise UserError(f"{path}:{number}: '{entry}': write one host per line (repeat a host to run "
                            f"several workers on it)")
        if any(part.startswith("-") for part in entry.split("@")):      # ssh would read it as an option
            raise UserError(f"{path}:{number}: '{entry}': a host or user name cannot start with '-'")
        if entry:
            hosts.append(entry)
    if not hosts:
        raise UserError(f"{path} lists no hosts: write one line per worker, e.g. 'localhost' twice.")
    if any(map(is_loopback, hosts)) and not all(map(is_loopback, hosts)):
        raise UserError(f"{path} mixes localhost with other hosts; the other machines cannot reach a loopback "
                        f"address: write this machine's LAN address instead of localhost.")
    return hosts


def resolve(host: str) -> str:
    """The IP address the other nodes reach `host` at."""
    if is_loopback(host):
        return "127.0.0.1"
    name = host.rsplit("@", 1)[-1]
    try:
        address = socket.gethostbyname(name)
    except OSError:
        raise UserError(f"host '{name}' in the hosts file does not resolve here: write its IP address") from None
    if address.startswith("127."):
        raise UserError(f"host '{name}' resolves to {address} (loopback) here, which the other machines cannot "
                        f"reach: write its LAN IP address in the hosts file")
    return address


def plan_nodes(hosts: list[str], num_servers: int | None = None) -> list[Node]:
    """Scheduler on the first host, servers round-robin over the distinct hosts, one worker per line."""
    distinct = list(dict.fromkeys(hosts))
    num_servers = len(distinct) if num_servers is None else num_servers
    if num_servers < 1:
        raise UserError(f"--servers {num_servers}: a distributed kvstore needs at least one server")
    address = {host: resolve(host) for host in distinct}
    nodes = [Node("scheduler", 0, hosts[0], address[hosts[0]])]
    nodes += [Node("server", i, distinct[i % len(distinct)], address[distinct[i % len(distinct)]])
              for i in range(num_servers)]
    nodes += [Node("worker", i, host, address[host]) for i, host in enumerate(hosts)]
    return nodes


def node_env(nodes: list[Node], index: int, port: int) -> dict[str, str]:
    """DMLC_* variables for nodes[index]: ps-lite reads them when mxnet is imported or a dist kvstore made."""
    node, scheduler = nodes[index], nodes[0]
    env = {"DMLC_ROLE": node.role, "DMLC_PS_ROOT_URI": scheduler.address, "DMLC_PS_ROOT_PORT": str(port),
           "DMLC_NUM_SERVER": str(sum(n.role == "server" for n in nodes)),
           "DMLC_NUM_WORKER": str(sum(n.role == "worker" for n in nodes)),
           "DMLC_NODE_HOST": node.address,     # else ps-lite binds whatever interface it guesses
           "PYTHONUNBUFFERED": "1"}
    if node.role == "scheduler":
        env["PS_VERBOSE"] = "1"                # its "the scheduler is connected to ..." line tells us startup is done
    else:
        env["PORT"] = str(port + index)        # ps-lite's listening port (else a random free one): one range to open
    if node.local:
        env["DMLC_INTERFACE"] = "lo"
    return env


def node_argv(node: Node, command: list[str], grace: float = GRACE_S) -> list[str]:
    """The agent that runs this node's process: here, or on its host over ssh in the same working directory.
    Its environment goes to it on stdin (`agent_env`), on no command line: ps shows those to every user."""
    target = command if node.role == "worker" else [sys.executable, "-c", NODE_CODE]
    agent = [sys.executable, "-c", AGENT_CODE, "--grace", str(grace), "--", *target]
    if node.local:
        return agent
    remote = f"cd {shlex.quote(os.getcwd())} && exec {shlex.join(agent)}"
    return ["ssh", "-T", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3",
            "--", node.host, remote]      # '--': the host is never read as an option


def agent_env(node: Node, env: dict[str, str]) -> dict[str, str]:
    """What the agent adds to its environment: `env`, and for a node over ssh, which starts a clean
    environment, the variables that matter from this one (PASSED_ENV)."""
    passed = {} if node.local else {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV)}
    return {**passed, **env}


class Job:
    """The processes of one job, each behind an agent: output relayed with a prefix, watched until all end."""

    def __init__(self, nodes: list[Node], argvs: list[list[str]], envs: list[dict[str, str]], timeout: float,
                 grace: float = GRACE_S, root: str = "", out: TextIO | None = None):
        self.nodes, self.argvs, self.envs, self.timeout, self.grace = nodes, argvs, envs, timeout, grace
        self.root = root or nodes[0].address     # the scheduler's address:port, for messages
        self.out = out or sys.stdout
        self.procs: list[subprocess.Popen] = []
        self.ranks: dict[int, int] = {}          # node index -> kvstore rank, from the workers' output
        self.connected = False                   # the scheduler saw every node
        self.stop_signal: int | None = None
        self.finish_by: float | None = None      # deadline once a worker finished or a stop signal came
        self._signals: list[int] = []
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []
        self.workers = [i for i, node in enumerate(nodes) if node.role == "worker"]

    def say(self, message: str) -> None:
        self._emit(sys.stderr, f"launch_dist: {message}")

    def _emit(self, stream: TextIO, line: str) -> None:
        """Print, ignoring a terminal that is gone (SIGHUP) or a closed pipe: the job must still stop cleanly."""
        with self._lock:
            try:
                print(line, file=stream, flush=True)
            except OSError:
                pass

    def describe(self, index: int) -> str:
        node = self.nodes[index]
        rank = f" (rank {self.ranks[index]})" if index in self.ranks else ""
        return f"{node.label}{rank} on {node.host}"

    def run(self) -> int:
        """Start every process and watch them; returns the launcher's exit status."""
        previous = {sig: signal.signal(sig, lambda signum, frame: self._signals.append(signum))
                    for sig in STOP_SIGNALS}
        try:
            self._start()
            return self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._stop_all()

    def _start(self) -> None:
        for index, argv in enumerate(self.argvs):
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)   # Ctrl-C in the terminal reaches the launcher only
            self.procs.append(proc)
            self._write(index, json.dumps(self.envs[index]))     # the agent's first line: its environment
            reader = threading.Thread(target=self._relay, args=(index,), daemon=True)
            reader.start()
            self._readers.append(reader)

    def _relay(self, index: int) -> None:
        node = self.nodes[index]
        for raw in iter(self.procs[index].stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if node.role == "scheduler" and "Barrier count" in line:
                continue                              # PS_VERBOSE noise, one line per kvstore barrier
            prefix = f"rank{self.ranks[index]}" if index in self.ranks else node.label
            self._emit(self.out, f"[{prefix}] {line}")
            match = RANK_LINE.search(line)
            if match and node.role == "worker":
                self.ranks[index] = int(match.group(1))
                if self.ranks[index] == 0:
                    self.say(f"rank 0 is {node.label} on {node.host}: it writes the logs, checkpoints and MLflow run")
            if node.role == "scheduler" and CONNECTED_LINE in line:
                self.connected = True

    def _watch(self) -> int:
        started, self.finish_by, self.stop_signal = time.monotonic(), None, None
        while True:
            time.sleep(POLL_S)
            while self._signals:
                if self.stop_signal is not None:
                    self.say("second signal: ending every process now")
                    return signal_exit_code(self.stop_signal)
                self._pass_on(self._signals.pop(0))
            status = self._verdict([proc.poll() for proc in self.procs])
            if status is not None:
                return status
            if not self.connected and time.monotonic() - started > self.timeout:
                self.say(f"the nodes did not all connect to the scheduler at {self.root} within {self.timeout:.0f} "
                         f"s: check the hosts file addresses and the open ports (docs/distributed.md)")
                return 1

    def _pass_on(self, signum: int) -> None:
        """A stop signal goes to every worker: rank 0 checkpoints and exits, the others wait (FollowerStop)."""
        self.stop_signal, self.finish_by = signum, time.monotonic() + self.timeout
        name = signal.Signals(signum).name
        self.say(f"{name}: passed on to the workers; rank 0 finishes its batch, writes a checkpoint and exits, "
                 f"then the others are ended (signal again to end everything at once)")
        for i in self.workers:
            self._send(i, name.removeprefix("SIG"))

    def _verdict(self, codes: list[int | None]) -> int | None:
        """The launcher's exit status once the job is over, else None."""
        stopped = None if self.stop_signal is None else signal_exit_code(self.stop_signal)
        if all(codes[i] == 0 for i in self.workers):
            return stopped or 0
        dead = next((i for i, code in enumerate(codes)
                     if code is not None and (code != 0 or self.nodes[i].role != "worker")), None)
        if dead is not None and stopped:           # rank 0 after its checkpoint, normally
            self.say(f"stopped by {signal.Signals(self.stop_signal).name}. To resume from rank 0's checkpoint, run "
                     f"the same launch_dist command again.")
            return stopped
        if dead is not None:
            code, node = codes[dead], self.nodes[dead]
            self.say(f"{self.describe(dead)} {_exit_words(code, node)}: ending the other processes "
                     f"(MXNet's would wait for it forever)")
            return code if node.role == "worker" and 0 < code < ExitCode.SIGNAL else ExitCode.FAILED
        if self.finish_by is None and any(codes[i] == 0 for i in self.workers):
            self.finish_by = time.monotonic() + self.timeout
        if self.finish_by is not None and time.monotonic() > self.finish_by:
            running = ", ".join(self.describe(i) for i in self.workers if codes[i] is None)
            self.say(f"{running} still running {self.timeout:.0f} s after "
                     f"{'the stop signal' if stopped else 'the first worker finished'}: ending them")
            return stopped or 1
        return None

    def _send(self, index: int, name: str) -> None:
        """Ask node `index`'s agent to signal its process group (TERM, INT, HUP, KILL)."""
        self._write(index, name)

    def _write(self, index: int, line: str) -> None:
        try:
            self.procs[index].stdin.write(f"{line}\n".encode())
            self.procs[index].stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def _stop_all(self) -> None:
        """SIGTERM to everything still running, SIGKILL after the grace period; bounded in time."""
        alive = [i for i, proc in enumerate(self.procs) if proc.poll() is None]
        for name, wait in (("TERM", self.grace), ("KILL", 3.0)):
            for i in alive:
                self._send(i, name)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(self.procs[i].poll() is None for i in alive):
                time.sleep(POLL_S)
            alive = [i for i in alive if self.procs[i].poll() is None]
        for proc in self.procs:
            if proc.stdin:
                try:
                    proc.stdin.close()           # the agent ends its process on EOF, also over a live ssh
                except OSError:
                    pass
            if proc.poll() is None:
                proc.kill()                      # an agent or ssh client that did not exit
            proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)


def _exit_words(code: int, node: Node) -> str:
    if code == 0:
        return "exited (status 0) before the workers finished"
    if code == 255 and not node.local:
        return (f"exited with status 255: ssh could not connect or lost the connection "
                f"(does `ssh -o BatchMode=yes {node.host} true` work?)")
    if signal_of(code):
        return f"was killed by {signal.Signals(signal_of(code)).name} (status {code})"
    return f"exited with status {code}"


def launch(hosts: list[str], command: list[str], num_servers: int | None = None, port: int = DEFAULT_PORT,
           timeout: float = 300.0, grace: float = GRACE_S) -> int:
    """Run `command` as every worker of a job on `hosts`; returns 0 when all workers succeed.

    Raises:
        UserError: no command, bad port, unresolvable hosts, scheduler port taken on this machine.
    """
    if not command:
        raise UserError("give the worker command after --, e.g. -- python tools/train.py recipes/smoke/"
                        "lenet_digits_dist.yaml")
    if not 1024 <= port <= 65535 - len(hosts) - (num_servers or len(hosts)) - 1:
        raise UserError(f"--port {port}: choose a port between 1024 and 65000")
    nodes = plan_nodes(hosts, num_servers)
    if nodes[0].local:
        _check_port_free(port)
    argvs = [node_argv(node, command, grace) for node in nodes]
    envs = [agent_env(node, node_env(nodes, i, port)) for i, node in enumerate(nodes)]
    servers = sum(node.role == "server" for node in nodes)
    print(f"launch_dist: scheduler {nodes[0].address}:{port}, {servers} server(s), {len(hosts)} worker(s) on "
          f"{', '.join(dict.fromkeys(hosts))}", file=sys.stderr, flush=True)
    return Job(nodes, argvs, envs, timeout, grace, root=f"{nodes[0].address}:{port}").run()


def _check_port_free(port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as zmq binds: TIME_WAIT is no conflict
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise UserError(f"port {port} is in use on this machine (another distributed job?): "
                            f"pass another --port") from None


# ---------------------------------------------------------------- node agent

def agent_main(argv: list[str]) -> int:
    """Run one node's process where the launcher put it; returns its exit status (128+N if killed by signal N).

    The first line on stdin is the variables to add to the environment, as a JSON object (they may hold
    credentials, so they are on no command line). Then relays the signal names the launcher writes on stdin
    (TERM, INT, HUP, KILL) to the process group, and ends the group when stdin closes: the launcher or the
    ssh connection is gone, and an MXNet process left alone would wait for its peers forever.
    """
    parser = argparse.ArgumentParser(prog="research.dist.nodes agent")
    parser.add_argument("--grace", type=float, default=GRACE_S)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        added = json.loads(sys.stdin.readline())
    except ValueError:                       # stdin closed before the launcher said anything: it is gone
        return 1
    env = dict(os.environ)
    # `python` in the command means the launcher's interpreter (its venv), also on the other machines
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({str(key): str(value) for key, value in added.items()})
    child = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True)

    def end(signum: int = signal.SIGTERM, frame=None) -> None:
        _signal_group(child.pid, signal.SIGTERM)
        timer = threading.Timer(args.grace, _signal_group, (child.pid, signal.SIGKILL))
        timer.daemon = True
        timer.start()

    def listen() -> None:
        for line in sys.stdin:
            name = line.strip().upper()
            if name in ("TERM", "INT", "HUP", "KILL"):
                _signal_group(child.pid, signal.Signals[f"SIG{name}"])
        end()

    for sig in STOP_SIGNALS:
        signal.signal(sig, end)
    threading.Thread(target=listen, daemon=True).start()
    code = child.wait()
    _signal_group(child.pid, signal.SIGKILL)        # whatever it left behind in its group
    return shell_status(code)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
