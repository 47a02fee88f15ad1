"""Pooled backbone features of every image in a .rec file, hybridized, over all contexts.

Images are decoded by MXNet's ImageRecordIter (resize the shorter side, centre crop, mean/std).
The ids of unlabeled records travel through the iterator as labels, so they stay with their pixels.
"""
from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet import gluon
from mxnet.gluon import HybridBlock

from ..config import RecordData
from ..data.recordio import (RecordEvalIter, check_data_shape, cpu_cores, image_record_kwargs,
                             open_record_files, read_record_headers)
from ..durations import format_duration
from ..errors import UserError
from ..nets import NETS, get_net, gluoncv_zoo
from ..nets.pretrained import is_weights_file, load_pretrained, zoo_weights_file
from ..progress import ProgressBar

log = logging.getLogger(__name__)


class TransferError(UserError):
    """A user-fixable problem with the backbone, the weights, the .rec files or the feature cache."""


@dataclass
class Features:
    x: np.ndarray            # (images, dim) float32, in the .rec file's record order
    labels: np.ndarray       # (images,) int64 class labels; empty for an unlabeled file
    ids: np.ndarray          # (images,) int64 record ids (the Kaggle ids); empty for a labeled file
    seconds: float = 0.0     # extraction time; 0 when read from the cache
    img_per_s: float = 0.0


def build_backbone(backbone: str, classes: int = 2) -> HybridBlock:
    """An uninitialised net by name: research.nets.NETS first, then gluoncv's model zoo."""
    if backbone in NETS:
        return get_net(backbone, classes=classes)
    zoo = gluoncv_zoo()
    if backbone.lower() not in zoo.get_model_list():
        raise TransferError(f"net.name '{backbone}' is neither in research.nets.NETS "
                            f"({', '.join(sorted(NETS))}) nor a gluoncv model-zoo name (such as resnet50_v1; "
                            f"all: gluoncv.model_zoo.get_model_list()).")
    return zoo.get_model(backbone, classes=classes, pretrained=False)


def weights_id(pretrained: str) -> str:
    """What identifies the weights in the feature cache key: the file's sha1, or the zoo file's name."""
    if is_weights_file(pretrained):
        path = Path(pretrained)
        if not path.is_file():
            raise TransferError(f"net.pretrained: file not found: {path}. Give a .params file saved with "
                                f"net.save_parameters(), or a gluoncv model-zoo name such as resnet50_v1.")
        digest = hashlib.sha1()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return f"file sha1 {digest.hexdigest()}"
    return f"zoo {zoo_weights_file(pretrained).name}"


def load_backbone(backbone: str, pretrained: str, ctxs: list[mx.Context]) -> HybridBlock:
    """The backbone on every context with weights from a .params file or the model zoo (all but the head)."""
    net = build_backbone(backbone)
    load_pretrained(net, pretrained, ctxs)   # the head (net.output) is not used for features
    return net


def parse_layer(layer: str) -> int | None:
    """transfer.layer 'features' -> None (all of net.features); 'features[:K]' -> K."""
    match = re.fullmatch(r"features(?:\[:(-?\d+)\])?", layer)
    if not match:
        raise TransferError(f"transfer.layer '{layer}': use 'features' (all of net.features) or 'features[:K]' "
                            f"(its first K blocks; K < 0 counts from the end).")
    return None if match.group(1) is None else int(match.group(1))


def feature_block(net: HybridBlock, layer: str, data_shape: list[int], ctx: mx.Context) -> HybridBlock:
    """The part of `net` named by `layer`, its output global-average-pooled and flattened, hybridized.

    `layer` is "features" (all of net.features; for ResNets the 2048-d pooled vector) or
    "features[:K]" (its first K children; K < 0 counts from the end, e.g. [:-2] stops after stage 3).
    """
    stop = parse_layer(layer)
    if not hasattr(net, "features"):
        raise TransferError(f"the backbone {type(net).__name__} has no .features block to take features from.")
    body = net.features if stop is None else net.features[:stop]
    if len(body) == 0:
        raise TransferError(f"transfer.layer '{layer}' selects no blocks (net.features has {len(net.features)}).")
    probe = body(mx.nd.zeros((1, *data_shape), ctx=ctx))   # 4-d maps get pooled, vectors pass through
    block = _Pooled(body, pool=probe.ndim == 4)
    block.hybridize(static_alloc=True, static_shape=True)
    return block


class _Pooled(HybridBlock):
    def __init__(self, body: HybridBlock, pool: bool):
        super().__init__(prefix="")
        self.body, self.pool = body, pool

    def hybrid_forward(self, F, x):
        x = self.body(x)
        if self.pool:
            x = F.Pooling(x, kernel=(1, 1), global_pool=True, pool_type="avg")
        return F.flatten(x)


def check_test_ids(ids: np.ndarray, labels: np.ndarray, rec: str) -> None:
    """Kaggle ids must be distinct; a .rec of files without numeric names, or a labeled one, has none."""
    values, counts = np.unique(ids, return_counts=True)
    if len(ids) and counts.max() > 1:
        raise TransferError(f"transfer.test_rec {rec}: its records have no distinct ids ({len(ids)} records, "
                            f"{len(values)} distinct ids; id {values[counts.argmax()]} appears {counts.max()} "
                            f"times). Build it with tools/build_rec.py --layout dogs-vs-cats from the test folder "
                            f"of <id>.jpg files.")
    if len(np.unique(labels)) > 1:
        raise TransferError(f"transfer.test_rec {rec}: its records carry labels {np.unique(labels)[:5].tolist()}, "
                            f"so their ids are not Kaggle ids; is it a train .rec? Build the test .rec with "
                            f"tools/build_rec.py --layout dogs-vs-cats from the test folder of <id>.jpg files.")
    if len(ids) and ids.max() >= 2 ** 24:
        raise TransferError(f"transfer.test_rec {rec}: ids up to {ids.max()} exceed 2**24, which the decoder "
                            f"carries exactly as float32 labels.")


def extract_features(block: HybridBlock, rec: str, key: str, ctxs: list[mx.Context], data: RecordData,
                     batch_size: int, labeled: bool) -> Features:
    """Features of every image in `rec`, `batch_size` images per context per batch.

    Images get the validation preprocessing of `data` (resize, centre crop, mean/std).

    Args:
        key: the recipe key that names `rec`, for error messages.
        labeled: the records carry class labels (train, val); else their ids are read (test).
    """
    files = open_record_files(rec, key)
    check_data_shape(data, files, data.resize, random_resized=False, key=key)
    kwargs = image_record_kwargs(data, list(data.mean), train=False)
    with tempfile.TemporaryDirectory() as tmp:
        if not labeled:
            ids, labels = read_record_headers(files)
            check_test_ids(ids, labels, rec)
            # An image list replaces each record's label by its id: the ids then ride with the pixels.
            kwargs["path_imglist"] = str(Path(tmp, "ids.lst"))
            Path(kwargs["path_imglist"]).write_text("".join(f"{i}\t{i}\t-\n" for i in ids))
        images = RecordEvalIter(files, batch_size * len(ctxs), kwargs, data.preprocess_threads or cpu_cores())
        return _run(block, images, ctxs, files.num_records, labeled, desc=f"{key} features")


def _run(block: HybridBlock, images: mx.io.DataIter, ctxs: list[mx.Context], total: int,
         labeled: bool, desc: str) -> Features:
    xs, ys = [], []
    pending = None   # the previous batch's outputs: syncing one batch late keeps the devices busy
    progress = ProgressBar(total, desc, "img", log)
    done, next_line, start = 0, total / 10, time.perf_counter()      # without a terminal: a line every tenth

    def take(pending) -> None:
        nonlocal done, next_line
        done += _collect(pending, xs, ys)
        progress.advance(done)
        if next_line <= done < total:
            rate = done / (time.perf_counter() - start)
            progress.report(done, {"img/s": f"{rate:.1f}", "left": format_duration((total - done) / rate)})
            next_line = done + total / 10

    for batch in images:
        keep = batch.data[0].shape[0] - batch.pad     # the last batch is padded
        parts = gluon.utils.split_and_load(batch.data[0], ctx_list=ctxs, even_split=False)
        outputs = [block(part) for part in parts]
        if pending is not None:
            take(pending)
        pending = (outputs, batch.label[0], keep)
    if pending is not None:
        take(pending)
    progress.close()
    seconds = time.perf_counter() - start
    x = np.concatenate(xs) if xs else np.zeros((0, 0), np.float32)
    y = np.concatenate(ys).round().astype(np.int64) if ys else np.zeros(0, np.int64)
    log.info("%s: %d images in %.1f s (%.1f img/s)", desc, len(x), seconds, len(x) / max(seconds, 1e-9))
    empty = np.zeros(0, np.int64)
    return Features(x=x, labels=y if labeled else empty, ids=empty if labeled else y,
                    seconds=seconds, img_per_s=len(x) / max(seconds, 1e-9))


def _collect(pending, xs: list, ys: list) -> int:
    outputs, labels, keep = pending
    x = np.concatenate([out.asnumpy() for out in outputs])[:keep]    # sync point
    xs.append(x.astype(np.float32))
    ys.append(labels.asnumpy()[:keep])
    return keep
