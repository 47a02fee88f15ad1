"""The guard: after every validation pass, rules that stop a run that would not recover.

A ReLU in front of SqueezeNet's global pool can be pushed below zero for every input by one
large step; from then on every logit is 0, no gradient flows and the loss sits at exactly
ln(classes) for the rest of the run (docs/squeezenet-stability.md); an ELU head can saturate at -1
the same way. A net can also just stall: its accuracy at chance while its loss stops falling. These
rules make such a run stop (the loop raises DeadHead, an Unhealthy as a NaN loss is) instead of
running for days. Chance is counted from the labels the data holds, not from net.classes: a head
of 1,000 outputs trained on 10 labels is at chance at 10%, not 0.1%.
"""
from __future__ import annotations

import math

from ..metrics import DEAD_FRACTION, TRAIN_LOSS, VAL_TOP1

CHANCE_TOLERANCE = 1e-3   # |train loss - ln(classes)| below this: the net predicts the uniform distribution
CLEARLY_BELOW = 0.1       # a train loss this far under ln(classes) shows the net had learned something
CONSTANT_TOLERANCE = 1e-6  # an output whose range over the validation pass is below this (relative) is constant
STALL_FALL = 0.01         # the stall rule: a train loss that fell by less than this share over train.stall_epochs


class Unhealthy(RuntimeError):
    """Training on would not recover: the run stops (exit status 3), its last good checkpoint kept."""


class NonFiniteLoss(Unhealthy):
    """The training loss became NaN or infinite."""


class DeadHead(Unhealthy):
    """The net's outputs stopped carrying information, or it stalled at chance."""


class Overflowing(Unhealthy):
    """train.amp: step after step had inf/NaN gradients and was skipped by the loss scaler."""


# train.amp: updates skipped in a row before the run stops. AMP halves the loss scale at each: 20 take it from
# 2**16 to 1/16, where gradients that still overflow float16 (or are NaN in bfloat16, float32's range) will not
# come back by scaling; usually the weights or the data already hold NaN, and every later step would be skipped.
MAX_SKIPPED_IN_A_ROW = 20


def dead_fraction(low: list[float], high: list[float]) -> float:
    """Share of output units whose value was the same for every validation image.

    Args:
        low, high: each output unit's smallest and largest value over the validation pass.
    """
    constant = [hi - lo <= CONSTANT_TOLERANCE * max(1.0, abs(hi)) for lo, hi in zip(low, high)]
    return sum(constant) / max(len(constant), 1)


def chance_ceiling(labels: int) -> float:
    """The val top-1 at or below which a net counts as guessing: twice the uniform guess 1/labels, and for
    few labels no more than a tenth of the way from chance to perfect (2 labels: 55%, not 100%)."""
    chance = 1.0 / labels
    return min(2.0 * chance, chance + 0.1 * (1.0 - chance))


def check(history: list[dict[str, float]], classes: int, labels: int | None, chance_epochs: int = 0,
          stall_epochs: int = 0, head_activation: str | None = None) -> str:
    """Why the run should stop ("" if it is healthy), naming the rule and its figures.

    Args:
        history: the loop's per-epoch metrics, the epoch just validated last (train/loss,
            val/top1, health/dead_fraction).
        classes: the net's outputs (net.classes): the uniform prediction's loss is ln(classes).
        labels: the distinct labels the training data holds, from which chance is counted; None for
            random labels (synthetic data): nothing to learn, so the two rules that expect learning are off.
        chance_epochs: stop if val top-1 is still at chance after this many epochs; 0: never.
        stall_epochs: stop if val top-1 has been at chance for this many epochs in a row while the train
            loss fell by less than STALL_FALL over them or is no better than the label prior's ln(labels); 0: never.
        head_activation: what follows SqueezeNet's conv10 (relu | elu), named in the dead-head rule.
    """
    last, uniform = history[-1], math.log(classes)
    if last[DEAD_FRACTION] >= 1.0:
        why = {"relu": "conv10's ReLU is 0 for every image, so every logit is 0",
               "elu": "conv10's ELU is saturated at -1 for every image, so every logit is the same"}
        return (f"dead head (rule: every output constant): every one of the net's {classes} outputs had the same "
                f"value for every validation image at epoch {last['epoch']} "
                f"({why.get(head_activation, 'the outputs no longer depend on the input')})")
    lowest = min(entry[TRAIN_LOSS] for entry in history[:-1]) if len(history) > 1 else math.inf
    if lowest < uniform - CLEARLY_BELOW and abs(last[TRAIN_LOSS] - uniform) <= CHANCE_TOLERANCE:
        return (f"dead head (rule: uniform output): the train loss sat at ln({classes}) = {uniform:.4f} for all of "
                f"epoch {last['epoch']} ({last['train/loss']:.4f}) after having been {lowest:.4f}: the net predicts "
                f"the uniform distribution")
    if labels is None:
        return ""
    ceiling = chance_ceiling(labels)
    if chance_epochs and last["epoch"] >= chance_epochs and last[VAL_TOP1] <= ceiling:
        return (f"no learning (rule: at chance after train.chance_epochs = {chance_epochs}): val top-1 is "
                f"{last['val/top1']:.4f} after {last['epoch']} epochs, at chance for the {labels} labels the data "
                f"holds (<= {ceiling:.4f})")
    window = history[-stall_epochs - 1:] if stall_epochs else []
    if len(window) == stall_epochs + 1 and all(entry[VAL_TOP1] <= ceiling for entry in window[1:]):
        before, now, prior = window[0][TRAIN_LOSS], last[TRAIN_LOSS], math.log(labels)
        flat, above_prior = now > before * (1.0 - STALL_FALL), now > prior - CLEARLY_BELOW
        if flat or above_prior:
            top1 = [entry[VAL_TOP1] for entry in window[1:]]
            loss = (f"the train loss went from {before:.4f} to {now:.4f} ({(now - before) / before:+.1%})"
                    + (f", no better than the label prior's ln({labels}) = {prior:.4f}" if above_prior else ""))
            return (f"stalled (rule: at chance for train.stall_epochs = {stall_epochs}): val top-1 "
                    f"{min(top1):.4f}-{max(top1):.4f} over epochs {window[1]['epoch']}-{last['epoch']}, at chance for "
                    f"the {labels} labels the data holds (<= {ceiling:.4f}), and {loss}")
    return ""


def check_overflows(skipped_in_a_row: int, loss_scale: float, step: int) -> str:
    """Why the run should stop ("" if it should go on) after `skipped_in_a_row` updates in a row that AMP's
    loss scaler skipped for inf/NaN gradients (one such step is normal: it is how the scale is found)."""
    if skipped_in_a_row < MAX_SKIPPED_IN_A_ROW:
        return ""
    return (f"the last {skipped_in_a_row} steps (to step {step}) all had inf/NaN gradients and were skipped by "
            f"AMP's loss scaler, whose scale is down to {loss_scale:g}: the gradients are not finite at any scale "
            f"(weights or data holding NaN, or a diverged run). Lower train.lr, add train.clip_gradient, or use "
            f"train.amp: bfloat16 (float32's range) or off; the last good checkpoint is kept")


def advice(head_activation: str | None) -> str:
    """What to change before training again, for a net with this activation after its convolutions."""
    if head_activation == "elu":
        return ("Scale the inputs (data.std), lower train.lr, add a warm-up (train.warmup_epochs) or clip "
                "gradients (train.clip_gradient); docs/squeezenet-stability.md measured each.")
    if head_activation == "relu":
        return ("Lower train.lr, add a warm-up (train.warmup_epochs), clip gradients (train.clip_gradient) or use "
                "net.activation: elu (docs/squeezenet-stability.md).")
    return "Lower train.lr, add a warm-up (train.warmup_epochs) or check the data and its labels."
