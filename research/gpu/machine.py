"""The NVIDIA driver and the GPUs CUDA will number for this process, as NVML (nvidia-ml-py) reports them.

`probe()` is the one place that asks the driver; everything that judges takes a `Machine`, which the tests build.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int                       # as CUDA numbers it here (mx.gpu(index)), after CUDA_VISIBLE_DEVICES
    name: str
    capability: tuple[int, int]      # compute capability: (9, 0) for an H100
    memory_gib: float
    uuid: str = ""

    def describe(self) -> str:
        return f"GPU {self.index}: {self.name}, compute capability {self.capability[0]}.{self.capability[1]}, " \
               f"{self.memory_gib:.0f} GiB"


@dataclass(frozen=True)
class Machine:
    driver: str | None                  # "550.54.15"; None: no NVIDIA driver answered
    cuda: tuple[int, int] | None        # the newest CUDA that driver runs
    gpus: tuple[Gpu, ...] = ()          # visible to CUDA in this process
    hidden: int = 0                     # GPUs the driver has that CUDA_VISIBLE_DEVICES leaves out
    problem: str = ""                   # NVML's error when there is no driver


def probe() -> Machine:
    """Ask NVML; a machine without the driver's libnvidia-ml.so.1 (or with it but no kernel module) has none."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception as err:            # NVMLError_LibraryNotFound, _DriverNotLoaded; ImportError
        return Machine(None, None, problem=str(err) or type(err).__name__)
    try:
        version = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        every = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            every.append(Gpu(index, _text(pynvml.nvmlDeviceGetName(handle)),
                             tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle)),
                             pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30,
                             _text(pynvml.nvmlDeviceGetUUID(handle))))
        visible = visible_gpus(every, os.environ.get("CUDA_VISIBLE_DEVICES"))
        return Machine(_text(pynvml.nvmlSystemGetDriverVersion()), (version // 1000, version % 1000 // 10),
                       tuple(visible), len(every) - len(visible))
    except pynvml.NVMLError as err:
        return Machine(None, None, problem=str(err))
    finally:
        pynvml.nvmlShutdown()


def visible_gpus(every: list[Gpu], spec: str | None) -> list[Gpu]:
    """The GPUs CUDA_VISIBLE_DEVICES lets CUDA see, renumbered from 0 as CUDA does; ids or GPU-<uuid> prefixes,
    up to the first that matches none (CUDA stops there too). NVML lists GPUs in PCI bus order, CUDA fastest
    first unless CUDA_DEVICE_ORDER=PCI_BUS_ID: on a box of one GPU model the two agree."""
    if spec is None:
        return list(every)
    chosen = []
    for token in (t.strip() for t in spec.split(",")):
        match = next((g for g in every if token.isdigit() and g.index == int(token)
                      or token.startswith("GPU-") and g.uuid.startswith(token)), None)
        if match is None or match in chosen:
            break
        chosen.append(match)
    return [Gpu(i, g.name, g.capability, g.memory_gib, g.uuid) for i, g in enumerate(chosen)]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
