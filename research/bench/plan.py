"""`tools/benchmark.py plan`: before a long run, measure on the recipe's own data, devices and
augmentation the data pipeline alone, the model alone and both together, name the bottleneck,
and turn the rate into epoch time, run time and cost.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import mxnet as mx

from ..config import RecordData, Recipe
from .data import measure_rate
from ..data.recordio import cpu_cores
from ..preflight import check_recipe
from .train import BareLoop
from ..durations import format_duration
from ..training.estimate import REFERENCE_MIN_PER_EPOCH, bottleneck, run_estimate
from ..training.job import build_setup


def plan(recipe: Recipe, ctxs: list[mx.Context], seconds: float = 60.0, price_per_hour: float | None = None,
         epoch_images: int | None = None, on_progress: Callable[[], None] = lambda: None) -> dict:
    """Measure for about `seconds` (a third per figure) and estimate the recipe's run.

    `epoch_images` replaces the train set's size (e.g. 1281167 when measuring ImageNet's
    shape on a small generated set). `on_progress()` is called after every batch measured.
    Returns the figures `format_plan` prints (the JSON of `--format json`).
    """
    if recipe.train.kvstore.startswith("dist"):     # one machine's share: plan measures this machine
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, kvstore="device"))
    check_recipe(recipe, ctxs)
    share = seconds / 3
    with tempfile.TemporaryDirectory(prefix="plan-") as run_dir:
        setup = build_setup(recipe, ctxs, Path(run_dir), recipe.train.kvstore)
        bare = BareLoop(setup)
        # model first: then the data phase drains what the iterator prefetched meanwhile, and
        # "together" starts on an empty prefetch queue, as in a run's steady state
        model = _steps_rate(bare.step, setup.global_batch, share, on_progress)
        data, per_cpu_s = measure_rate(setup.train_iter, setup.global_batch, share, on_batch=on_progress)
        together = _steps_rate(lambda: bare.step(_next(setup.train_iter)), setup.global_batch, share, on_progress)
        num_samples = setup.train_iter.num_samples
    images = epoch_images or num_samples
    result = {
        "recipe": recipe.name, "devices": ",".join(map(str, ctxs)), "cores": cpu_cores(),
        "load_average": round(os.getloadavg()[0], 1),     # other jobs on the machine make every figure noisy
        "global_batch": setup.global_batch, "epoch_images": images, "epochs": recipe.train.epochs,
        "seconds_per_figure": round(share, 1),
        "data_img_per_s": round(data, 1), "model_img_per_s": round(model, 1), "together_img_per_s": round(together, 1),
        "data_busy_cores": round(data / per_cpu_s, 2),
        **{key: round(value, 3) if isinstance(value, float) else value
           for key, value in bottleneck(data, model, together).items()},
        **{key: None if value is None else round(value, 2)
           for key, value in run_estimate(images, setup.global_batch, together, recipe.train.epochs,
                                          price_per_hour).items()},
        "price_per_hour": price_per_hour, "reference_min_per_epoch": REFERENCE_MIN_PER_EPOCH,
    }
    result["lift"] = lift_hint(recipe, ctxs, result)
    return result


def _next(batches: mx.io.DataIter) -> mx.io.DataBatch:
    try:
        return batches.next()
    except StopIteration:
        batches.reset()
        return batches.next()


def _steps_rate(step: Callable[[], list[mx.nd.NDArray]], batch: int, seconds: float,
                on_progress: Callable[[], None], warmup: int = 2, least: int = 2) -> float:
    """Images/s of `step()` over about `seconds` (at least `least` steps after `warmup`).

    Each step waits for the previous one's losses: the queue stays one step deep, as MXNet's
    asynchronous engine would otherwise take every step at once and the clock would mean nothing.
    """
    pending: list[mx.nd.NDArray] = []
    for _ in range(warmup):
        pending = step()
    mx.nd.waitall()
    start = time.perf_counter()
    steps = 0
    while steps < least or time.perf_counter() - start < seconds:
        losses = step()
        for loss in pending:
            loss.wait_to_read()
        pending, steps = losses, steps + 1
        on_progress()
    mx.nd.waitall()
    return steps * batch / (time.perf_counter() - start)


def lift_hint(recipe: Recipe, ctxs: list[mx.Context], figures: dict) -> str:
    """One line on what would lift the bottleneck."""
    on_cpu = all(c.device_type == "cpu" for c in ctxs)
    if figures["bottleneck"] == "devices":
        if on_cpu:
            return "the model trains on the CPU: run on GPUs (--gpus 0 with a CUDA build, docs/long-runs.md)."
        return (f"the data could feed {figures['margin']:.1f}x more: more GPUs (--gpus 0,1,...), float16 "
                f"(train.dtype: float16, multi-precision SGD) or faster GPUs.")
    data, cores = recipe.data, figures["cores"]
    if not isinstance(data, RecordData):
        return f"the {data.kind} data is made in Python: use RecordIO data (tools/build_rec.py) for long runs."
    threads = data.preprocess_threads or cores
    if threads < cores:
        return f"decode on every core: data.preprocess_threads: 0 (now {threads} of {cores} cores)."
    if figures["data_busy_cores"] < 0.5 * cores and figures["load_average"] > cores:
        return (f"the decoders got only {figures['data_busy_cores']:.1f} of {cores} cores: other processes hold "
                f"them (load average {figures['load_average']:.1f}); stop those, or plan again on an idle machine.")
    if figures["data_busy_cores"] < 0.5 * cores:
        return (f"the decoders kept only {figures['data_busy_cores']:.1f} of {cores} cores busy: they wait on "
                f"reads, so a faster disk (local SSD, or the .rec copied to RAM / page cache).")
    crop = max(data.data_shape[1:])
    return (f"decoding keeps all {cores} cores busy: more CPU cores, or smaller images to decode "
            f"(tools/build_rec.py --resize {crop + crop // 8} and data.train_resize: -1; now "
            f"{data.train_resize if data.train_resize > 0 else 'as stored'}).")


def format_plan(figures: dict) -> str:
    """The text `tools/benchmark.py plan` prints."""
    f = figures
    lines = [
        f"plan for {f['recipe']} on {f['devices']} ({f['cores']} CPU cores, load average {f['load_average']:.1f}), "
        f"global batch {f['global_batch']}, "
        f"{f['epochs']} epochs of {f['epoch_images']:,} images; {f['seconds_per_figure']:.0f} s per figure:",
        f"  data pipeline alone (decode + augment)  {f['data_img_per_s']:>9.1f} img/s",
        f"  model alone (synthetic input)           {f['model_img_per_s']:>9.1f} img/s",
        f"  both together                           {f['together_img_per_s']:>9.1f} img/s",
    ]
    slower, faster = (("the data pipeline", "the model alone") if f["bottleneck"] == "data"
                      else ("the devices (the model)", "the data pipeline alone"))
    lines.append(f"bottleneck: {slower}; {faster} is {f['margin']:.1f}x faster. With both running the devices "
                 f"are idle {100 * f['devices_idle']:.0f}% of the time")
    cost = f", ${f['cost']:,.2f} at ${f['price_per_hour']:g}/h" if f["cost"] is not None else ""
    lines.append(f"estimate: epoch {format_duration(f['epoch_s'])} (training only), {f['epochs']} epochs "
                 f"{format_duration(f['run_s'])}{cost}")
    reference = ", ".join(f"{gpu} {minutes:.0f} min" for gpu, minutes in f["reference_min_per_epoch"].items())
    lines.append(f"reference (SqueezeNet 1.0, ImageNet, batch 128, one GPU) per epoch: {reference}")
    lines.append(f"to lift it: {f['lift']}")
    return "\n".join(lines)
