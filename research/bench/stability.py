"""Does SqueezeNet 1.0 train at the reference set-up? Short probes on a real tiny image set.

The reference optimiser (batch 128, 1,000 outputs, SGD lr 0.01, momentum 0.9, wd 2e-4, mean-
subtracted 0-255 pixels) on scikit-learn's digits upscaled to RGB, for each variant of the net
and of the first steps; each probe ends as "learns", "stalls", "dies" or "nan" at a step.
Results: docs/squeezenet-stability.md, made with tools/stability.py.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from ..config import TrainConfig
from ..data.digits import load_digits
from ..nets import get_net
from ..training import health
from ..training.schedules import lr_at


@dataclass(frozen=True)
class Variant:
    activation: str                # relu | elu, every conv including conv10
    init: str                      # caffe | xavier (net.init)
    warmup_steps: int = 0          # linear lr warm-up from 0 (train.warmup_epochs in a recipe)
    clip_gradient: float = 0.0     # element-wise, after rescaling (train.clip_gradient)
    input_scale: float = 1.0       # inputs divided by this after the mean (data.std in a recipe)
    conv10_normal: float = 0.0     # conv10 weights from N(0, this) instead of the init's own


# The book's network is elu/xavier; each departure below changes one thing about its first steps.
VARIANTS: dict[str, Variant] = {
    "relu/caffe": Variant("relu", "caffe"),
    "relu/xavier": Variant("relu", "xavier"),
    "elu/caffe": Variant("elu", "caffe"),
    "elu/xavier": Variant("elu", "xavier"),
    "elu/xavier+warmup": Variant("elu", "xavier", warmup_steps=100),
    "elu/xavier+clip": Variant("elu", "xavier", clip_gradient=0.1),
    "elu/xavier+std": Variant("elu", "xavier", input_scale=58.0),
    "elu/xavier+conv10": Variant("elu", "xavier", conv10_normal=0.01),
    "relu/caffe+warmup": Variant("relu", "caffe", warmup_steps=100),
}
CLASSES_USED = 10                  # digits 0-9 among the 1,000 outputs: chance is 10%
DEAD_STEPS = 25                    # steps in a row with the loss at ln(classes), after it was below: dead


def digits_rgb(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits upscaled to `size` px, grey copied to 3 channels, 0-255 minus the train set's mean."""
    x_train, y_train, x_val, y_val = load_digits(size)
    x_train, x_val = (np.repeat(x * 255.0, 3, axis=1) for x in (x_train, x_val))
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    return x_train - mean, y_train, x_val - mean, y_val


def probe(variant: Variant, seed: int, steps: int, size: int = 64, batch_size: int = 128,
          classes: int = 1000, lr: float = 0.01, eval_every: int = 25) -> dict:
    """Train SqueezeNet 1.0 for `steps` steps; return the outcome, its step and the loss curve."""
    x_train, y_train, x_val, y_val = digits_rgb(size)
    x_train, x_val = x_train / variant.input_scale, x_val / variant.input_scale
    mx.random.seed(seed)
    rng = np.random.RandomState(seed)
    net = get_net("squeezenet1.0", classes=classes, activation=variant.activation, init=variant.init)
    if variant.conv10_normal:
        net.output[1].weight.init = mx.init.Normal(variant.conv10_normal)
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))  # as the trainer does
    net.hybridize(static_alloc=True, static_shape=True)
    optimizer_params = {"learning_rate": lr, "momentum": 0.9, "wd": 2e-4}
    if variant.clip_gradient:
        optimizer_params["clip_gradient"] = variant.clip_gradient
    trainer = gluon.Trainer(net.collect_params(), "sgd", optimizer_params)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    steps_per_epoch = len(x_train) // batch_size
    schedule = TrainConfig(epochs=1000, lr=lr, batch_size=batch_size, lr_schedule="constant",
                           warmup_epochs=variant.warmup_steps / steps_per_epoch)
    losses, val_top1, order, tic = [], [], [], time.monotonic()
    for step in range(steps):
        if not len(order):
            order = rng.permutation(len(x_train))[:steps_per_epoch * batch_size].reshape(steps_per_epoch, -1)
        rows, order = order[0], order[1:]
        trainer.set_learning_rate(lr_at(step / steps_per_epoch, lr, schedule))
        with autograd.record():
            loss = loss_fn(net(mx.nd.array(x_train[rows])), mx.nd.array(y_train[rows]))
        loss.backward()
        trainer.step(batch_size)
        losses.append(float(loss.mean().asscalar()))
        if not math.isfinite(losses[-1]):
            break
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            top1, dead = _validate(net, x_val, y_val, batch_size)
            val_top1.append((step + 1, top1))
            print(f"  step {step + 1}: loss {losses[-1]:.3f}, val top-1 {top1:.3f}, dead {dead:.2f}", flush=True)
        start = _plateau_start(losses, classes)
        if (len(losses) - start >= DEAD_STEPS and start
                and min(losses[:start]) < math.log(classes) - health.CLEARLY_BELOW):
            break                                 # no gradient reaches the net any more: it never comes back
    outcome, at_step = classify(losses, val_top1, classes)
    return {"outcome": outcome, "step": at_step, "val_top1": val_top1[-1][1] if val_top1 else None,
            "losses": losses, "val": val_top1, "seconds": round(time.monotonic() - tic, 1)}


def classify(losses: list[float], val_top1: list[tuple[int, float]], classes: int) -> tuple[str, int | None]:
    """("nan" | "dies" | "learns" | "stalls", the step it happened at) from a probe's curves.

    nan: the last loss is not finite. dies: the loss ended at ln(classes) (every output equal) after
    having been clearly below it. learns: val top-1 above twice chance at the end (the step: when it
    first got there). stalls: none of these, e.g. the loss at the label prior ln(10).
    """
    if not math.isfinite(losses[-1]):
        return "nan", len(losses)
    start = _plateau_start(losses, classes)
    if start < len(losses) and start and min(losses[:start]) < math.log(classes) - health.CLEARLY_BELOW:
        return "dies", start + 1
    learned = [step for step, top1 in val_top1 if top1 > 2.0 / CLASSES_USED]
    if learned and val_top1[-1][1] > 2.0 / CLASSES_USED:
        return "learns", learned[0]
    return "stalls", None


def _validate(net: gluon.HybridBlock, x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float]:
    """(top-1, dead fraction of the outputs) over the validation images."""
    outs = np.concatenate([net(mx.nd.array(x[i:i + batch_size])).asnumpy() for i in range(0, len(x), batch_size)])
    top1 = float((outs.argmax(axis=1) == y).mean())
    return top1, health.dead_fraction(outs.min(axis=0).tolist(), outs.max(axis=0).tolist())


def _plateau_start(losses: list[float], classes: int) -> int:
    """Index of the first loss of the final run of losses at ln(classes) (len(losses) if none)."""
    start = len(losses)
    while start > 0 and abs(losses[start - 1] - math.log(classes)) <= health.CHANCE_TOLERANCE:
        start -= 1
    return start


def sweep(names: list[str], seeds: list[int], steps: int, size: int, out: Path) -> None:
    """Run every (variant, seed) not yet in `out` (JSON lines, one per probe, appended as each ends)."""
    done = set()
    if out.exists():
        done = {(r["variant"], r["seed"]) for r in map(json.loads, out.read_text().splitlines())}
    for name in names:
        for seed in seeds:
            if (name, seed) in done:
                continue
            result = probe(VARIANTS[name], seed, steps, size)
            record = {"variant": name, "seed": seed, "size": size, "steps": steps, **asdict(VARIANTS[name]), **result}
            with out.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"{name:<20} seed {seed}  {result['outcome']:<7} step {result['step']}  "
                  f"val top-1 {result['val_top1']}  ({result['seconds']} s)", flush=True)


def read_records(paths: list[Path]) -> list[dict]:
    """The probes of JSON lines files, outcome and step (re)derived by today's classify()."""
    records = [json.loads(line) for path in paths for line in path.read_text().splitlines()]
    for r in records:
        r["outcome"], r["step"] = classify(r["losses"], r["val"], 1000)
    return records


def table(records: list[dict]) -> str:
    """A markdown table: variant, seed, size, outcome and its step, last val top-1, highest and last train loss."""
    lines = ["| config | seed | px | steps | outcome | at step | val top-1 | highest loss | last loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        top1 = f"{r['val_top1']:.0%}" if r["val_top1"] is not None else "-"
        lines.append(f"| {r['variant']} | {r['seed']} | {r['size']} | {r['steps']} | {r['outcome']} | "
                     f"{r['step'] or '-'} | {top1} | {max(v for v in r['losses'] if math.isfinite(v)):.4g} | "
                     f"{r['losses'][-1]:.3f} |")
    return "\n".join(lines)


def plot_probe_curves(records: list[dict], path: str | Path, title: str = "") -> None:
    """Train loss against step, one panel per config, one line per seed; x marks where a run went NaN."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    configs = list(dict.fromkeys(r["variant"] for r in records))
    cols = min(3, len(configs))
    rows = -(-len(configs) // cols)
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, config in zip(axes, configs):
        for r in (r for r in records if r["variant"] == config):
            finite = [v if v == v and v != float("inf") else float("nan") for v in r["losses"]]
            (line,) = ax.plot(range(1, len(finite) + 1), finite, lw=1, label=f"seed {r['seed']}: {r['outcome']}")
            if r["outcome"] == "nan":
                ax.plot([r["step"]], [7.5], "x", color=line.get_color(), ms=9)
        ax.set(title=config, xlabel="step", ylabel="train loss", ylim=(0, 8))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(configs):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
