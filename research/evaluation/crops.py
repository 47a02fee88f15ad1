"""Top-1/top-5 with the centre crop and with 10-crop oversampling (Krizhevsky et al. 2012):
the 4 corners and the centre of each image, and their mirrors, softmax averaged over the 10.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import mxnet as mx
import numpy as np
from mxnet import gluon

from ..config import Recipe, RecordData, recipe_from_dict
from ..data.recordio import (RecordEvalIter, check_data_shape, check_labels, cpu_cores, decode_thread_cap,
                             image_record_kwargs, open_record_files, plan_threads, rgb_mean, shortest_side)
from ..errors import UserError
from ..model.export import input_shape
from ..nets import build_net
from ..rundir.files import CHECKPOINTS
from ..rundir.run_json import read_run_json
from ..tracking import Tracker, public_uri, tracking_uri
from ..training.checkpoint import CheckpointError, find_latest, load_checkpoint, load_net_arrays


def crop_offsets(height: int, width: int, crop_h: int, crop_w: int, crops: int) -> list[tuple[int, int]]:
    """(top, left) of each crop window; mirrors are taken of the same windows.

    crops=1: the centre only, at the offset MXNet's ImageRecordIter uses ((H - h) // 2), so that
    on an image already at crop size it is the identity. crops=10: centre + 4 corners.
    """
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop {crop_h}x{crop_w} is larger than the {height}x{width} images")
    centre = ((height - crop_h) // 2, (width - crop_w) // 2)
    if crops == 1:
        return [centre]
    if crops == 10:
        return [centre, (0, 0), (0, width - crop_w), (height - crop_h, 0), (height - crop_h, width - crop_w)]
    raise ValueError(f"crops must be 1 or 10, got {crops}")


def crop_views(x: mx.nd.NDArray, crop: tuple[int, int], crops: int) -> list[mx.nd.NDArray]:
    """The `crops` views of a batch x (N, C, H, W), each (N, C, crop_h, crop_w)."""
    (height, width), (crop_h, crop_w) = x.shape[2:], crop
    views = []
    for top, left in crop_offsets(height, width, crop_h, crop_w, crops):
        window = x[:, :, top:top + crop_h, left:left + crop_w]
        views.append(window)
        if crops == 10:
            views.append(mx.nd.flip(window, axis=3))
    return views


def predict_batches(net: gluon.Block, batches: Iterable[mx.io.DataBatch], ctxs: list[mx.Context],
                    crop: tuple[int, int], crops: int, dtype: str = "float32",
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (probabilities (n, classes), labels (n,)) per batch, padding removed.

    Each view is a forward pass of the whole batch split over `ctxs`, so memory stays at one
    batch however many crops; the softmax (not the logits) is averaged, as in Caffe's oversample.
    """
    for batch in batches:
        x, y = batch.data[0], batch.label[0]
        count = x.shape[0] - (batch.pad or 0)
        views = crop_views(x, crop, crops)
        total = 0
        for view in views:
            parts = gluon.utils.split_and_load(view.astype(dtype, copy=False), ctx_list=ctxs, even_split=False)
            probs = [mx.nd.softmax(net(part).astype("float32")).as_in_context(mx.cpu()) for part in parts]
            total = total + mx.nd.concat(*probs, dim=0)
        # asnumpy is the sync point: one per batch
        yield (total / len(views)).asnumpy()[:count], y.asnumpy()[:count].astype(np.int64)


def topk_correct(probs: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows have their label among the k most probable classes."""
    if k == 1:      # argmax, like the training loop's top-1, so that ties resolve the same way
        return int((probs.argmax(axis=1) == labels).sum())
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


def evaluate_crops(net: gluon.Block, batches: Iterable[mx.io.DataBatch], ctxs: list[mx.Context],
                   crop: tuple[int, int], crops: int, dtype: str = "float32") -> dict[str, float]:
    """{"top1", "top5" (fractions), "count"} over every image the batches hold."""
    top1 = top5 = count = 0
    for probs, labels in predict_batches(net, batches, ctxs, crop, crops, dtype):
        top1 += topk_correct(probs, labels, 1)
        top5 += topk_correct(probs, labels, 5)
        count += len(labels)
    if count == 0:
        raise ValueError("no images to evaluate: the record file is empty")
    return {"top1": top1 / count, "top5": top5 / count, "count": count}


@dataclass
class Trained:
    """A trained net ready to evaluate, with where it came from."""
    net: gluon.HybridBlock
    recipe: Recipe
    checkpoint: Path
    epoch: int                 # epochs done when the checkpoint was written
    mid_epoch: bool            # written inside an epoch: no val/top1 of the loop matches it
    run_id: str | None         # the MLflow run that trained it
    tracking_uri: str | None   # where that run lives, from run.json


def load_trained(source: str | Path, ctxs: list[mx.Context]) -> Trained:
    """The net of a run directory (its newest valid checkpoint), of one .ckpt file, or of a recipe
    (.yaml) whose net.pretrained names the weights (e.g. GluonCV's model-zoo squeezenet1.0).

    Raises:
        UserError: no checkpoint there, or a file that is not one of this project's checkpoints.
    """
    source = Path(source)
    if source.suffix in (".yaml", ".yml"):
        return _pretrained_from_recipe(source, ctxs)
    if source.is_dir():
        latest = find_latest(source / CHECKPOINTS)
        if latest is None:
            raise UserError(f"{source}: no valid checkpoint in {source / CHECKPOINTS}. Pass a run directory "
                            f"written by tools/train.py (runs/<recipe name>/) or a .ckpt file.")
        path, content = latest
    elif source.is_file():
        path = source
        try:
            content = load_checkpoint(path)
        except CheckpointError as err:
            raise UserError(str(err)) from None
    else:
        raise UserError(f"{source}: no such run directory or checkpoint file.")
    state = content["state"]
    recipe = recipe_from_dict(state.recipe, origin=f"the recipe saved in {path}")
    net = build_net(recipe.net)
    net.initialize(ctx=ctxs)
    shape = (1,) + input_shape(recipe)
    for ctx in ctxs:                             # deferred init: the shapes exist after one forward
        net(mx.nd.zeros(shape, ctx=ctx))
    try:
        load_net_arrays(net, content["params"])  # float32 on the CPU even for a float16 run
    except CheckpointError as err:
        raise UserError(str(err)) from None
    if recipe.train.dtype == "float16" and all(c.device_type == "gpu" for c in ctxs):
        net.cast("float16")
    net.hybridize(static_alloc=True, static_shape=True)
    run_info = read_run_json(path.parent.parent)          # RUN_DIR/checkpoints/<file>: the run's MLflow run
    return Trained(net, recipe, path, state.epoch, state.batch_in_epoch > 0,
                   state.run_id or run_info.run_id, run_info.tracking_uri)


def _pretrained_from_recipe(path: Path, ctxs: list[mx.Context]) -> Trained:
    """The recipe's net with the weights of net.pretrained, head included (same classes)."""
    from ..config import load_recipe
    from ..nets.pretrained import load_pretrained

    recipe = load_recipe(path)
    if not recipe.net.pretrained:
        raise UserError(f"{path}: net.pretrained is empty; a recipe given to evaluate names the weights "
                        f"to evaluate there (a .params file or a gluoncv model-zoo name).")
    net = build_net(recipe.net)
    loaded = load_pretrained(net, recipe.net.pretrained, ctxs)
    if not any(name.startswith("output.") for name in loaded):
        raise UserError(f"{recipe.net.pretrained} has no head of {recipe.net.classes} classes: nothing to evaluate.")
    net.hybridize(static_alloc=True, static_shape=True)
    return Trained(net, recipe, Path(recipe.net.pretrained), 0, False, None, None)


def record_batches(data: RecordData, rec: str | Path, batch_size: int, classes: int,
                   view: int = 0) -> mx.io.DataIter:
    """Every image of `rec` once, in file order, preprocessed as the recipe validates.

    view 0: exactly the training loop's val pipeline (resize, centre crop to data_shape).
    view > 0: the centre view x view square (after the same resize), to cut 10 crops from.
    """
    files = open_record_files(str(rec), "--rec")
    check_labels(files, classes, "--rec")
    # the mean of a `mean: rec` recipe is the one of its training set, as in training
    mean = rgb_mean(data, open_record_files(data.train_rec, "data.train_rec")) if isinstance(data.mean, str) \
        else list(data.mean)
    if view:
        data = dataclasses.replace(data, data_shape=[data.data_shape[0], view, view])
    check_data_shape(data, files, data.resize, False, "data.val_rec")
    kwargs = image_record_kwargs(data, mean, train=False)
    threads = min(plan_threads(data.preprocess_threads)[0], decode_thread_cap(cpu_cores()))
    return RecordEvalIter(files, batch_size, kwargs, threads)


def ten_crop_view(data: RecordData, rec: str | Path) -> int:
    """Side of the square the 10 crops are cut from: data.resize, else the images' shortest side."""
    if data.resize > 0:
        return data.resize
    return shortest_side(open_record_files(str(rec), "--rec"))[0]


def evaluate_rec(trained: Trained, rec: str | Path, ctxs: list[mx.Context], crops: list[int],
                 batch_size: int) -> dict[str, float]:
    """{"val/top1_center", "val/top5_center", "val/top1_10crop", "val/top5_10crop"} as asked by `crops`."""
    data = trained.recipe.data
    if not isinstance(data, RecordData):
        raise UserError(f"{trained.checkpoint} was trained on data.kind {data.kind}; evaluating on a .rec "
                        f"needs a recipe with data.kind recordio.")
    dtype = "float16" if _is_float16(trained.net) else "float32"
    crop = tuple(data.data_shape[1:])
    metrics = {}
    for count in crops:
        name = "center" if count == 1 else f"{count}crop"
        view = 0 if count == 1 else ten_crop_view(data, rec)
        batches = record_batches(data, rec, batch_size, trained.recipe.net.classes, view)
        result = evaluate_crops(trained.net, batches, ctxs, crop, count, dtype)
        metrics.update({f"val/top1_{name}": result["top1"], f"val/top5_{name}": result["top5"],
                        f"count_{name}": result["count"]})
    return metrics


def _is_float16(net: gluon.Block) -> bool:
    return any(p.dtype == np.float16 for p in net.collect_params().values())


def log_to_run(trained: Trained, metrics: dict[str, float], rec: str | Path) -> str | None:
    """Add the figures to the run that trained the net, at its epoch; the run's status is kept.

    Returns the run id, or None (with the reason printed) when they could not be logged.
    """
    if not trained.run_id:
        print(f"not logged to MLflow: {trained.checkpoint} names no MLflow run (tracking was off)")
        return None
    uri = tracking_uri(trained.tracking_uri)      # the store the run was written to, unless MLFLOW_TRACKING_URI
    tracker = Tracker.attach(trained.run_id, uri)  # not resume: that marks the run RUNNING
    if not tracker.enabled:
        print(f"not logged to MLflow: run {trained.run_id} not found at {public_uri(uri)}")
        return None
    tracker.log_metrics({k: v for k, v in metrics.items() if k.startswith("val/")}, step=trained.epoch)
    tracker.set_tags({"evaluate.rec": str(Path(rec).resolve()), "evaluate.checkpoint": str(trained.checkpoint)})
    if not tracker.flush():
        print(f"MLflow at {public_uri(uri)} did not answer in time; the figures may be missing from the run")
    return trained.run_id
