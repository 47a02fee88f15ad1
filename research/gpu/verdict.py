"""The verdict: can the installed MXNet drive this machine's GPUs, and if not, the one next step: the extra to
install, the driver to update, or the container to use. Pure: it judges facts that tests can make up.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..builds import BUILDS, GLUONCV, build_for, install_command, installed_builds
from .installed import InstalledMxnet
from .machine import Gpu, Machine

# NVIDIA's MXNet 1.9.1 for CUDA 12.4 (cuDNN 9.1, NCCL 2.21, Horovod 0.28, DALI 1.37; Python 3.10): the build that
# has kernels for Hopper and newer. No PyPI build of 1.9.1 has any (cubins up to sm_86, no PTX: CUDA 11.7 at most).
NGC_IMAGE = "nvcr.io/nvidia/mxnet:24.05-py3"
CONTAINER_COMMAND = (f'docker run --gpus all -it --rm --ipc=host -v "$PWD":/workspace/research '
                     f"-w /workspace/research {NGC_IMAGE}")
CONTAINER_INSTALL = f"pip install -e . && pip install --no-deps {GLUONCV}"
PYPI_NEWEST_MAJOR = 8          # PyPI's CUDA builds have cubins for 5.x to 8.x GPUs only
FIRST_WITH_WHEELS = next(b for b in BUILDS if b.runtime)       # cu112: the oldest build whose extra brings its CUDA


@dataclass(frozen=True)
class Library:
    """Where a library libmxnet.so links is (or would be) loaded from."""
    soname: str
    where: str                 # "pip wheel", "beside libmxnet.so", "LD_LIBRARY_PATH", "ldconfig", "system", "missing"
    path: Path | None = None


@dataclass(frozen=True)
class Verdict:
    ready: bool
    problem: str = ""          # what stops the GPU path, one line
    fix: str = ""              # the one next step


READY = Verdict(True)


def judge(mxnet: InstalledMxnet | None, libraries: list[Library], machine: Machine,
          gpu_errors: dict[int, str] | None = None, import_error: str = "") -> Verdict:
    """The first thing that stops a GPU run, in the order a user would fix them; READY when nothing does.

    `gpu_errors` and `import_error` are what trying it said, where it was tried (tools/doctor.py).
    """
    if machine.driver is None:
        return Verdict(False, f"no GPU visible: no NVIDIA driver answered ({machine.problem or 'NVML did not load'})",
                       f"install the NVIDIA driver{_at_least(mxnet)} (nvidia-smi lists the GPUs once it works), "
                       f"then run python tools/doctor.py again")
    if not machine.gpus:
        return Verdict(False, *_no_gpus(machine))
    if (beyond := _beyond_pypi(mxnet, machine.gpus)) is not None:
        return beyond
    installed = installed_builds()
    fitting = build_for(machine.cuda)
    if mxnet is None:
        return Verdict(False, "MXNet is not installed", f"install the build this driver runs: {install_command(fitting)}")
    if not mxnet.cuda:
        return Verdict(False, f"{mxnet.package} is the CPU-only build",
                       f"install the CUDA build this driver runs: {install_command(fitting, installed)}")
    build = mxnet.build
    if build and build.cuda and machine.cuda and machine.cuda < build.cuda:
        return Verdict(False, f"the NVIDIA driver {machine.driver} runs CUDA {_dotted(machine.cuda)} but {build.package} "
                              f"needs CUDA {_dotted(build.cuda)}",
                       f"update the driver to >= {build.min_driver}, or install the build this driver runs: "
                       f"{install_command(fitting, installed)}")
    missing = [lib.soname for lib in libraries if lib.where == "missing"]
    if missing:
        return Verdict(False, f"{mxnet.package} links {', '.join(missing)}, which the loader cannot find",
                       _libraries_fix(mxnet, missing, machine))
    if import_error:
        again = f"install the {build.extra} extra again: {install_command(build)}" if build and build.runtime else \
            "check the libraries listed above (a copy of another version, a broken file)"
        return Verdict(False, f"import mxnet fails: {import_error}", again)
    if (kernels := kernel_verdict(mxnet, machine.gpus)) is not None:
        return kernels
    for index, error in sorted((gpu_errors or {}).items()):
        return Verdict(False, f"GPU {index} failed the convolution check: {error}",
                       "look at nvidia-smi and `dmesg | grep -i xid` for this GPU, then run python tools/doctor.py again")
    return READY


def kernel_verdict(mxnet: InstalledMxnet, gpus: tuple[Gpu, ...] | list[Gpu]) -> Verdict | None:
    """A GPU that libmxnet.so has no kernel image for: every operator would fail on it ('no kernel image is
    available'). Read from the library's own fatbins, so a self-built wheel is judged by what it holds."""
    if mxnet.kernels is None:
        return None
    for gpu in gpus:
        if not mxnet.kernels.runs_on(gpu.capability):
            problem = (f"{gpu.describe()}: {mxnet.package}'s libmxnet.so has no kernels for it "
                       f"(it holds {mxnet.kernels.describe()})")
            arch = f"{gpu.capability[0]}.{gpu.capability[1]}"
            if gpu.capability[0] > PYPI_NEWEST_MAJOR and mxnet.build is not None:
                return Verdict(False, problem + "; no PyPI build of MXNet 1.9.1 has any", _container_fix())
            if gpu.capability[0] > PYPI_NEWEST_MAJOR:       # already not PyPI's (the container, a self-built one)
                return Verdict(False, problem, f"an MXNet built for compute capability {arch} (MXNET_CUDA_ARCH={arch}, "
                                               f"with a CUDA that supports it) is the way on this GPU")
            return Verdict(False, problem, f"use a GPU of compute capability {_oldest(mxnet)} or newer, or an MXNet "
                                           f"built with MXNET_CUDA_ARCH={arch}")
    return None


def _beyond_pypi(mxnet: InstalledMxnet | None, gpus: tuple[Gpu, ...]) -> Verdict | None:
    """Hopper and newer with no build (or a build without their kernels): the container, not another extra."""
    for gpu in gpus:
        if gpu.capability[0] <= PYPI_NEWEST_MAJOR:
            continue
        if mxnet is None or mxnet.kernels is None:
            what = "MXNet is not installed" if mxnet is None else f"{mxnet.package} is the CPU-only build"
            return Verdict(False, f"{gpu.describe()}: no PyPI build of MXNet 1.9.1 has kernels for it ({what})",
                           _container_fix())
        return kernel_verdict(mxnet, [gpu])
    return None


def _container_fix() -> str:
    return (f"use NVIDIA's MXNet container: {CONTAINER_COMMAND}, then inside it {CONTAINER_INSTALL} "
            f"(docs/long-runs.md, 'Which GPU, which install')")


def _no_gpus(machine: Machine) -> tuple[str, str]:
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if machine.hidden:
        return (f"no GPU visible: the driver {machine.driver} has {machine.hidden} GPU(s) and "
                f"CUDA_VISIBLE_DEVICES={spec!r} hides them all", "unset CUDA_VISIBLE_DEVICES, or set it to ids "
                                                                "nvidia-smi lists")
    return (f"no GPU visible: the driver {machine.driver} lists none",
            "check nvidia-smi; in a container, start it with --gpus all")


def _libraries_fix(mxnet: InstalledMxnet, missing: list[str], machine: Machine) -> str:
    build = mxnet.build
    if missing == ["libcuda.so.1"]:
        return "the NVIDIA driver's libcuda.so.1 is not on the loader's path: reinstall the driver (ldconfig -p | grep libcuda)"
    if build and set(missing) - {"libcuda.so.1"} <= set(build.runtime):
        return f"install the {build.extra} extra again, which brings them as wheels: {install_command(build)}"
    with_wheels = [b for b in BUILDS if b.runtime and machine.cuda and b.cuda <= machine.cuda]
    other = (f"or the newest build whose extra brings its libraries: {install_command(with_wheels[-1], installed_builds())}"
             if with_wheels else f"or update the driver to >= {FIRST_WITH_WHEELS.min_driver} and install "
                                 f"{FIRST_WITH_WHEELS.package}, whose extra brings its libraries")
    return (f"install the CUDA toolkit, cuDNN and NCCL this build was made for (or put their folder on "
            f"LD_LIBRARY_PATH), {other}")


def _at_least(mxnet: InstalledMxnet | None) -> str:
    return f" >= {mxnet.build.min_driver}" if mxnet and mxnet.build and mxnet.build.min_driver else ""


def _oldest(mxnet: InstalledMxnet) -> str:
    common = mxnet.kernels.common() if mxnet.kernels else []
    return f"{common[0].sm // 10}.{common[0].sm % 10}" if common else "5.0"


def _dotted(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"
