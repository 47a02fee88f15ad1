"""tools/doctor.py: can this machine run the reference recipe on its GPUs? Every fact the answer rests on, read
before a multi-day run rather than met three days in, and the one next step when the answer is no."""
from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from .gpu import cuda_libs
from .gpu.elf import ElfError
from .gpu.installed import InstalledMxnet, installed_mxnet
from .gpu.machine import Machine, probe
from .gpu.verdict import Library, Verdict, judge
from .paths import RUNS
from .tracking.store import tracking_uri

MIN_FREE_GIB = 1.0       # checkpoints of SqueezeNet are 10 MB; a full disk stops a run at its last one (exit 4)
CUDA_PREFIXES = ("libcu", "libnv", "libnccl")


@dataclass
class Report:
    machine: Machine
    mxnet: InstalledMxnet | None
    libraries: list[Library]
    verdict: Verdict
    lines: list[tuple[str, str]] = field(default_factory=list)     # (what, finding) in the order printed
    other_problems: list[tuple[str, str]] = field(default_factory=list)   # (problem, fix) beside the GPU path

    @property
    def ready(self) -> bool:
        return self.verdict.ready and not self.other_problems


def examine(run_dir: Path = RUNS, try_gpus: bool = True) -> Report:
    """Gather the facts, judge them; import mxnet (and run the convolution check) only where it can work."""
    preloaded = cuda_libs.preload()             # done at `import research` already: the same handles again
    machine = probe()
    lines = [("NVIDIA driver", f"{machine.driver}, runs CUDA up to {machine.cuda[0]}.{machine.cuda[1]}" if machine.driver
              else f"none ({machine.problem or 'NVML did not load'})")]
    try:
        mxnet = installed_mxnet()
    except (OSError, ElfError) as err:
        mxnet, lines = None, lines + [("MXNet", f"unreadable libmxnet.so: {err}")]
    libraries = _libraries(mxnet, preloaded)
    if mxnet is not None:
        lines.append(("MXNet", mxnet.describe()))
        lines.append(("GPU code in it", mxnet.kernels.describe() if mxnet.kernels else "none"))
    elif not lines[-1][0] == "MXNet":
        lines.append(("MXNet", "not installed"))
    verdict = judge(mxnet, libraries, machine)
    if mxnet is not None and mxnet.cuda and not any(lib.where == "missing" for lib in libraries):
        line, gpu_errors, import_error = _import_mxnet(machine, try_gpus and verdict.ready)
        lines.append(("import mxnet", line))
        libraries = _as_loaded(libraries)
        verdict = judge(mxnet, libraries, machine, gpu_errors, import_error)
    lines += [(lib.soname, f"{lib.where}: {lib.path}" if lib.path else lib.where) for lib in libraries]
    lines += [("GPUs", gpu.describe() + _kernel_note(mxnet, gpu.capability)) for gpu in machine.gpus] or \
             [("GPUs", "no GPU visible" + (f" ({machine.hidden} hidden by CUDA_VISIBLE_DEVICES)" if machine.hidden else ""))]
    report = Report(machine, mxnet, libraries, verdict, lines)
    _nccl(report)
    _disk(report, run_dir)
    _tmux(report)
    _store(report)
    return report


def format_report(report: Report) -> str:
    width = max(len(what) for what, _ in report.lines)
    text = [f"  {what:<{width}}  {finding}" for what, finding in report.lines]
    if report.ready:
        return "\n".join(text + ["ready: this machine can run the reference recipe on its GPUs "
                                 "(python tools/benchmark.py plan RECIPE --gpus 0 next: how fast, how long)"])
    problems = ([(report.verdict.problem, report.verdict.fix)] if not report.verdict.ready else []) \
        + report.other_problems
    text.append(f"not ready: {problems[0][0]}")
    text.append(f"fix: {problems[0][1]}")
    text += [f"also: {problem}; {fix}" for problem, fix in problems[1:]]
    return "\n".join(text)


def _libraries(mxnet: InstalledMxnet | None, preloaded: dict[str, Path | OSError]) -> list[Library]:
    """The CUDA libraries libmxnet.so links, and any other it links that the loader cannot find."""
    if mxnet is None:
        return []
    found = []
    for soname in mxnet.needed:
        pip = preloaded.get(soname)
        if isinstance(pip, Path):
            found.append(Library(soname, "pip wheel", pip))
            continue
        system = cuda_libs.system_copy(soname, mxnet.library.parent)
        if system is None or soname.startswith(CUDA_PREFIXES):
            found.append(Library(soname, *(system or ("missing", None))))
    return found


def _as_loaded(libraries: list[Library]) -> list[Library]:
    """After `import mxnet`: the file each was actually loaded from (/proc/self/maps), which decides ties."""
    mapped = cuda_libs.loaded()
    return [Library(lib.soname, "loaded" + (" (pip wheel)" if lib.where == "pip wheel" else ""), mapped[lib.soname])
            if lib.soname in mapped else lib for lib in libraries]


def _import_mxnet(machine: Machine, try_gpus: bool) -> tuple[str, dict[int, str], str]:
    """(what to print, the convolution check's errors per GPU, the import's error or "")."""
    try:
        import mxnet as mx
    except OSError as err:
        return f"fails: {err}", {}, str(err)
    features = mx.runtime.Features()
    enabled = ", ".join(f"{name} {'on' if features.is_enabled(name) else 'off'}" for name in ("CUDA", "CUDNN", "NCCL"))
    if not try_gpus or not machine.gpus:
        return f"works: {enabled}", {}, ""
    from .gpu.conv_check import check_devices

    results = check_devices([mx.gpu(gpu.index) for gpu in machine.gpus])
    checked = "; ".join(f"GPU {i} conv forward+backward " + (f"matches the CPU (largest difference {r:.1g})"
                        if isinstance(r, float) else f"FAILED: {r}") for i, r in results.items())
    return f"works: {enabled}; {checked}", {i: r for i, r in results.items() if isinstance(r, str)}, ""


def _kernel_note(mxnet: InstalledMxnet | None, capability: tuple[int, int]) -> str:
    if mxnet is None or mxnet.kernels is None:
        return ""
    return "; kernels: yes" if mxnet.kernels.runs_on(capability) else "; kernels: NONE in this build"


def _nccl(report: Report) -> None:
    if len(report.machine.gpus) < 2:
        report.lines.append(("NCCL", "not needed for fewer than two GPUs"))
        return
    nccl = next((lib for lib in report.libraries if lib.soname.startswith("libnccl")), None)
    report.lines.append(("NCCL", f"{nccl.soname} ({nccl.where}) for {len(report.machine.gpus)} GPUs: train.kvstore "
                                 f"nccl can be used" if nccl and nccl.path else
                         "not in this build, or not found: train.kvstore device still spreads over several GPUs"))


def _disk(report: Report, run_dir: Path) -> None:
    existing = next(p for p in [run_dir, *run_dir.parents] if p.exists())
    free = shutil.disk_usage(existing).free / 2**30
    report.lines.append(("run directory", f"{run_dir}: {free:.1f} GiB free"))
    if free < MIN_FREE_GIB:
        report.other_problems.append((f"only {free:.1f} GiB free for {run_dir}",
                                      "free space there or choose another run directory with --output"))


def _tmux(report: Report) -> None:
    tmux = shutil.which("tmux")
    report.lines.append(("tmux", tmux or "missing: tools/launch.py needs it for a run that outlives the SSH session "
                                         "(sudo apt-get install tmux)"))


def _store(report: Report) -> None:
    """The MLflow store every run logs to: an sqlite file that opens, or a server that answers."""
    uri = tracking_uri()
    problem = ""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if path.exists():
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
                    db.execute("select count(*) from sqlite_master").fetchone()
            except sqlite3.Error as err:
                problem = f"the database does not open: {err}"
        elif not os.access(next(p for p in path.parents if p.exists()), os.W_OK):
            problem = f"{path.parent} is not writable"
    elif uri.startswith(("http://", "https://")):
        import requests
        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as err:
            problem = f"the server does not answer: {err}"
    report.lines.append(("MLflow store", f"{uri}: " + (problem or "ok")))
    if problem:
        report.other_problems.append((f"MLflow store {uri}: {problem}",
                                      "fix the store or set MLFLOW_TRACKING_URI to one that works"))
