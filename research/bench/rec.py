"""Packing speed: tools/build_rec.py against MXNet's own tools/im2rec.py (in the wheel) on the same folder,
shorter-side resize, JPEG quality and worker count, each run as a user runs it, the two alternating."""
from __future__ import annotations

import importlib.util
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import UserError
from ..gpu.cuda_libs import loader_env
from ..paths import TOOLS


def im2rec_script() -> Path:
    """mxnet/tools/im2rec.py of the installed MXNet, found without importing MXNet."""
    spec = importlib.util.find_spec("mxnet")
    script = Path(spec.origin).parent / "tools" / "im2rec.py" if spec and spec.origin else None
    if script is None or not script.is_file():
        raise UserError("benchmark rec: the installed MXNet has no tools/im2rec.py to compare with")
    return script


def benchmark_rec(src: str | Path, resize: int, quality: int, workers: int, repeats: int = 2) -> dict:
    """Seconds of im2rec and of tools/build_rec.py packing `src` (class folders), `repeats` times each, alternating.

    im2rec's time is its packing step alone (`im2rec.py PREFIX SRC` with the .lst made beforehand, untimed);
    ours includes listing the folder and everything tools/build_rec.py does besides (checks, the report,
    the mean/std). Returns both lists of wall and CPU seconds (user + system, every process of the tool),
    "ratio" = median im2rec time / median ours (> 1: ours is faster), "cpu_ratio" the same for CPU seconds
    (the figure a busy machine disturbs least), and the images and megabytes each wrote.
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"benchmark rec: {src} is not a folder (expected one sub-folder of images per class)")
    if repeats < 1 or workers < 1:
        raise UserError(f"benchmark rec: --repeats ({repeats}) and --workers ({workers}) must be >= 1")
    script = im2rec_script()
    with tempfile.TemporaryDirectory(prefix="benchmark-rec-") as tmp:
        peer, ours = Path(tmp) / "im2rec", Path(tmp) / "ours"
        _run([sys.executable, script, "--list", "--recursive", peer, src], "im2rec --list")
        peer_command = [sys.executable, script, "--resize", resize, "--quality", quality, "--num-thread", workers,
                        peer, src]
        our_command = [sys.executable, TOOLS / "build_rec.py", src, ours, "--resize", resize, "--quality", quality,
                       "--workers", workers, "--quiet"]
        times: dict[str, list[float]] = {"im2rec": [], "ours": []}
        cpu: dict[str, list[float]] = {"im2rec": [], "ours": []}
        for _ in range(repeats):
            for name, command in (("im2rec", peer_command), ("ours", our_command)):
                start, cpu_start = time.perf_counter(), _children_cpu()
                _run(command, name)
                times[name].append(time.perf_counter() - start)
                cpu[name].append(_children_cpu() - cpu_start)
        return {"im2rec_s": times["im2rec"], "ours_s": times["ours"],
                "im2rec_cpu_s": cpu["im2rec"], "ours_cpu_s": cpu["ours"],
                "ratio": statistics.median(times["im2rec"]) / statistics.median(times["ours"]),
                "cpu_ratio": statistics.median(cpu["im2rec"]) / statistics.median(cpu["ours"]),
                "im2rec_images": _count(peer), "ours_images": _count(ours),
                "im2rec_mb": _megabytes(peer), "ours_mb": _megabytes(ours)}


def _children_cpu() -> float:
    """User + system CPU seconds of every finished child process and their own children (im2rec's workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list, name: str) -> None:
    # im2rec.py imports mxnet without research first: a CUDA build finds the pip wheels' libraries by LD_LIBRARY_PATH
    proc = subprocess.run([str(part) for part in command], capture_output=True, text=True, env=loader_env())
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise UserError(f"benchmark rec: {name} failed (exit {proc.returncode}): {' / '.join(tail)}")


def _count(prefix: Path) -> int:
    return sum(1 for line in Path(f"{prefix}.idx").read_text().splitlines() if line.strip())


def _megabytes(prefix: Path) -> float:
    return Path(f"{prefix}.rec").stat().st_size / 2 ** 20
