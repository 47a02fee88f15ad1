"""RecordIO iterators: MXNet's ImageRecordIter configured from the recipe, past its thread cap.

ImageRecordIter decodes with at most max(cores/2 - 1, 1) threads (iter_image_recordio_2.cc);
the train iterator runs several instances over disjoint parts of the file and interleaves them.
"""
from __future__ import annotations

import json
import math
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mxnet as mx
import numpy as np

from ..config import RecipeError, RecordData
from ..errors import UserError
from .verify import Labels, read_index, require_intact

MAX_INSTANCES = 8        # ImageRecordIter instances per train iterator; bounds the batch count (see _batches_per_part)
SAMPLE_IMAGES = 16       # images decoded to learn the image size when no .mean.json is there
MAX_CLASSES = 1 << 20    # a larger label is not offered as a class count


def cpu_cores() -> int:
    """Cores this process may run on, the figure OpenMP's omp_get_num_procs() reports."""
    return len(os.sched_getaffinity(0))


def decode_thread_cap(cores: int) -> int:
    """Decode threads one ImageRecordIter really uses at most: MXNet 1.x's own cap."""
    return max(cores // 2 - 1, 1)


def plan_threads(threads: int, cores: int | None = None) -> list[int]:
    """Decode threads for each ImageRecordIter instance; `threads` 0 means one per core."""
    cores = cores or cpu_cores()
    total = threads if threads > 0 else cores
    return split_evenly(total, min(math.ceil(total / decode_thread_cap(cores)), MAX_INSTANCES))


def split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


@dataclass
class RecordFiles:
    """A .rec with its .idx, checked to belong together, and the labels MXNet will read from it."""
    rec: Path
    idx: Path
    num_records: int
    labels: Labels

    @property
    def prefix(self) -> Path:
        return self.rec.with_suffix("")

    def sidecar(self, suffix: str) -> Path:
        return Path(f"{self.prefix}{suffix}")


def open_record_files(rec: str, key: str) -> RecordFiles:
    """Check that `rec` and its .idx exist and match, every record intact; `key` names the recipe key in errors."""
    rec_path = Path(rec)
    idx_path = rec_path.with_suffix(".idx")
    build = f"build it with: python tools/build_rec.py SRC {rec_path.with_suffix('')}"
    if not rec_path.is_file():
        raise RecipeError(f"{key}: {rec_path} not found; {build}")
    if not idx_path.is_file():
        raise RecipeError(f"{key}: {idx_path} not found (the index beside {rec_path.name}, needed to shuffle "
                          f"and shard); {build}, or re-run im2rec, which writes both.")
    labels = require_intact(rec_path, key)        # before any MXNet reader: it aborts on a bad record
    return RecordFiles(rec_path, idx_path, labels.records, labels)


def read_record_headers(files: RecordFiles) -> tuple[np.ndarray, np.ndarray]:
    """(ids, labels) of every record in file order, read through the .idx without the image bytes."""
    ids, labels = [], []
    with open(files.rec, "rb") as handle:
        for offset in read_index(files.idx)[:, 1].tolist():
            handle.seek(offset + 8)                  # skip the RecordIO magic and length words
            flag, label, record_id, _ = struct.unpack("IfQQ", handle.read(24))   # mx.recordio.IRHeader
            ids.append(record_id)
            labels.append(struct.unpack("f", handle.read(4))[0] if flag > 0 else label)
    return np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.float32)


def check_labels(files: RecordFiles, classes: int, key: str) -> None:
    """Refuse labels the loop cannot train on: those ImageRecordIter reads from the record headers (a .lst
    beside the file is not what it reads) must be integers 0..classes-1."""
    labels, fix = files.labels, "rebuild it with tools/build_rec.py"
    if labels.odd is not None:
        value, index, record_id = labels.odd
        raise RecipeError(f"{key}: {files.rec} record {index} (id {record_id}) has label {value:g}, not a class "
                          f"number (integers 0..{classes - 1}); {fix}.")
    value, index, record_id = labels.low
    if value < 0:
        raise RecipeError(f"{key}: {files.rec} holds unlabeled images (record {index}, id {record_id}: label "
                          f"{value:g}), e.g. the Dogs vs. Cats test folder; train and validate on a labeled set.")
    value, index, record_id = labels.high
    if value >= classes:
        fix = f"set net.classes to {value + 1:.0f} or {fix}" if value < MAX_CLASSES else fix
        raise RecipeError(f"{key}: {files.rec} has label {value:g} but net.classes is {classes} (record {index}, "
                          f"id {record_id}; labels must be integers 0..{classes - 1}); {fix}.")


def build_stats(files: RecordFiles, field: str) -> int | list[float] | None:
    """`field` of the build's PREFIX.mean.json ("min_side" or "mean"), checked; None when there is no such file."""
    stats = files.sidecar(".mean.json")
    if not stats.is_file():
        return None
    try:
        value = json.loads(stats.read_text())[field]
    except (OSError, ValueError, KeyError, TypeError) as err:
        value = err
    if field == "min_side":
        valid = type(value) is int and value > 0
    else:
        valid = isinstance(value, list) and len(value) == 3 and all(
            type(v) in (int, float) and 0 <= v <= 255 for v in value)
    if not valid:
        undo = "delete it and give data.mean as 3 numbers" if field == "mean" else "delete it"
        raise RecipeError(f"{stats}: no valid {field!r} ({str(value)[:60]}), which tools/build_rec.py writes; "
                          f"rebuild the set, or {undo}.")
    return value


def shortest_side(files: RecordFiles) -> tuple[int, str]:
    """(shortest image side, where the figure comes from): the build's .mean.json, else a sample."""
    side = build_stats(files, "min_side")
    if side is not None:
        return side, files.sidecar(".mean.json").name
    record = mx.recordio.MXIndexedRecordIO(str(files.idx), str(files.rec), "r")
    try:
        sides = []
        for key in record.keys[:SAMPLE_IMAGES]:
            image = mx.recordio.unpack_img(record.read_idx(key))[1]
            if image is None:
                raise RecipeError(f"{files.rec}: record id {key} holds no image OpenCV can decode; rebuild the set "
                                  f"with tools/build_rec.py (it skips and reports such files).")
            sides.append(min(image.shape[:2]))
    finally:
        record.close()
    return min(sides), f"the first {len(sides)} images"


def check_data_shape(data: RecordData, files: RecordFiles, resize: int, random_resized: bool, key: str) -> None:
    """Refuse a crop larger than the images: ImageRecordIter would silently stretch them."""
    channels, height, width = data.data_shape
    if channels not in (1, 3):
        raise RecipeError(f"data.data_shape {data.data_shape}: channels must be 3 (RGB) or 1 (grayscale).")
    if random_resized:
        return                                        # the random crop is resized to data_shape anyway
    side, source = (resize, "data.resize") if resize > 0 else shortest_side(files)
    if side < max(height, width):
        resize_key = "data.train_resize" if key.endswith("train_rec") else "data.resize"
        raise RecipeError(f"data.data_shape {height}x{width}: {files.rec.name} images have a shorter side of {side} "
                          f"(from {source}); set {resize_key} >= {max(height, width)} or rebuild with "
                          f"tools/build_rec.py --resize {max(height, width)}.")


def rgb_mean(data: RecordData, train: RecordFiles) -> list[float]:
    if not isinstance(data.mean, str):
        return list(data.mean)
    mean = build_stats(train, "mean")
    if mean is None:
        raise RecipeError(f"data.mean = 'rec' reads {train.sidecar('.mean.json')}, which is missing; rebuild with "
                          "tools/build_rec.py (it writes the training mean) or give data.mean as 3 numbers.")
    return [float(v) for v in mean]


def image_record_kwargs(data: RecordData, mean: list[float], train: bool) -> dict:
    """ImageRecordIter arguments from the recipe (keys of RecordData are its argument names)."""
    kwargs = dict(data_shape=tuple(data.data_shape), prefetch_buffer=data.prefetch_buffer,
                  mean_r=mean[0], mean_g=mean[1], mean_b=mean[2],
                  std_r=data.std[0], std_g=data.std[1], std_b=data.std[2],
                  round_batch=False,     # True wraps into the next pass, which then starts shifted
                  verbose=False)
    if not train:
        return dict(kwargs, resize=data.resize, shuffle=False)    # centre crop, no augmentation
    kwargs.update(resize=data.train_resize, rand_mirror=data.rand_mirror, shuffle=data.shuffle,
                  brightness=data.brightness, contrast=data.contrast, saturation=data.saturation,
                  pca_noise=data.pca_noise)
    if data.random_resized_crop:      # MXNet refuses rand_crop together with it; aspect/area act only here
        kwargs.update(random_resized_crop=True, min_random_area=data.min_random_area,
                      max_random_area=data.max_random_area, min_aspect_ratio=data.min_aspect_ratio,
                      max_aspect_ratio=data.max_aspect_ratio)
    else:
        kwargs.update(rand_crop=data.rand_crop)
    return kwargs


@contextmanager
def decoding(rec: str | Path) -> Iterator[None]:
    """MXNet's error for bytes of `rec` that are not an image (the check before reading sees the records'
    framing, not their JPEG data) as one line naming the file and the fix."""
    try:
        yield
    except mx.base.MXNetError as err:
        reason = [line for line in str(err).splitlines() if line.strip()][-1][:200]
        raise UserError(f"{rec}: MXNet could not decode an image in it ({reason}); rebuild the set with "
                        f"tools/build_rec.py, which skips and reports files that are not images.") from None


def part_sizes(num_records: int, num_parts: int) -> list[int]:
    """Records in each part, as dmlc's indexed RecordIO splitter cuts them (ceil-sized steps)."""
    step = math.ceil(num_records / num_parts)
    return [max(0, min(step, num_records - i * step)) for i in range(num_parts)]


def _batches_per_part(num_records: int, batch_size: int, num_parts: int, instances: int) -> int:
    """Full batches every part delivers. With several parts the figure must not depend on the
    instance count, which differs between machines: take the worst over every count allowed."""
    counts = range(1, MAX_INSTANCES + 1) if num_parts > 1 else [instances]
    worst = []
    for count in counts:
        sizes = part_sizes(num_records, num_parts * count)
        worst.append(min(sum(s // batch_size for s in sizes[p * count:(p + 1) * count]) for p in range(num_parts)))
    return min(worst)


class RecordTrainIter(mx.io.DataIter):
    """Full, shuffled, augmented batches from several ImageRecordIter instances, interleaved.

    Instance j of part p reads sub-part p * k + j of num_parts * k, so every instance decodes
    with its own threads. Each epoch gives `num_batches` full batches, the same on every part.
    As with ImageRecordIter itself, a batch's arrays are refilled once `prefetch_buffer` more
    batches of its instance were taken: use (or copy) each batch before holding many.
    """

    def __init__(self, files: RecordFiles, batch_size: int, kwargs: dict, threads: list[int],
                 seed: int = 0, num_parts: int = 1, part_index: int = 0):
        super().__init__(batch_size)
        # a sub-part smaller than a few batches wastes its tail every epoch: use fewer instances then
        count = max(1, min(len(threads), files.num_records // (num_parts * batch_size * 4)))
        self.num_batches = _batches_per_part(files.num_records, batch_size, num_parts, count)
        if self.num_batches == 0:
            raise RecipeError(f"data.train_rec: {files.rec} has {files.num_records} images, fewer than one batch "
                              f"of {batch_size} for each of {num_parts} parts; lower train.batch_size.")
        self.num_samples = self.num_batches * batch_size
        sizes = part_sizes(files.num_records, num_parts * count)[part_index * count:(part_index + 1) * count]
        self._quota = _trim([s // batch_size for s in sizes], self.num_batches)
        self._open = dict(path_imgrec=str(files.rec), path_imgidx=str(files.idx), batch_size=batch_size,
                          num_parts=num_parts * count, **kwargs)
        self._threads = split_evenly(sum(threads), count)
        self._first_part = part_index * count
        self._seed = seed
        self._iters = [self._instance(j) if quota else None for j, quota in enumerate(self._quota)]
        self._taken = [0] * count
        self._turn = 0
        self._resets = 0          # passes started since the instances were created
        cap = decode_thread_cap(cpu_cores())
        self.decode_threads = [min(t, cap) for t, it in zip(self._threads, self._iters) if it]  # per instance

    def _instance(self, j: int) -> mx.io.DataIter:
        part = self._first_part + j
        # No seed_aug: MXNet 1.9 then reseeds at every batch position, so every batch would get
        # the same crops and flips. The augmentation streams are seeded by thread number instead.
        with decoding(self._open["path_imgrec"]):      # the constructor decodes the first batch
            return mx.io.ImageRecordIter(part_index=part, preprocess_threads=self._threads[j],
                                         seed=self._seed * 1000 + part, **self._open)

    @property
    def provide_data(self):
        return next(it for it in self._iters if it).provide_data

    @property
    def provide_label(self):
        return next(it for it in self._iters if it).provide_label

    def reset(self) -> None:
        for it in self._iters:
            if it is not None:
                it.reset()
        self._taken = [0] * len(self._iters)
        self._turn = 0
        self._resets += 1

    def set_epoch(self, epoch: int) -> None:
        """Order this pass as epoch `epoch` of an uninterrupted run (so a resumed run skips the
        batches it trained on). ImageRecordIter draws each pass's shuffle from its seed in turn,
        so this starts as many passes; the augmentation draws depend on thread timing."""
        if self._resets > epoch + 1:        # going back: start from fresh instances
            self._iters = [self._instance(j) if quota else None for j, quota in enumerate(self._quota)]
            self._resets = 0
        while self._resets < epoch + 1:
            self.reset()

    def next(self) -> mx.io.DataBatch:
        for _ in range(len(self._iters)):
            j = self._turn
            self._turn = (j + 1) % len(self._iters)
            if self._taken[j] < self._quota[j]:
                self._taken[j] += 1
                with decoding(self._open["path_imgrec"]):
                    batch = self._iters[j].next()
                batch.pad = 0          # MXNet sets no pad on full batches; say so explicitly
                return batch
        raise StopIteration


def _trim(quota: list[int], total: int) -> list[int]:
    """Lower the largest quotas until they sum to `total`."""
    quota = list(quota)
    while sum(quota) > total:
        quota[quota.index(max(quota))] -= 1
    return quota


class RecordEvalIter(mx.io.DataIter):
    """Every image once per pass, in file order, centre-cropped; the last batch is padded (`pad`).

    ImageRecordIter runs with round_batch=False: MXNet then reports no pad, so the pad is
    counted here from the number of records.
    """

    def __init__(self, files: RecordFiles, batch_size: int, kwargs: dict, threads: int):
        super().__init__(batch_size)
        self.num_samples = files.num_records
        self.num_batches = math.ceil(files.num_records / batch_size)
        self._rec = files.rec
        with decoding(files.rec):
            self._iter = mx.io.ImageRecordIter(path_imgrec=str(files.rec), path_imgidx=str(files.idx),
                                               batch_size=batch_size, preprocess_threads=threads, **kwargs)
        self._served = 0

    @property
    def provide_data(self):
        return self._iter.provide_data

    @property
    def provide_label(self):
        return self._iter.provide_label

    def reset(self) -> None:
        self._iter.reset()
        self._served = 0

    def next(self) -> mx.io.DataBatch:
        if self._served == self.num_batches:
            raise StopIteration
        with decoding(self._rec):
            batch = self._iter.next()
        self._served += 1
        batch.pad = max(0, self._served * self.batch_size - self.num_samples)
        return batch


def get_rec_iterators(data: RecordData, batch_size: int, classes: int, seed: int = 0,
                      num_parts: int = 1, part_index: int = 0) -> tuple[RecordTrainIter, RecordEvalIter]:
    """(train_iter, val_iter) over data.train_rec / data.val_rec; see the contract in data/__init__.py.

    The train iterator is sharded by (num_parts, part_index); the val iterator is not: every
    worker sees every validation image once.
    """
    train = open_record_files(data.train_rec, "data.train_rec")
    val = open_record_files(data.val_rec, "data.val_rec")
    check_labels(train, classes, "data.train_rec")
    check_labels(val, classes, "data.val_rec")
    check_data_shape(data, train, data.train_resize, data.random_resized_crop, "data.train_rec")
    check_data_shape(data, val, data.resize, False, "data.val_rec")
    mean = rgb_mean(data, train)
    threads = plan_threads(data.preprocess_threads)
    train_iter = RecordTrainIter(train, batch_size, image_record_kwargs(data, mean, train=True), threads,
                                 seed, num_parts, part_index)
    val_threads = min(sum(threads), decode_thread_cap(cpu_cores()))
    val_iter = RecordEvalIter(val, batch_size, image_record_kwargs(data, mean, train=False), val_threads)
    train_iter.labels_in_data = train.labels.distinct        # what chance is for the guard
    return train_iter, val_iter
