"""Helpers for tests: run the real tools as a user would, against a temporary MLflow store.

Importable from any test module as `import helpers` (setup.cfg puts tests/ on the path).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CALLER_THREADS = os.environ.get("OMP_NUM_THREADS")    # read before conftest pins the test process's own


def pin_test_process_threads() -> None:
    """One OpenMP thread for MXNet inside pytest, whatever the caller exported.

    The in-process equivalence tests (2 contexts vs 1, 2 dist workers vs one process) compare
    float32 weights after dozens of SGD steps: with one thread they agree to 1e-7, with 2 threads the
    reduction order changes and they drift by up to 1.5e-3 here. Pinning keeps their 1e-5 tolerance,
    which a gradient divided by the wrong batch (a factor of 2 on every step) exceeds by orders of magnitude.
    MXNet reads the variable once, at import: this must run before anything imports mxnet.
    """
    if "mxnet" in sys.modules:
        raise RuntimeError("mxnet was imported before tests/conftest.py could pin OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"


def missing_gpu_message(gpu: int = 99) -> str:
    """What `--gpus 99` (an id no machine has) says with this machine's MXNet: the CPU build says so; a CUDA build
    without a GPU says why there is none (the driver); one with GPUs which ids exist. Imports mxnet."""
    import mxnet as mx

    from research.builds import gpu_problem
    if not mx.runtime.Features().is_enabled("CUDA"):
        return "CPU-only build"
    if mx.context.num_gpus() == 0:
        return gpu_problem(str(gpu)) or "no GPU is visible to MXNet"
    return f"GPU {gpu} does not exist"


def make_env(store: Path, **extra: str) -> dict[str, str]:
    """Environment for a tool subprocess: a private MLflow store, no terminal, unbuffered output."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}", PYTHONUNBUFFERED="1",
               MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("OMP_NUM_THREADS", None)      # the tools run with the caller's threading, not the test process's pin
    if CALLER_THREADS is not None:
        env["OMP_NUM_THREADS"] = CALLER_THREADS
    env.update(extra)
    return env


def run_tool(tool: str, *args, env: dict[str, str], timeout: float = 600,
             check: bool = False) -> subprocess.CompletedProcess:
    """python tools/<tool> args... from the repo root, output captured as text."""
    proc = subprocess.run([PYTHON, str(REPO / "tools" / tool), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def fill(disk: Path, leave: int) -> Path:
    """Take all the space of `disk` but `leave` bytes, as another process would; delete the file to free it."""
    ballast = disk / "ballast"
    with open(ballast, "wb") as f:
        f.write(b"\0" * max(shutil.disk_usage(disk).free - leave, 0))
    return ballast


class AfterBatches:
    """Wraps a training iterator; calls `action()` just before serving batch `n` (0-based), as a
    fault that strikes mid-run would (a disk error, a head killed by one bad step)."""

    def __init__(self, inner, n: int, action):
        self.inner, self.n, self.action, self.served = inner, n, action, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __iter__(self):
        for batch in self.inner:
            if self.served == self.n:
                self.action()
            self.served += 1
            yield batch


def change_setup(monkeypatch, change) -> None:
    """Make research.training.job.train call `change(setup)` on the Setup it builds (a fault
    injected into its data, its net), before it trains."""
    from research.training import job

    build = job.build_setup

    def build_and_change(*args, **kwargs):
        setup = build(*args, **kwargs)
        change(setup)
        return setup
    monkeypatch.setattr(job, "build_setup", build_and_change)


def patched_tool(tool: str, patch: str, args: list | None = None) -> str:
    """Python source that runs tools/<tool> with `patch` run first in its process (after the tool's own thread
    setup): Python that wraps a function of research/ to strike at the instant it chooses, counted in batches
    or epochs, not seconds. It may call `die()` (SIGKILL to itself) or `send(signal.SIGTERM)` (as a user's
    kill would, delivered before the next line runs). The tool gets `args`, or the script's own arguments."""
    argv = f"{[str(a) for a in args]!r}" if args is not None else "sys.argv[1:]"
    return "\n".join([
        "import os, runpy, signal, sys",
        f"sys.path.insert(0, {str(REPO)!r})",
        "from research.devices import set_cpu_threads; set_cpu_threads()   # as the tool does, before mxnet",
        "def die(): os.kill(os.getpid(), signal.SIGKILL)",
        "def send(sig): os.kill(os.getpid(), sig)",
        patch,
        f"sys.argv = [{str(REPO / 'tools' / tool)!r}] + {argv}",
        f"runpy.run_path({str(REPO / 'tools' / tool)!r}, run_name='__main__')"])


def run_tool_patched(tool: str, *args, env: dict[str, str], patch: str,
                     timeout: float = 600) -> subprocess.CompletedProcess:
    """python tools/<tool> args..., with `patch` run in its process first (patched_tool)."""
    return subprocess.run([PYTHON, "-c", patched_tool(tool, patch, list(args))], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_tool_killed_at(tool: str, *args, env: dict[str, str], patch: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """python tools/<tool> args..., killed with SIGKILL at the instant `patch` chooses: it wraps a function of
    research/ and calls `die()` inside it, so a test hits one window on purpose (between a checkpoint's rename
    and MLflow's write, inside a write) instead of by luck. The result's returncode is -9 when the patch fired."""
    return run_tool_patched(tool, *args, env=env, patch=patch, timeout=timeout)


# -- detached runs: a private tmux server, and a temporary HOME with a stand-in crontab ------------------
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (apt-get install tmux); tools/launch.py needs it")

FAKE_CRONTAB = """#!/bin/sh
# A stand-in for crontab(1) that keeps the user's table in $HOME/crontab.txt.
table="$HOME/crontab.txt"
case "$1" in
  -l) if [ -f "$table" ]; then cat "$table"; else echo "no crontab for $(id -un)" >&2; exit 1; fi ;;
  -r) rm -f "$table" ;;
  -) cat > "$table" ;;
  *) cat "$1" > "$table" ;;
esac
"""


def temporary_home(folder: Path) -> dict[str, str]:
    """Environment entries for a HOME at `folder` with a stand-in `crontab` first on PATH (its table is
    `folder`/crontab.txt), so that --keep-alive never touches the user's crontab, units or state."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "crontab").write_text(FAKE_CRONTAB)
    (bin_dir / "crontab").chmod(0o755)
    return {"HOME": str(folder), "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "RESEARCH_KEEP_ALIVE_BOOT": "cron"}


def stop_trainers(root: Path) -> None:
    """Trainers and their keep-alive supervisors outlive their tmux server for a moment (they checkpoint on
    SIGHUP): wait, then kill."""
    found = [(path, json.loads(path.read_text()).get("pid"), "train.py") for path in root.rglob("status.json")]
    found += [(path, (json.loads(path.read_text()).get("supervisor") or {}).get("pid"), "supervise.py")
              for path in root.rglob("keep-alive.json")]
    for _, pid, script in found:
        if not pid:
            continue
        try:
            process = psutil.Process(pid)
            if script in " ".join(process.cmdline()):
                process.wait(30)
        except psutil.TimeoutExpired:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def tmux(env: dict, *args: str) -> str:
    return subprocess.run(["tmux", "-L", env["RESEARCH_TMUX_SOCKET"], *args],
                          capture_output=True, text=True).stdout.strip()


def wait_for(condition, timeout: float, what: str, run_dir: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            log = run_dir / "console.log"
            tail = log.read_text()[-3000:] if log.exists() else "(no console.log)"
            pytest.fail(f"timed out after {timeout} s waiting for {what}; console.log ends:\n{tail}")
        time.sleep(0.2)


def read_status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def statuses(env: dict, root: Path) -> dict[str, dict]:
    proc = run_tool("status.py", "--root", root, "--format", "json", env=env, check=True)
    return {run["name"]: run for run in json.loads(proc.stdout)}


# -- checkpoints as an attacker would alter them ---------------------------------------------------------
LEGACY_FIXTURE = REPO / "tests/fixtures/run_before_layout/checkpoints/step-0000000026.ckpt"   # RSRCHCK1: a pickle


class RunsCommand:
    """Unpickled, runs `touch MARKER`: what a payload in a pickled checkpoint does when it is opened."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def checkpoint_carrying_code(path: Path, marker: Path, layer: str) -> Path:
    """Write at `path` an earlier-format checkpoint (the fixture's) whose pickle runs `touch marker` when loaded:
    `layer` "outer" in the checkpoint's own pickle, "optimizer" in MXNet's pickled optimizer state inside it.
    Its length and sha256 are recomputed, as anyone can."""
    import hashlib
    import pickle
    import struct

    blob = LEGACY_FIXTURE.read_bytes()
    content = pickle.loads(blob[48:])                  # the fixture is ours: trusted here, and only here
    if layer == "outer":
        content["note"] = RunsCommand(marker)
    else:
        states, optimizer = pickle.loads(content["trainer"])
        content["trainer"] = pickle.dumps((states, RunsCommand(marker)))
    payload = pickle.dumps(content)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob[:8] + struct.pack("<Q", len(payload)) + hashlib.sha256(payload).digest() + payload)
    return path
