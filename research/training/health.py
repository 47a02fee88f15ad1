"""A guard against a dead or stalled head: checks run once an epoch, after validation.

A ReLU in front of SqueezeNet's global pool can be pushed below zero for every input by one
large step; from then on every logit is 0, no gradient flows and the loss sits at exactly
ln(classes) for the rest of the run (docs/squeezenet-stability.md). These checks make such a
run stop (the loop raises DeadHead, an Unhealthy as a NaN loss is) instead of running for days.
"""
from __future__ import annotations

import math

CHANCE_TOLERANCE = 1e-3   # |train loss - ln(classes)| below this: the net predicts the uniform distribution
CLEARLY_BELOW = 0.1       # a train loss this far under ln(classes) shows the net had learned something
CONSTANT_TOLERANCE = 1e-6  # an output whose range over the validation pass is below this (relative) is constant


class Unhealthy(RuntimeError):
    """Training on would not recover: the run stops (exit status 3), its last good checkpoint kept."""


class NonFiniteLoss(Unhealthy):
    """The training loss became NaN or infinite."""


class DeadHead(Unhealthy):
    """The net's outputs stopped carrying information."""


def dead_fraction(low: list[float], high: list[float]) -> float:
    """Share of output units whose value was the same for every validation image.

    Args:
        low, high: each output unit's smallest and largest value over the validation pass.
    """
    constant = [hi - lo <= CONSTANT_TOLERANCE * max(1.0, abs(hi)) for lo, hi in zip(low, high)]
    return sum(constant) / max(len(constant), 1)


def at_chance(top1: float, classes: int) -> bool:
    """Top-1 no better than twice the uniform guess 1 / classes."""
    return top1 <= 2.0 / classes


def check(history: list[dict[str, float]], classes: int, chance_epochs: int) -> str:
    """Why the run should stop ("" if it is healthy), from the per-epoch metrics so far.

    Args:
        history: the loop's per-epoch metrics, the epoch just validated last (train/loss,
            val/top1, health/dead_fraction).
        chance_epochs: stop if val top-1 is still at chance after this many epochs; 0: never.
    """
    last, uniform = history[-1], math.log(classes)
    if last["health/dead_fraction"] >= 1.0:
        return (f"every output of the net had the same value for every validation image at epoch "
                f"{last['epoch']}: the head is dead (with a ReLU before the pool: all logits 0)")
    was_below = any(entry["train/loss"] < uniform - CLEARLY_BELOW for entry in history[:-1])
    if was_below and abs(last["train/loss"] - uniform) <= CHANCE_TOLERANCE:
        return (f"the train loss sat at ln({classes}) = {uniform:.4f} for all of epoch {last['epoch']} after "
                f"having been below it: the net predicts the uniform distribution (a dead or stalled head)")
    if chance_epochs and last["epoch"] >= chance_epochs and at_chance(last["val/top1"], classes):
        return (f"val top-1 is {last['val/top1']:.4f} after {last['epoch']} epochs, still at chance "
                f"(1/{classes}; train.chance_epochs = {chance_epochs})")
    return ""


def advice(activation: str) -> str:
    """What to change before training again, for a net with this activation after its convolutions."""
    if activation == "elu":
        return ("Scale the inputs (data.std), lower train.lr, add a warm-up (train.warmup_epochs) or clip "
                "gradients (train.clip_gradient); docs/squeezenet-stability.md measured each.")
    return ("Lower train.lr, add a warm-up (train.warmup_epochs) or use net.activation: elu "
            "(docs/squeezenet-stability.md).")
