"""Epoch time, remaining time and cost from training rates: the arithmetic that `tools/benchmark.py plan`
and the trainer's report (log line, status.json, MLflow pace tags) share. Pure functions, no MXNet."""
from __future__ import annotations

# SqueezeNet 1.0 on ImageNet, batch 128 on one GPU (the reference run): minutes per epoch
REFERENCE_MIN_PER_EPOCH = {"K80": 140.0, "V100": 28.0}
DATA_WAIT_WARNING = 0.25     # warn when the devices wait on data for more than this share of the time


def epoch_seconds(epoch_images: int, global_batch: int, img_per_s: float) -> float:
    """Training seconds of one epoch: the iterators give full batches only (the last partial one is dropped)."""
    steps = epoch_images // global_batch
    return steps * global_batch / img_per_s


def remaining_s(epochs: int, done_epochs: int, batch_in_epoch: int, steps_per_epoch: int, epoch_s: float,
                batch_s: float) -> float:
    """Seconds until the run's last epoch ends: the rest of the epoch under way (`batch_in_epoch` of
    `steps_per_epoch` batches done, `batch_s` each), then every epoch still to start at `epoch_s`.

    The one remaining-time formula: the epoch log line, status.json, MLflow's pace tags and `plan` use it.
    """
    rest_of_epoch = (steps_per_epoch - batch_in_epoch) * batch_s if batch_in_epoch else 0.0
    still_to_start = max(epochs - done_epochs - (1 if batch_in_epoch else 0), 0)
    return rest_of_epoch + still_to_start * epoch_s


def run_estimate(epoch_images: int, global_batch: int, img_per_s: float, epochs: int,
                 price_per_hour: float | None = None, done_epochs: int = 0) -> dict[str, float | None]:
    """{"epoch_s", "run_s", "cost"} for the epochs still to train; cost is None without a price."""
    epoch_s = epoch_seconds(epoch_images, global_batch, img_per_s)
    steps = epoch_images // global_batch
    run_s = remaining_s(epochs, done_epochs, 0, steps, epoch_s, global_batch / img_per_s)
    cost = None if price_per_hour is None else run_s / 3600 * price_per_hour
    return {"epoch_s": epoch_s, "run_s": run_s, "cost": cost}


def bottleneck(data_img_per_s: float, model_img_per_s: float, together_img_per_s: float) -> dict[str, float | str]:
    """Which side sets the pace, by how much, and the devices' idle share when both run together.

    "data" when the pipeline alone delivers fewer images/s than the model alone trains on,
    else "devices". `margin` is the faster side's rate over the slower one's; `devices_idle`
    is 1 - together / model: the share of time the devices wait (on data, or on the CPU they
    share with the decoders when the model runs on the CPU).
    """
    side = "data" if data_img_per_s < model_img_per_s else "devices"
    margin = max(data_img_per_s, model_img_per_s) / min(data_img_per_s, model_img_per_s)
    idle = min(max(1.0 - together_img_per_s / model_img_per_s, 0.0), 1.0)
    return {"bottleneck": side, "margin": margin, "devices_idle": idle}

