"""The CUDA 11 libraries a PyPI MXNet build links, from the nvidia-*-cu11 wheels its extra installs, loaded
before mxnet is: libmxnet.so's RPATH is only its own folder, and pip puts them in site-packages/nvidia/*/lib.

`preload()` (called by `import research`) opens each by its absolute path with RTLD_GLOBAL, dependencies first,
as PyTorch's CUDA wheels do; the loader then resolves libmxnet.so's DT_NEEDED names to the copies already
loaded (glibc matches a loaded library by its soname). So the pip copies win over a system CUDA 11 / cuDNN 8
(LD_LIBRARY_PATH, ldconfig): they are the versions the extra pins. Without the wheels nothing is loaded and the
loader searches as it always did. Which file a process loaded is in /proc/self/maps (`loaded()`).
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..builds import installed_builds
from .elf import ElfError, dynamic_names


@dataclass(frozen=True)
class CudaLib:
    soname: str            # what libmxnet.so asks for
    wheel: str             # the PyPI wheel that has it, at site-packages/nvidia/<folder>/lib/<soname>
    version: str           # pinned: the one the extras install (8.9.6.50 is cuDNN 8's last; 9.x is libcudnn.so.9)
    folder: str


# In load order: a library after the ones it links (cublas links cublasLt; cusolver links both).
RUNTIME = [
    CudaLib("libcudart.so.11.0", "nvidia-cuda-runtime-cu11", "11.8.89", "cuda_runtime"),
    CudaLib("libcublasLt.so.11", "nvidia-cublas-cu11", "11.11.3.6", "cublas"),
    CudaLib("libcublas.so.11", "nvidia-cublas-cu11", "11.11.3.6", "cublas"),
    CudaLib("libcufft.so.10", "nvidia-cufft-cu11", "10.9.0.58", "cufft"),
    CudaLib("libcurand.so.10", "nvidia-curand-cu11", "10.3.0.86", "curand"),
    CudaLib("libcusparse.so.11", "nvidia-cusparse-cu11", "11.7.5.86", "cusparse"),
    CudaLib("libcusolver.so.11", "nvidia-cusolver-cu11", "11.4.1.48", "cusolver"),
    CudaLib("libnvrtc.so.11.2", "nvidia-cuda-nvrtc-cu11", "11.8.89", "cuda_nvrtc"),
    CudaLib("libnvToolsExt.so.1", "nvidia-nvtx-cu11", "11.8.86", "nvtx"),
    CudaLib("libcudnn.so.8", "nvidia-cudnn-cu11", "8.9.6.50", "cudnn"),   # opens its libcudnn_*.so.8 beside it
    CudaLib("libnccl.so.2", "nvidia-nccl-cu11", "2.21.5", "nccl"),
]
BY_SONAME = {lib.soname: lib for lib in RUNTIME}
DEFAULT_DIRS = ("/lib64", "/usr/lib64", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib")


def wheel_pins(sonames: tuple[str, ...]) -> list[str]:
    """['nvidia-cuda-runtime-cu11==11.8.89', ...]: the requirements that bring these libraries (setup.cfg's)."""
    return list(dict.fromkeys(f"{BY_SONAME[s].wheel}=={BY_SONAME[s].version}" for s in sonames))


def pip_copy(soname: str, search: list[str] | None = None) -> Path | None:
    """site-packages/nvidia/<folder>/lib/<soname> of the first sys.path entry that has it."""
    lib = BY_SONAME.get(soname)
    if lib is None:
        return None
    for entry in sys.path if search is None else search:
        path = Path(entry or ".") / "nvidia" / lib.folder / "lib" / soname
        if path.is_file():
            return path.resolve()
    return None


def preload(search: list[str] | None = None) -> dict[str, Path | OSError]:
    """Load the pip copies of the installed CUDA build's libraries, before mxnet; soname -> path (or the error).

    Costs a few stat calls where no nvidia/ folder is on sys.path (the CPU build, the NGC container) and does
    nothing there. Never raises: a library that fails to load is left to `import mxnet` to report (by name).
    """
    entries = sys.path if search is None else search
    if not any(os.path.isdir(os.path.join(entry or ".", "nvidia")) for entry in entries):
        return {}
    wanted = {soname for build in installed_builds() for soname in build.runtime}
    done: dict[str, Path | OSError] = {}
    for lib in RUNTIME:
        path = pip_copy(lib.soname, entries) if lib.soname in wanted else None
        if path is not None:
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                done[lib.soname] = path
            except OSError as err:
                done[lib.soname] = err
    return done


def loaded() -> dict[str, Path]:
    """soname -> the file this process has mapped for it (/proc/self/maps), for every shared library loaded."""
    files = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:                 # address perms offset dev inode [path]
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith("/") and ".so" in Path(fields[5].strip()).name:
                    files.add(fields[5].strip())
    except OSError:
        return {}
    found = {}
    for path in sorted(files):
        try:
            soname = dynamic_names(Path(path))[1] or Path(path).name
        except (OSError, ElfError):
            continue
        found.setdefault(soname, Path(path))
    return found


def system_copy(soname: str, origin: Path | None = None) -> tuple[str, Path] | None:
    """(where, path) the loader would find `soname` at without our preload: beside libmxnet.so ($ORIGIN, its
    RPATH), LD_LIBRARY_PATH, the ldconfig cache, the default folders; None when it finds none."""
    places = [("beside libmxnet.so", str(origin))] if origin else []
    places += [("LD_LIBRARY_PATH", d) for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    for where, folder in places:
        if (Path(folder) / soname).is_file():
            return where, Path(folder) / soname
    cached = _ldconfig_cache().get(soname)
    if cached:
        return "ldconfig", cached
    for folder in DEFAULT_DIRS:
        if (Path(folder) / soname).is_file():
            return "system", Path(folder) / soname
    return None


def loader_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment whose LD_LIBRARY_PATH leads with the pip copies' folders: for a subprocess that imports mxnet
    without importing research first (MXNet's own tools/im2rec.py)."""
    env = dict(os.environ if env is None else env)
    folders = list(dict.fromkeys(str(p.parent) for p in map(pip_copy, BY_SONAME) if p is not None))
    if folders:
        env["LD_LIBRARY_PATH"] = ":".join(folders + [d for d in env.get("LD_LIBRARY_PATH", "").split(":") if d])
    return env


def _ldconfig_cache() -> dict[str, Path]:
    """soname -> path from `ldconfig -p` (the system's cache of /etc/ld.so.conf folders)."""
    for ldconfig in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        found: dict[str, Path] = {}
        for line in out.splitlines():
            name, arrow, path = line.strip().partition(" => ")
            if arrow and "64" in name.partition(" (")[2]:        # (libc6,x86-64), (libc6,AArch64): not 32-bit
                found.setdefault(name.partition(" (")[0], Path(path))
        return found
    return {}

