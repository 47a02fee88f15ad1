"""Deployable models: the hybridized net as MXNet symbol + params and as ONNX, with its class names.

Everything lands in one folder (the run's model/), self-contained: the recipe that says how to
preprocess an image and classes.json that names the outputs travel with the weights.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import mxnet as mx
from mxnet import gluon

from .. import atomic
from ..config import DigitsData, MnistData, RecordData, Recipe, SyntheticData, dump_recipe
from .input_check import FILE as INPUT_STATS, training_stats

log = logging.getLogger(__name__)
# The model folder's own files: it is copied to where it serves, away from its run directory.
RECIPE = "recipe.yaml"            # the deployable recipe (its preprocessing); RUN_DIR/recipe.yaml has the same name
CLASSES = "classes.json"


def export_model(net: gluon.HybridBlock, folder: str | Path, recipe: Recipe) -> list[Path]:
    """Write <net>-symbol.json, <net>-0000.params, <net>.onnx, recipe.yaml, classes.json and (digits, MNIST)
    input_stats.json, the training images' brightness.

    The net must have run forward once hybridized (the trainer's warm-up does that). ONNX
    export and the class names are best effort: a failure there is logged as a warning and
    leaves the MXNet files in place. Returns the files written.
    """
    folder = Path(folder)
    with atomic.writing_dir(folder) as tmp:       # never a half-written model folder, even on a full disk
        written = _write_model(net, tmp, recipe)
    final = [folder / path.name for path in written]
    log.info("model exported to %s: %s", folder, ", ".join(path.name for path in final))
    return final


def _write_model(net: gluon.HybridBlock, folder: Path, recipe: Recipe) -> list[Path]:
    prefix = folder / recipe.net.name
    net.export(str(prefix), epoch=0)
    written = [Path(f"{prefix}-symbol.json"), Path(f"{prefix}-0000.params")]
    (folder / RECIPE).write_text(dump_recipe(deployable_recipe(recipe)))
    written.append(folder / RECIPE)
    onnx_path = export_onnx(prefix, input_shape(recipe), recipe.train.dtype)
    if onnx_path is not None:
        written.append(onnx_path)
    names = class_names(recipe)
    if names is not None:
        (folder / CLASSES).write_text(json.dumps(names, indent=1))
        written.append(folder / CLASSES)
    stats = training_stats(recipe)                 # what tools/predict.py compares an image with
    if stats is not None:
        (folder / INPUT_STATS).write_text(json.dumps(stats, indent=1))
        written.append(folder / INPUT_STATS)
    return written


def input_shape(recipe: Recipe) -> tuple[int, int, int]:
    """(channels, height, width) of one image as the net sees it."""
    data = recipe.data
    if isinstance(data, DigitsData):
        return (1, data.size, data.size)
    if isinstance(data, MnistData):
        return (1, 28, 28)
    if isinstance(data, (SyntheticData, RecordData)):
        return tuple(data.data_shape)
    raise TypeError(f"no input shape for data section {type(data).__name__}")


def export_onnx(prefix: str | Path, shape: tuple[int, int, int], dtype: str = "float32") -> Path | None:
    """<prefix>.onnx from <prefix>-symbol.json and -0000.params, batch size left free; None on failure."""
    import numpy as np

    path = Path(f"{prefix}.onnx")
    root = logging.getLogger()
    root.addFilter(_drop_mx_onnx_chatter)     # its "Exported ONNX file <temporary folder>/..." line and two more
    try:
        mx.onnx.export_model(f"{prefix}-symbol.json", f"{prefix}-0000.params", [(1, *shape)],
                             [np.dtype(dtype)], str(path), dynamic=True,
                             dynamic_input_shapes=[("batch", *shape)])
        _drop_initializer_inputs(path)
    except Exception as err:  # noqa: BLE001 - ONNX is a convenience; the MXNet files are the model
        log.warning("ONNX export failed (%s: %s); the MXNet symbol + params are unaffected. "
                    "mx.onnx needs onnx 1.14-1.18 (1.19 fails with a misleading ImportError).",
                    type(err).__name__, err)
        path.unlink(missing_ok=True)
        return None
    finally:
        root.removeFilter(_drop_mx_onnx_chatter)
    return path


def _drop_mx_onnx_chatter(record: logging.LogRecord) -> bool:
    """mx.onnx logs its progress on the root logger, naming the folder being written (export_model writes into
    a temporary one, renamed at the end): dropped, export_model names the final folder instead."""
    return "mx2onnx" not in record.pathname or record.levelno >= logging.WARNING


def _drop_initializer_inputs(path: Path) -> None:
    """mx.onnx lists every weight as a graph input too; onnxruntime then warns once per weight and
    skips constant folding. Weights are initializers only, so the one input left is the image."""
    import onnx

    model = onnx.load(str(path))
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def class_names(recipe: Recipe) -> list[str] | None:
    """Name of each output index: digits for digits/MNIST, the class map of a RecordIO build; else None."""
    data = recipe.data
    if isinstance(data, (DigitsData, MnistData)):
        return [str(digit) for digit in range(10)]
    if isinstance(data, RecordData):
        return _rec_class_names(Path(data.train_rec), recipe.net.classes)
    return None


def _rec_class_names(rec: Path, classes: int) -> list[str] | None:
    """Names from <prefix>.classes.json, which tools/build_rec.py writes beside the .rec:
    {"0": {"name": folder or synset, "words": human words when a synset-words file was given}}."""
    path = Path(f"{rec.with_suffix('')}.classes.json")
    try:
        mapping = json.loads(path.read_text())
        names = [str(i) for i in range(classes)]
        for label, entry in mapping.items():
            if int(label) < classes:
                names[int(label)] = entry.get("words") or entry["name"]
    except (OSError, ValueError, KeyError, AttributeError) as err:
        log.warning("no usable class map at %s (%s): the exported model's outputs are numbered, not named",
                    path, err)
        return None
    return names


def record_stats(rec: str | Path) -> dict | None:
    """<prefix>.mean.json of a RecordIO build: RGB mean/std, min_side/max_side of the images; None if absent."""
    path = Path(f"{Path(rec).with_suffix('')}.mean.json")
    return json.loads(path.read_text()) if path.is_file() else None


def deployable_recipe(recipe: Recipe) -> Recipe:
    """The recipe with what it reads from beside the .rec written in: the model folder then says
    all about preprocessing without the dataset. `data.mean: rec` becomes the numbers; `data.resize
    -1` (keep the built size) becomes the shorter side the val images were built with, when all share it."""
    data = recipe.data
    if not isinstance(data, RecordData):
        return recipe
    changes = {}
    if isinstance(data.mean, str) and (train := record_stats(data.train_rec)):
        changes["mean"] = list(train["mean"])
    val = record_stats(data.val_rec)
    if data.resize <= 0 and val and val.get("min_side") and val["min_side"] == val.get("max_side"):
        changes["resize"] = int(val["min_side"])
    return dataclasses.replace(recipe, data=dataclasses.replace(data, **changes)) if changes else recipe
