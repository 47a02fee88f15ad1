"""The verdict on made-up machines: a driver-only box, a Hopper box and a ready box told apart, each with the one
next step (the extra to install, the driver to update, or the container to use)."""
from __future__ import annotations

from pathlib import Path

import pytest

from research.builds import BUILDS
from research.gpu import verdict as verdict_module
from research.gpu.fatbin import CUBIN, PTX, Image, Kernels
from research.gpu.installed import InstalledMxnet
from research.gpu.machine import Gpu, Machine
from research.gpu.verdict import READY, Library, judge

BUILD = {b.extra: b for b in BUILDS}
CU112_KERNELS = Kernels((frozenset(Image(sm, CUBIN) for sm in (50, 60, 70, 80, 86)),) * 198)
A100 = Gpu(0, "NVIDIA A100-SXM4-80GB", (8, 0), 80.0)
H100 = Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0), 79.6)
B200 = Gpu(1, "NVIDIA B200", (10, 0), 180.0)
K80 = Gpu(0, "Tesla K80", (3, 7), 11.2)
DRIVER_550 = dict(driver="550.54.15", cuda=(12, 4))


def mxnet(extra: str = "cu112", kernels: Kernels | None = CU112_KERNELS) -> InstalledMxnet:
    build = BUILD[extra]
    needed = (*build.runtime, "libcuda.so.1") if build.cuda else ("libopenblas.so.0",)
    return InstalledMxnet(build.package, "1.9.1", Path("/site/mxnet/libmxnet.so"), needed,
                          kernels if build.cuda else None, build)


def found(installed: InstalledMxnet, missing: tuple[str, ...] = ()) -> list[Library]:
    return [Library(s, "missing") if s in missing else Library(s, "pip wheel", Path("/site/nvidia/x/lib") / s)
            for s in installed.needed]


@pytest.fixture(autouse=True)
def installed_is(monkeypatch):
    """What pip has installed, for the uninstall part of the commands."""
    def choose(extra: str = "cu112") -> None:
        monkeypatch.setattr(verdict_module, "installed_builds", lambda: [BUILD[extra]])
    choose()
    return choose


def test_a_driver_only_box_that_has_no_driver_is_told_to_install_one():
    """The cu112 extra on a machine without the NVIDIA driver (what the opt-in test builds)."""
    result = judge(mxnet(), found(mxnet(), ("libcuda.so.1",)), Machine(None, None, problem="NVML Shared Library Not Found"))
    assert not result.ready
    assert result.problem.startswith("no GPU visible: no NVIDIA driver answered (NVML Shared Library Not Found)")
    assert "install the NVIDIA driver >= 460.27.03" in result.fix


def test_a_hopper_box_is_sent_to_the_container_whatever_is_installed(installed_is):
    for installed in (mxnet("cu112"), mxnet("cu117"), mxnet("cpu"), None):
        installed_is(installed.build.extra if installed else "cpu")
        result = judge(installed, found(installed) if installed else [], Machine(gpus=(H100,), **DRIVER_550))
        assert not result.ready and "compute capability 9.0" in result.problem, installed
        assert "docker run --gpus all" in result.fix and "nvcr.io/nvidia/mxnet:24.05-py3" in result.fix
        assert "pip install -e ." in result.fix
    result = judge(mxnet(), found(mxnet()), Machine(gpus=(A100, B200), **DRIVER_550))
    assert "GPU 1: NVIDIA B200, compute capability 10.0" in result.problem and "no PyPI build" in result.problem


def test_a_ready_box_is_ready():
    assert judge(mxnet(), found(mxnet()), Machine(gpus=(A100,), **DRIVER_550)) is READY
    l4 = Gpu(0, "NVIDIA L4", (8, 9), 22.5)                  # sm_89 runs sm_86's cubins
    assert judge(mxnet("cu117"), found(mxnet("cu117")), Machine(gpus=(l4,), **DRIVER_550)).ready


def test_a_hopper_build_that_has_its_kernels_is_ready():
    """NVIDIA's container (or a self-built MXNet) judged by what its libmxnet.so holds, not by a table."""
    ngc = InstalledMxnet("mxnet", "1.9.1", Path("/usr/local/lib/mxnet/libmxnet.so"), ("libcudart.so.12",),
                         Kernels((frozenset({Image(80, CUBIN), Image(90, CUBIN)}),)), None)
    libraries = [Library("libcudart.so.12", "ldconfig", Path("/usr/local/cuda/lib64/libcudart.so.12"))]
    assert judge(ngc, libraries, Machine(gpus=(H100,), **DRIVER_550)).ready
    on_b200 = judge(ngc, libraries, Machine(gpus=(B200,), **DRIVER_550))       # sm_90 cubins, no PTX: not on 10.0
    assert "NVIDIA B200, compute capability 10.0" in on_b200.problem and "docker" not in on_b200.fix
    assert "MXNET_CUDA_ARCH=10.0" in on_b200.fix
    with_ptx = InstalledMxnet("mxnet", "1.9.1", ngc.library, ngc.needed, Kernels((frozenset({Image(90, PTX)}),)), None)
    assert judge(with_ptx, libraries, Machine(gpus=(B200,), **DRIVER_550)).ready


@pytest.mark.parametrize("machine, installed, problem, fix", [
    (Machine(gpus=(A100,), **DRIVER_550), "cpu", "mxnet is the CPU-only build",
     "uninstall -y mxnet && "),
    (Machine(gpus=(A100,), driver="450.80.02", cuda=(11, 0)), "cu112",
     "the NVIDIA driver 450.80.02 runs CUDA 11.0 but mxnet-cu112 needs CUDA 11.2", "update the driver to >= 460.27.03"),
    (Machine(driver="550.54.15", cuda=(12, 4)), "cu112", "no GPU visible: the driver 550.54.15 lists none",
     "nvidia-smi"),
    (Machine(driver="550.54.15", cuda=(12, 4), hidden=2), "cu112", "CUDA_VISIBLE_DEVICES", "unset CUDA_VISIBLE_DEVICES"),
    (Machine(gpus=(K80,), **DRIVER_550), "cu112", "Tesla K80, compute capability 3.7, 11 GiB: mxnet-cu112's "
     "libmxnet.so has no kernels for it", "compute capability 5.0 or newer"),
])
def test_each_other_stop_has_its_one_fix(installed_is, machine, installed, problem, fix):
    installed_is(installed)
    result = judge(mxnet(installed), found(mxnet(installed)), machine)
    assert not result.ready and problem in result.problem and fix in result.fix, result


def test_missing_libraries_name_the_extra_that_brings_them_or_the_toolkit():
    cu112 = mxnet("cu112")
    result = judge(cu112, found(cu112, ("libcudnn.so.8", "libnccl.so.2")), Machine(gpus=(A100,), **DRIVER_550))
    assert result.problem == "mxnet-cu112 links libcudnn.so.8, libnccl.so.2, which the loader cannot find"
    assert result.fix.startswith("install the cu112 extra again") and "[cu112]'" in result.fix
    cu102 = InstalledMxnet("mxnet-cu102", "1.9.1", Path("/x/libmxnet.so"), ("libcudart.so.10.2",), CU112_KERNELS,
                           BUILD["cu102"])
    result = judge(cu102, [Library("libcudart.so.10.2", "missing")], Machine(gpus=(A100,), **DRIVER_550))
    assert "CUDA toolkit, cuDNN and NCCL" in result.fix and "[cu117]'" in result.fix


def test_a_gpu_that_fails_the_convolution_check_is_not_ready():
    result = judge(mxnet(), found(mxnet()), Machine(gpus=(A100,), **DRIVER_550),
                   {0: "no kernel image is available for execution on the device"})
    assert result.problem == ("GPU 0 failed the convolution check: no kernel image is available for execution on "
                              "the device")


def test_an_mxnet_that_does_not_import_is_not_ready_and_the_extra_is_installed_again():
    result = judge(mxnet(), found(mxnet()), Machine(gpus=(A100,), **DRIVER_550),
                   import_error="/site/nvidia/cudnn/lib/libcudnn.so.8: file too short")
    assert result.problem == "import mxnet fails: /site/nvidia/cudnn/lib/libcudnn.so.8: file too short"
    assert result.fix.startswith("install the cu112 extra again")
