"""MXNet builds: the setup.cfg extras (one per PyPI build of mxnet 1.9.1, with the CUDA libraries it links where
PyPI has them), the one installed, and the one this machine's NVIDIA driver can run. Imports no mxnet: it explains
a missing one.
"""
from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from importlib import metadata

from .paths import REPO

@dataclass(frozen=True)
class Build:
    extra: str                      # pip install -e '.[<extra>]'
    package: str                    # the PyPI distribution; every one provides the module `mxnet`
    cuda: tuple[int, int] | None    # CUDA version it was built with; None for the CPU build
    min_driver: str = ""            # Linux driver the CUDA release notes list for that toolkit
    runtime: tuple[str, ...] = ()   # the CUDA libraries (sonames) its extra installs as nvidia-*-cu11 wheels


# What libmxnet.so links besides the driver's libcuda.so.1 (`readelf -d`), each on PyPI as a nvidia-*-cu11 wheel
# (research/gpu/cuda_libs.py RUNTIME names them). cu113 ... cu117 also link libcusparse.so.11. cu110 links
# libcusolver.so.10 and libnvrtc.so.11.0, CUDA 11.0's own, which no wheel has; CUDA 10 has no wheels at all:
# those builds need the toolkit, cuDNN and NCCL installed on the machine.
CU112_RUNTIME = ("libcudart.so.11.0", "libcublasLt.so.11", "libcublas.so.11", "libcufft.so.10", "libcurand.so.10",
                 "libcusolver.so.11", "libnvrtc.so.11.2", "libnvToolsExt.so.1", "libcudnn.so.8", "libnccl.so.2")
CU113_RUNTIME = CU112_RUNTIME + ("libcusparse.so.11",)


# The builds PyPI has for mxnet 1.9.1 (`pip index versions mxnet-cu110` ...): cu100 stops at 1.9.0,
# cu92 at 1.7.0, and there is no cu118 or later. setup.cfg has one extra per row (tests check it).
BUILDS = [
    Build("cpu", "mxnet", None),
    Build("cu101", "mxnet-cu101", (10, 1), "418.39"),
    Build("cu102", "mxnet-cu102", (10, 2), "440.33"),
    Build("cu110", "mxnet-cu110", (11, 0), "450.36.06"),
    Build("cu112", "mxnet-cu112", (11, 2), "460.27.03", CU112_RUNTIME),
    Build("cu113", "mxnet-cu113", (11, 3), "465.19.01", CU113_RUNTIME),
    Build("cu114", "mxnet-cu114", (11, 4), "470.42.01", CU113_RUNTIME),
    Build("cu115", "mxnet-cu115", (11, 5), "495.29.05", CU113_RUNTIME),
    Build("cu116", "mxnet-cu116", (11, 6), "510.39.01", CU113_RUNTIME),
    Build("cu117", "mxnet-cu117", (11, 7), "515.43.04", CU113_RUNTIME),
]
MXNET_VERSION = "1.9.1"


def installed_builds() -> list[Build]:
    """The MXNet distributions pip has installed (two at once share and break one `mxnet` folder)."""
    found = []
    for build in BUILDS:
        try:
            metadata.version(build.package)
        except metadata.PackageNotFoundError:
            continue
        found.append(build)
    return found


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA the NVIDIA driver supports (cuDriverGetVersion), or None without a driver."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    try:
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value == 0:
            return None
    except AttributeError:        # a libcuda.so.1 without it: a stand-in, not the driver's
        return None
    return version.value // 1000, version.value % 1000 // 10


def build_for(cuda: tuple[int, int] | None) -> Build:
    """The newest build a driver supporting `cuda` runs; the CPU build without a driver."""
    fitting = [b for b in BUILDS if b.cuda is not None and cuda is not None and b.cuda <= cuda]
    return fitting[-1] if fitting else BUILDS[0]


def install_command(build: Build, replacing: list[Build] = ()) -> str:
    """The one command that installs this repo with `build` (uninstalling the builds it replaces)."""
    pip = f"{sys.executable} -m pip"
    remove = f"{pip} uninstall -y {' '.join(b.package for b in replacing)} && " if replacing else ""
    return f"{remove}{pip} install -e '{REPO}[{build.extra}]'"


# gluoncv is installed with --no-deps (README, .ci/run): it requires opencv-python, the GUI build of cv2, which
# needs libGL and would be a second package writing the cv2/ folder of our opencv-python-headless.
GLUONCV = "gluoncv==0.10.5.post0"


def gluoncv_install_command() -> str:
    return f"{sys.executable} -m pip install --no-deps {GLUONCV}"


def missing_mxnet_message() -> str:
    """What `import research` says when `pip install -e .` (no extra) left MXNet out."""
    cuda = driver_cuda_version()
    build = build_for(cuda)
    why = (f"this machine's NVIDIA driver supports CUDA {_dotted(cuda)}: the newest build it runs is "
           f"{build.package}" if cuda else "no NVIDIA driver was found: the CPU build")
    return (f"MXNet is not installed: `pip install -e .` installs every dependency but the MXNet build, "
            f"which you choose with an extra ({', '.join(b.extra for b in BUILDS)}); {why}. Run:\n"
            f"  {install_command(build)}")


def gpu_problem(requested: str) -> str | None:
    """Why `--gpus` cannot work with the installed build on this machine, with what to install; or None.

    Called after MXNet found fewer GPUs than asked for, or raised while counting them.
    """
    cuda = driver_cuda_version()
    installed = installed_builds()
    build = next((b for b in installed if b.cuda), None)
    fitting = build_for(cuda)
    if build is None:
        what = (f"the NVIDIA driver supports CUDA {_dotted(cuda)}: install {fitting.package}" if cuda
                else "no NVIDIA driver was found either: install one, then a CUDA build such as mxnet-cu112")
        return (f"--gpus {requested}: this MXNet is the CPU-only build ({_names(installed)}); {what}: "
                f"{install_command(fitting if cuda else BUILDS[4], installed)} (or drop --gpus)")
    if cuda is None:
        return (f"--gpus {requested}: {build.package} is installed but no NVIDIA driver was found "
                f"(libcuda.so.1 does not load): install the NVIDIA driver >= {build.min_driver} "
                f"(check with nvidia-smi), or train on the CPU with: {install_command(BUILDS[0], installed)}")
    if cuda < build.cuda:
        return (f"--gpus {requested}: the NVIDIA driver supports CUDA {_dotted(cuda)} but {build.package} needs "
                f"CUDA {_dotted(build.cuda)}: upgrade the driver to >= {build.min_driver}, or install the build "
                f"this driver runs: {install_command(fitting, installed)}")
    return None


def _dotted(version: tuple[int, int] | None) -> str:
    return ".".join(map(str, version)) if version else "none"


def _names(builds: list[Build]) -> str:
    return ", ".join(b.package for b in builds) or "no pip record of it"

