"""Is an image like the ones the model trained on? The training images' brightness (their mean pixel in the
net's input space) is kept with the exported model (input_stats.json); tools/predict.py and Run.predict warn
about an image far from it, and say to invert one that is light where the training images were dark.

A digit model trained on light strokes on black answers a dark-on-white "3" with a confident "4": the image
is nothing like its data, and the probabilities do not say so.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import DigitsData, MnistData, Recipe

FILE = "input_stats.json"
FAR = 4.0                     # standard deviations from the training images' mean brightness, and outside their range


class UnusualInput(UserWarning):
    """An image unlike the training images: the prediction says little about it."""


def training_stats(recipe: Recipe) -> dict | None:
    """The mean brightness of the training images (values in [0, 1], as the net sees them): mean, std and the
    0.1 / 99.9 percentiles over the images. Digits and MNIST only (the arrays are in memory); None otherwise."""
    data = recipe.data
    try:
        if isinstance(data, DigitsData):
            from ..data.digits import load_digits
            x = load_digits(data.size, data.val_fraction, data.split_seed)[0]
        elif isinstance(data, MnistData):
            from ..data.mnist import load_mnist
            x = load_mnist(data.root, download=False)[0]
        else:
            return None
    except Exception:  # noqa: BLE001 - the model is exported all the same, without the check
        return None
    means = x.reshape(len(x), -1).mean(axis=1)
    return {"images": int(len(x)), "brightness": {"mean": float(means.mean()), "std": float(means.std()),
                                                  "low": float(np.percentile(means, 0.1)),
                                                  "high": float(np.percentile(means, 99.9))}}


def read_stats(model_folder: Path) -> dict | None:
    try:
        return json.loads((Path(model_folder) / FILE).read_text())
    except (OSError, ValueError):
        return None


def unusual(x: np.ndarray, stats: dict | None) -> str:
    """Why the preprocessed image `x` (1, C, H, W in [0, 1]) is far from the training images, '' if it is not."""
    if not stats:
        return ""
    b = stats["brightness"]
    mean = float(x.mean())
    if abs(mean - b["mean"]) <= FAR * max(b["std"], 1e-3) or b["low"] <= mean <= b["high"]:
        return ""
    text = (f"its mean brightness {mean:.2f} is far from the training images' ({b['mean']:.2f} +- {b['std']:.2f}, "
            f"all but 0.1% between {b['low']:.2f} and {b['high']:.2f})")
    if b["low"] <= 1 - mean <= b["high"]:
        dark = b["mean"] < 0.5
        return text + (f": the model was trained on {'light' if dark else 'dark'} strokes on a "
                       f"{'dark' if dark else 'light'} background and this image is the other way round. Invert it "
                       f"(255 - pixels) before predicting; as it is, the prediction says little.")
    return text + "; the prediction says little about it."
