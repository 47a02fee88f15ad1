"""tools/doctor.py: the report on made-up machines (a libmxnet.so shaped like mxnet-cu112's, written by the test),
and the real tool on this one."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fake_libs import CU112_IMAGES, fatbin, write_elf
from helpers import REPO

from research import doctor
from research.builds import BUILDS
from research.gpu.fatbin import read_kernels
from research.gpu.installed import InstalledMxnet
from research.gpu.machine import Gpu, Machine, probe
from research.gpu.verdict import Verdict

CU112 = next(b for b in BUILDS if b.extra == "cu112")


@pytest.fixture
def cu112_box(tmp_path, monkeypatch):
    """mxnet-cu112 installed with its wheels (a file shaped like its libmxnet.so); the machine is each test's."""
    (tmp_path / "mxnet").mkdir()
    library = write_elf(tmp_path / "mxnet" / "libmxnet.so", {".nv_fatbin": fatbin([CU112_IMAGES] * 5)})
    mxnet = InstalledMxnet("mxnet-cu112", "1.9.1", library, (*CU112.runtime, "libcuda.so.1", "libc.so.6"),
                           read_kernels(library), CU112)
    wheels = {soname: tmp_path / "site" / "nvidia" / soname for soname in CU112.runtime}
    monkeypatch.setattr(doctor, "installed_mxnet", lambda: mxnet)
    monkeypatch.setattr(doctor.cuda_libs, "preload", lambda: wheels)
    monkeypatch.setattr(doctor, "_import_mxnet", lambda machine, try_gpus: ("works: CUDA on, CUDNN on, NCCL on", {}, ""))
    monkeypatch.setattr(doctor.cuda_libs, "loaded", lambda: {})

    def machine(value: Machine, driver_library: bool = True) -> None:
        monkeypatch.setattr(doctor, "probe", lambda: value)
        real = doctor.cuda_libs.system_copy
        monkeypatch.setattr(doctor.cuda_libs, "system_copy", lambda soname, origin=None: (
            ("ldconfig", Path("/usr/lib/x86_64-linux-gnu/libcuda.so.1")) if driver_library else None)
            if soname == "libcuda.so.1" else real(soname, origin))
    return machine


def _lines(report: doctor.Report) -> dict[str, str]:
    return dict(report.lines)


def test_a_driver_only_box_without_the_driver(cu112_box, tmp_path):
    cu112_box(Machine(None, None, problem="NVML Shared Library Not Found"), driver_library=False)
    report = doctor.examine(tmp_path)
    lines = _lines(report)
    assert lines["GPU code in it"] == "sm_50, sm_60, sm_70, sm_80, sm_86 (cubins in all 5 fatbins), no PTX"
    assert lines["libcudnn.so.8"] == f"pip wheel: {tmp_path}/site/nvidia/libcudnn.so.8"
    assert lines["libcuda.so.1"] == "missing" and lines["GPUs"] == "no GPU visible"
    assert not report.ready
    text = doctor.format_report(report)
    assert "not ready: no GPU visible: no NVIDIA driver answered (NVML Shared Library Not Found)" in text
    assert "fix: install the NVIDIA driver >= 460.27.03" in text


def test_a_hopper_box_is_told_from_the_compute_capability_it_reads(cu112_box, tmp_path):
    h100 = Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0), 79.6)
    cu112_box(Machine("550.54.15", (12, 4), (h100,)))
    report = doctor.examine(tmp_path)
    assert _lines(report)["GPUs"] == "GPU 0: NVIDIA H100 80GB HBM3, compute capability 9.0, 80 GiB; kernels: NONE in " \
                                     "this build"
    text = doctor.format_report(report)
    assert "not ready: GPU 0: NVIDIA H100 80GB HBM3, compute capability 9.0, 80 GiB: mxnet-cu112's libmxnet.so has " \
           "no kernels for it" in text
    assert "fix: use NVIDIA's MXNet container: docker run --gpus all" in text


def test_a_ready_box(cu112_box, tmp_path):
    a100s = (Gpu(0, "NVIDIA A100-SXM4-80GB", (8, 0), 80.0), Gpu(1, "NVIDIA A100-SXM4-80GB", (8, 0), 80.0))
    cu112_box(Machine("550.54.15", (12, 4), a100s))
    report = doctor.examine(tmp_path)
    lines = _lines(report)
    assert lines["NVIDIA driver"] == "550.54.15, runs CUDA up to 12.4"
    assert lines["NCCL"] == "libnccl.so.2 (pip wheel) for 2 GPUs: train.kvstore nccl can be used" and lines["import mxnet"].startswith("works: CUDA on")
    assert report.ready, doctor.format_report(report)
    assert doctor.format_report(report).splitlines()[-1].startswith("ready: this machine can run the reference recipe")


def test_the_first_problem_gets_the_fix_and_the_others_follow():
    report = doctor.Report(Machine(None, None), None, [], Verdict(False, "no GPU visible: x", "install the driver"),
                           [("GPUs", "no GPU visible")], [("only 0.2 GiB free for /runs", "free space there")])
    assert doctor.format_report(report).splitlines()[-3:] == [
        "not ready: no GPU visible: x", "fix: install the driver", "also: only 0.2 GiB free for /runs; free space there"]


def test_the_tool_on_this_machine_exits_0_only_when_it_says_ready(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "doctor.py"), "--output", str(tmp_path / "run")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    last = proc.stdout.strip().splitlines()
    for label in ("NVIDIA driver", "MXNet", "GPUs", "NCCL", "run directory", "tmux", "MLflow store"):
        assert any(line.strip().startswith(label) for line in last), (label, proc.stdout)
    assert (proc.returncode == 0) == last[-1].startswith("ready:"), proc.stdout + proc.stderr
    if proc.returncode != 0:
        assert proc.returncode == 2 and last[-1].startswith(("fix: ", "also: ")), proc.stdout
    if probe().driver is None:
        assert "not ready: no GPU visible" in proc.stdout
