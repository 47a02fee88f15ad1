"""Contexts from `--gpus`, checked before any heavy work; CPU threads for MXNet's OpenMP."""
from __future__ import annotations

import os

from .builds import gpu_problem
from .errors import UserError
from .gpu.installed import installed_mxnet
from .gpu.machine import probe
from .gpu.verdict import kernel_verdict


class DeviceError(UserError):
    """`--gpus` asks for something this machine or MXNet build cannot give."""


def set_cpu_threads() -> int:
    """OMP_NUM_THREADS = all cores unless the user chose; MXNet alone would use half.

    Must run before mxnet is imported: its OpenMP pool reads the variable once.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    return int(os.environ["OMP_NUM_THREADS"])


def parse_gpus(spec: str | None) -> list[int]:
    """'0,1' -> [0, 1]; None (no --gpus) -> [] (CPU). An empty `--gpus ''` is an error, not the CPU."""
    if spec is None:
        return []
    if not spec.replace(",", "").strip():
        raise DeviceError(f"--gpus {spec!r}: no GPU ids given; pass ids such as 0,1, or omit --gpus for the CPU")
    try:
        ids = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise DeviceError(f"--gpus {spec!r}: expected comma-separated GPU ids such as 0,1") from None
    if len(set(ids)) != len(ids) or any(i < 0 for i in ids):
        raise DeviceError(f"--gpus {spec!r}: ids must be distinct and non-negative")
    return ids


def get_contexts(spec: str | None) -> list:
    """[mx.gpu(i), ...] for `--gpus`, [mx.cpu()] without it; DeviceError if the GPUs are not there."""
    import mxnet as mx

    ids = parse_gpus(spec)
    if not ids:
        return [mx.cpu()]
    if not mx.runtime.Features().is_enabled("CUDA"):
        raise DeviceError(gpu_problem(spec))
    try:
        available = mx.context.num_gpus()
    except mx.base.MXNetError as err:         # e.g. "CUDA driver version is insufficient for CUDA runtime"
        raise DeviceError(gpu_problem(spec) or f"--gpus {spec}: MXNet could not count the GPUs "
                                               f"({str(err).strip().splitlines()[0]}). Check nvidia-smi.") from None
    missing = [i for i in ids if i >= available]
    if missing:           # a CUDA build counts 0 GPUs when the driver is missing or too old for it
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = ("no GPU is visible to MXNet" if available == 0 else
                 f"GPU {missing[0]} does not exist; this machine has {available} GPU(s) (ids 0..{available - 1})")
        raise DeviceError((available == 0 and gpu_problem(spec)) or f"--gpus {spec}: {where}. Check nvidia-smi"
                          + (f" and CUDA_VISIBLE_DEVICES={hidden!r}." if hidden is not None else "."))
    refused = kernel_refusal(ids)
    if refused:
        raise DeviceError(f"--gpus {spec}: {refused}")
    return [mx.gpu(i) for i in ids]


def kernel_refusal(ids: list[int]) -> str | None:
    """tools/doctor.py's kernel check for the GPUs asked for: a GPU whose compute capability the installed
    libmxnet.so has no kernels for is refused now, not by a CUDA error in the first batch."""
    mxnet = installed_mxnet()
    gpus = [gpu for gpu in probe().gpus if gpu.index in ids]
    verdict = kernel_verdict(mxnet, gpus) if mxnet is not None else None
    return f"{verdict.problem}. Fix: {verdict.fix}" if verdict else None
