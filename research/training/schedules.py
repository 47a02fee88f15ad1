"""Learning-rate schedules as pure functions of progress; the loop sets the lr every step."""
from __future__ import annotations

import math

from ..config import TrainConfig


def scaled_lr(train: TrainConfig, global_batch: int) -> float:
    """The linear scaling rule (Goyal et al. 2017): lr grows with the global batch."""
    base = train.base_batch_size or train.batch_size
    return train.lr * global_batch / base


def lr_at(epoch: float, base_lr: float, train: TrainConfig) -> float:
    """lr at fractional epoch `epoch` (step / steps_per_epoch) for the recipe's schedule.

    Warmup ramps linearly from 0 over `warmup_epochs`, then the schedule applies
    over the full run (step drops at absolute epochs; cosine and poly over the epochs after warmup).
    """
    if epoch < train.warmup_epochs:
        return base_lr * epoch / train.warmup_epochs
    if train.lr_schedule == "constant":
        return base_lr
    if train.lr_schedule == "step":
        drops = sum(1 for boundary in train.lr_steps if epoch >= boundary)
        return base_lr * train.lr_factor ** drops
    progress = (epoch - train.warmup_epochs) / max(train.epochs - train.warmup_epochs, 1e-12)
    progress = min(max(progress, 0.0), 1.0)
    if train.lr_schedule == "cosine":
        return base_lr * 0.5 * (1 + math.cos(math.pi * progress))
    if train.lr_schedule == "poly":
        return base_lr * (1 - progress) ** train.lr_power
    raise ValueError(f"unknown lr_schedule {train.lr_schedule!r}")
