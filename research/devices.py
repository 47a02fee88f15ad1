"""Contexts from `--gpus`, checked before any heavy work; CPU threads for MXNet's OpenMP."""
from __future__ import annotations

import os

from .errors import UserError


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
        raise DeviceError(f"--gpus {spec}: this MXNet ({mx.__version__}) is a CPU-only build. Install the "
                          f"CUDA build (pip uninstall mxnet && pip install mxnet-cu112==1.9.1) or drop --gpus.")
    available = mx.context.num_gpus()
    missing = [i for i in ids if i >= available]
    if missing:
        raise DeviceError(f"--gpus {spec}: GPU {missing[0]} does not exist; this machine has {available} "
                          f"GPU(s) (ids 0..{available - 1}). Check nvidia-smi and CUDA_VISIBLE_DEVICES.")
    return [mx.gpu(i) for i in ids]
