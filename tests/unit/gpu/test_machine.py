"""What NVML says about the driver and the GPUs, as CUDA will number them: through a stand-in pynvml."""
from __future__ import annotations

import sys
import types

import pytest

from research.gpu.machine import Gpu, probe, visible_gpus

BOX = [Gpu(0, "NVIDIA A100-SXM4-80GB", (8, 0), 80.0, "GPU-aaaa1111"), Gpu(1, "NVIDIA H100 80GB HBM3", (9, 0), 79.6,
                                                                             "GPU-bbbb2222"),
       Gpu(2, "NVIDIA L4", (8, 9), 22.5, "GPU-cccc3333")]


@pytest.mark.parametrize("spec, names", [
    (None, ["A100", "H100", "L4"]), ("", []), ("2,0", ["L4", "A100"]), ("GPU-bbbb", ["H100"]),
    ("1,7,2", ["H100"]), ("-1", []), ("0,0", ["A100"]),
])
def test_cuda_visible_devices_chooses_and_renumbers_as_cuda_does(spec, names):
    visible = visible_gpus(BOX, spec)
    assert [g.name.split()[1].split("-")[0] for g in visible] == names
    assert [g.index for g in visible] == list(range(len(names)))


class FakeNvml(types.ModuleType):
    """pynvml's calls with the answers of a driver 550.54.15 (CUDA 12.4) on BOX; or failing to load."""

    class NVMLError(Exception):
        pass

    def __init__(self, loads: bool = True):
        super().__init__("pynvml")
        self.loads, self.shutdown = loads, False

    def nvmlInit(self):
        if not self.loads:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlSystemGetCudaDriverVersion_v2(self):
        return 12040

    def nvmlSystemGetDriverVersion(self):
        return b"550.54.15"

    def nvmlDeviceGetCount(self):
        return len(BOX)

    def nvmlDeviceGetHandleByIndex(self, index):
        return BOX[index]

    def nvmlDeviceGetName(self, gpu):
        return gpu.name

    def nvmlDeviceGetCudaComputeCapability(self, gpu):
        return list(gpu.capability)

    def nvmlDeviceGetMemoryInfo(self, gpu):
        return types.SimpleNamespace(total=int(gpu.memory_gib * 2**30))

    def nvmlDeviceGetUUID(self, gpu):
        return gpu.uuid


def test_probe_reads_the_driver_and_the_visible_gpus(monkeypatch):
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")
    machine = probe()
    assert (machine.driver, machine.cuda, machine.hidden) == ("550.54.15", (12, 4), 1)
    assert [(g.index, g.capability, round(g.memory_gib)) for g in machine.gpus] == [(0, (9, 0), 80), (1, (8, 9), 22)]
    assert fake.shutdown
    assert machine.gpus[0].describe() == "GPU 0: NVIDIA H100 80GB HBM3, compute capability 9.0, 80 GiB"


def test_probe_without_a_driver_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(loads=False))
    machine = probe()
    assert machine.driver is None and machine.gpus == () and machine.problem == "NVML Shared Library Not Found"
