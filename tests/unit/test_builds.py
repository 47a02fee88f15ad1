"""Install by choice of MXNet build: setup.cfg's extras, the README's commands, and the messages
that name the command to run (the CUDA wheels cannot be installed here: the metadata is checked)."""
from __future__ import annotations

import configparser
import re
import subprocess
import sys

import pytest

from helpers import REPO
from research import builds
from research.builds import BUILDS, build_for, gpu_problem
from research.gpu.cuda_libs import wheel_pins


def _extras() -> dict[str, list[str]]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return {name: [line.strip() for line in value.strip().splitlines() if line.strip()]
            for name, value in config["options.extras_require"].items()}


def test_one_extra_per_mxnet_build_and_no_mxnet_in_the_base_install():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    base = config["options"]["install_requires"]
    assert not re.search(r"^\s*mxnet", base, re.M), "install_requires must leave the build to the extras"
    # numpy<1.24 is PyPI's MXNet's need, not this code's: a bare install keeps the numpy of an MXNet already there
    assert re.search(r"^\s*numpy>=1.21,<2$", base, re.M) and "1.24" not in base
    extras = _extras()
    for build in BUILDS:
        assert extras.get(build.extra) == [f"{build.package}=={builds.MXNET_VERSION}", "numpy<1.24",
                                           *wheel_pins(build.runtime)], build.extra
    mxnet_extras = {name for name, reqs in extras.items() if any(r.startswith("mxnet") for r in reqs)}
    assert mxnet_extras == {b.extra for b in BUILDS}, "an extra installs mxnet but is not in BUILDS (or twice)"


def test_the_cuda_11_extras_bring_every_cuda_library_their_build_links_but_the_drivers():
    """The sonames readelf -d lists for mxnet-cu112 (cu113 ... cu117 add libcusparse.so.11), each from one pinned wheel;
    CUDA 10 and 11.0 builds link libraries no wheel has, and their extras say so by bringing none."""
    extras = _extras()
    cu112 = extras["cu112"]
    for pin in ("nvidia-cuda-runtime-cu11==11.8.89", "nvidia-cublas-cu11==11.11.3.6", "nvidia-cufft-cu11==10.9.0.58",
                "nvidia-curand-cu11==10.3.0.86", "nvidia-cusolver-cu11==11.4.1.48", "nvidia-cuda-nvrtc-cu11==11.8.89",
                "nvidia-nvtx-cu11==11.8.86", "nvidia-cudnn-cu11==8.9.6.50", "nvidia-nccl-cu11==2.21.5"):
        assert pin in cu112
    assert "nvidia-cusparse-cu11==11.7.5.86" in extras["cu117"] and not any("cusparse" in r for r in cu112)
    assert all(len(extras[extra]) == 2 for extra in ("cpu", "cu101", "cu102", "cu110"))
    assert len(set(cu112)) == len(cu112)          # libcublas and libcublasLt come from one wheel, listed once


def test_readme_commands_use_existing_extras_and_ci_runs_the_second_verbatim():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^\s*(python3\.11 -m venv \.venv && .*)$", readme, re.M)
    assert len(commands) >= 2
    for command in commands:
        extras = re.findall(r"pip install (?:-q )?-e '\.\[([^\]]*)\]'", command)
        assert extras, f"README command installs no MXNet build: {command}"
        assert set(extras[0].split(",")) & {b.extra for b in BUILDS}, command
        assert set(extras[0].split(",")) <= set(_extras()), command
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1].strip() in ci


def test_import_without_mxnet_prints_the_install_command():
    # sys.modules["mxnet"] = None makes find_spec report it missing, as after a bare `pip install -e .`
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.modules['mxnet'] = None; import research"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    expected = build_for(builds.driver_cuda_version()).extra
    assert f"-m pip install -e '{REPO}[{expected}]'" in proc.stderr, proc.stderr


@pytest.mark.parametrize("driver, extra", [
    (None, "cpu"), ((10, 0), "cpu"), ((10, 2), "cu102"), ((11, 1), "cu110"), ((11, 4), "cu114"), ((12, 4), "cu117"),
])
def test_build_for_picks_the_newest_build_the_driver_runs(driver, extra):
    assert build_for(driver).extra == extra


def _by_extra(extra: str) -> builds.Build:
    return next(b for b in BUILDS if b.extra == extra)


@pytest.mark.parametrize("driver, installed, expected", [
    ((10, 2), "cu112", ["supports CUDA 10.2 but mxnet-cu112 needs CUDA 11.2", ">= 460.27.03",
                        "uninstall -y mxnet-cu112 &&", "[cu102]'"]),
    (None, "cu112", ["mxnet-cu112 is installed but no NVIDIA driver was found", "[cpu]'"]),
    ((11, 4), "cpu", ["CPU-only build", "uninstall -y mxnet &&", "[cu114]'"]),
])
def test_gpu_problem_says_which_and_what_to_install(monkeypatch, driver, installed, expected):
    monkeypatch.setattr(builds, "driver_cuda_version", lambda: driver)
    monkeypatch.setattr(builds, "installed_builds", lambda: [_by_extra(installed)])
    message = gpu_problem("0")
    for part in expected:
        assert part in message, message


def test_gpu_problem_is_none_when_driver_and_build_fit(monkeypatch):
    monkeypatch.setattr(builds, "driver_cuda_version", lambda: (11, 4))
    monkeypatch.setattr(builds, "installed_builds", lambda: [_by_extra("cu112")])
    assert gpu_problem("0") is None


def test_gpus_on_a_cuda_build_whose_driver_is_too_old(monkeypatch):
    """tools/train.py --gpus 0 with mxnet-cu112 on a CUDA 10.2 driver: MXNet counts 0 GPUs; the error says why."""
    import mxnet as mx

    from research.devices import DeviceError, get_contexts

    class CudaFeatures:
        def is_enabled(self, name):
            return name == "CUDA"

    monkeypatch.setattr(mx.runtime, "Features", CudaFeatures)
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 0)
    monkeypatch.setattr(builds, "driver_cuda_version", lambda: (10, 2))
    monkeypatch.setattr(builds, "installed_builds", lambda: [_by_extra("cu112")])
    with pytest.raises(DeviceError, match=r"driver supports CUDA 10.2 but mxnet-cu112 needs CUDA 11.2.*\[cu102\]'"):
        get_contexts("0")
    monkeypatch.setattr(builds, "driver_cuda_version", lambda: (11, 4))      # driver fine, GPU hidden
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(DeviceError, match=r"no GPU is visible to MXNet. Check nvidia-smi and CUDA_VISIBLE_DEVICES=''"):
        get_contexts("0")


def test_gpus_the_build_has_no_kernels_for_are_refused_before_any_work(monkeypatch, tmp_path):
    """--gpus 0 (tools/train.py, tools/benchmark.py plan) with mxnet-cu112 on an H100: MXNet counts the GPU, but
    its libmxnet.so (here a file shaped like it) holds no sm_90 code: refused with the container, not in batch 1."""
    import mxnet as mx
    from fake_libs import CU112_IMAGES, fatbin, write_elf

    from research import devices
    from research.gpu.installed import InstalledMxnet
    from research.gpu.fatbin import read_kernels
    from research.gpu.machine import Gpu, Machine

    class CudaFeatures:
        def is_enabled(self, name):
            return name == "CUDA"

    library = write_elf(tmp_path / "libmxnet.so", {".nv_fatbin": fatbin([CU112_IMAGES] * 4)})
    cu112 = InstalledMxnet("mxnet-cu112", "1.9.1", library, (), read_kernels(library), _by_extra("cu112"))
    monkeypatch.setattr(mx.runtime, "Features", CudaFeatures)
    monkeypatch.setattr(mx.context, "num_gpus", lambda: 2)
    monkeypatch.setattr(devices, "installed_mxnet", lambda: cu112)
    h100, a100 = Gpu(1, "NVIDIA H100 80GB HBM3", (9, 0), 79.6), Gpu(0, "NVIDIA A100-SXM4-40GB", (8, 0), 40.0)
    monkeypatch.setattr(devices, "probe", lambda: Machine("550.54.15", (12, 4), (a100, h100)))
    with pytest.raises(devices.DeviceError, match=r"^--gpus 0,1: GPU 1: NVIDIA H100 80GB HBM3, compute capability 9.0.*"
                                                  r"no kernels for it.*Fix: use NVIDIA's MXNet container: docker run"):
        devices.get_contexts("0,1")
    assert devices.get_contexts("0") == [mx.gpu(0)]            # the A100 alone: sm_80 cubins
