"""Mixed precision (train.amp) through mxnet.contrib.amp: convolutions and matrix products in float16 (GPUs)
or bfloat16 (CPUs with oneDNN), float32 weights, and AMP's dynamic loss scale, whose state checkpoints keep.

What MXNet 1.9.1 does, measured on the CPU wheel: `amp.init(target_dtype)` rewrites MXNet's operator
functions for the whole process, for good (a HybridBlock built after it gets amp_cast nodes around each
Convolution and FullyConnected; its parameters stay float32). `amp.init_trainer` gives the Trainer a
LossScaler (2**16 at first, halved on every step whose gradients hold inf/NaN, which Trainer.step then
skips, doubled after 2000 clean steps, at most 2**24); bfloat16 goes through the same scaler. With
bfloat16 the ELU stays in bfloat16 (see init); otherwise AMP's own operator lists apply.
"""
from __future__ import annotations

import logging

from mxnet import gluon

from ..config import RecipeError

log = logging.getLogger("research.training")
_initialized: list[str] = []          # the target dtype amp.init was given in this process, if any


def init(amp: str) -> None:
    """amp.init(target_dtype=amp) for train.amp float16/bfloat16, before any net is built; "off": nothing.

    Raises:
        RecipeError: this process already initialised AMP with another dtype, or runs "off" after AMP:
            amp.init cannot be undone, and every net built after it is cast.
    """
    if _initialized and _initialized[0] != amp:
        raise RecipeError(f"train.amp {amp}: this process already trained with train.amp {_initialized[0]}, and "
                          f"MXNet's amp.init changes every net built after it, for good: run this recipe in a new "
                          f"process (in a notebook: restart the kernel).")
    if amp == "off" or _initialized:
        return
    from mxnet.contrib import amp as mx_amp
    from mxnet.contrib.amp.lists import symbol_bf16
    conditional = None                           # float16: AMP's own lists
    if amp == "bfloat16":
        # AMP's lists run LeakyReLU's ELU in float32, so the ELU nets cast each convolution's output up and
        # the next one's input back down. That guards float16's range; bfloat16 has float32's, so here the ELU
        # stays in bfloat16 (oneDNN has it): ELU SqueezeNet 1.0 at 224 px, batch 32, trained at 46 img/s
        # against 34 with AMP's lists (float32: 29), measured in alternating processes on this CPU.
        conditional = [op for op in symbol_bf16.CONDITIONAL_FP32_FUNCS if op[0] != "LeakyReLU"]
    mx_amp.init(target_dtype=amp, conditional_fp32_ops=conditional)
    _initialized.append(amp)


def attach_scaler(trainer: gluon.Trainer, amp: str) -> None:
    """Give the trainer AMP's dynamic loss scaler (train.amp on); the Trainer must update locally
    (`update_on_kvstore=False`): with the kvstore updating, an overflowing step could not be skipped."""
    if amp == "off":
        return
    from mxnet.contrib import amp as mx_amp
    mx_amp.init_trainer(trainer)


def has_scaler(trainer: gluon.Trainer) -> bool:
    return getattr(trainer, "_amp_loss_scaler", None) is not None


def scale(losses: list, trainer: gluon.Trainer) -> list:
    """The losses times the loss scale (inside autograd.record: the product is part of the graph) and the
    trainer set to divide the gradients by it again; the losses themselves without a scaler."""
    if not has_scaler(trainer):
        return losses
    from mxnet.contrib import amp as mx_amp
    with mx_amp.scale_loss(losses, trainer) as scaled:
        return scaled


def skipped(trainer: gluon.Trainer) -> bool:
    """True when the last trainer.step found inf/NaN gradients and left the weights as they were.

    AMP's LossScaler keeps no flag; it halves its next scale on an overflow and only then, so the
    next scale below the current one tells (its check already synced on the gradients: no extra wait).
    """
    if not has_scaler(trainer):
        return False
    scaler = trainer._amp_loss_scaler
    return scaler._next_loss_scale < scaler._loss_scale


def loss_scale(trainer: gluon.Trainer) -> float:
    """The scale the next step's loss is multiplied by (1.0 without a scaler)."""
    return float(trainer._amp_loss_scaler._next_loss_scale) if has_scaler(trainer) else 1.0


def scaler_state(trainer: gluon.Trainer) -> dict | None:
    """The LossScaler's state for a checkpoint: a resumed run goes on with the same scale and count of
    clean steps towards the next doubling. None without a scaler."""
    if not has_scaler(trainer):
        return None
    scaler = trainer._amp_loss_scaler
    return {"loss_scale": scaler._loss_scale, "next_loss_scale": scaler._next_loss_scale,
            "unskipped": scaler._unskipped}


def load_scaler_state(trainer: gluon.Trainer, state: dict | None) -> None:
    """Restore `scaler_state`'s dict; a checkpoint without one (written before train.amp was on, or by an
    older version) leaves the scaler at its start, 2**16."""
    if not has_scaler(trainer):
        return
    if state is None:
        log.warning("the checkpoint holds no loss-scaler state: AMP's loss scale starts again at %g",
                    trainer._amp_loss_scaler._loss_scale)
        return
    scaler = trainer._amp_loss_scaler
    scaler._loss_scale, scaler._next_loss_scale = state["loss_scale"], state["next_loss_scale"]
    scaler._unskipped = state["unskipped"]
