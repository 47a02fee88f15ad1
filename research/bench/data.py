"""Decode + augment images/s of a recipe's RecordIO train pipeline against a bare ImageRecordIter,
for several decode-thread counts: does the data keep the GPUs fed?
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import Recipe, RecipeError, RecordData
from ..data.recordio import (RecordTrainIter, cpu_cores, decode_thread_cap, image_record_kwargs, open_record_files,
                       plan_threads, rgb_mean)


def write_sample_images(folder: str | Path, classes: int = 4, per_class: int = 250, short_side: int = 256,
                        seed: int = 0) -> Path:
    """Class folders of smooth random JPEGs (4:3, `short_side` px high), each class tinted its
    own colour so that a net can learn them: data to measure and to try a recipe with."""
    import cv2
    folder, rng = Path(folder), np.random.RandomState(seed)
    tints = rng.randint(0, 256, (classes, 3))
    for label in range(classes):
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            small = rng.randint(0, 256, (short_side // 16, short_side // 12, 3), dtype=np.uint8)
            image = cv2.resize(small, (short_side * 4 // 3, short_side), interpolation=cv2.INTER_CUBIC)
            noise = rng.randint(-12, 13, image.shape)     # some texture, so JPEG sizes look like photos
            image = np.clip((image + tints[label]) / 2 + noise, 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"class{label}" / f"{i}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def measure_rate(batches, batch_size: int, seconds: float, warmup: int = 8,
                 on_batch: Callable[[], None] = lambda: None) -> tuple[float, float]:
    """(images/s, images per CPU-second of this process) that `batches` (an mx.io.DataIter,
    reset at each end of pass) delivers. The second figure is images/s per busy core: on a
    shared machine it stays meaningful when the first one is cut by other loads."""
    def take() -> None:
        try:
            batch = batches.next()
        except StopIteration:
            batches.reset()
            batch = batches.next()
        batch.data[0].wait_to_read()

    for _ in range(warmup):             # drains the batches prefetched while the iterator was built
        take()
    count, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        take()
        count += batch_size
        on_batch()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start   # cpu: all threads
    return count / wall, count / max(cpu, 1e-9)


def benchmark_data(recipe: Recipe, thread_counts: list[int], seconds: float = 10.0) -> list[dict]:
    """One row per (pipeline, thread count): images/s of a bare ImageRecordIter with the recipe's
    augmentation and of our train iterator, with the decode threads each really runs."""
    import mxnet as mx
    data = recipe.data
    if not isinstance(data, RecordData):
        raise RecipeError(f"{recipe.source}: benchmark data measures RecordIO pipelines; data.kind is "
                          f"{data.kind!r}, not 'recordio'.")
    files = open_record_files(data.train_rec, "data.train_rec")
    kwargs = image_record_kwargs(data, rgb_mean(data, files), train=True)
    batch_size, cores = recipe.train.batch_size, cpu_cores()
    cap = decode_thread_cap(cores)
    rows = []
    for threads in thread_counts:
        bare = mx.io.ImageRecordIter(path_imgrec=str(files.rec), path_imgidx=str(files.idx), batch_size=batch_size,
                                     preprocess_threads=threads or cores, **kwargs)
        rows.append(_row("ImageRecordIter", threads or cores, [min(threads or cores, cap)],
                         *measure_rate(bare, batch_size, seconds)))
        del bare
        ours = RecordTrainIter(files, batch_size, kwargs, plan_threads(threads, cores))
        rows.append(_row("ours", threads or cores, ours.decode_threads, *measure_rate(ours, batch_size, seconds)))
        del ours
    return rows


def _row(pipeline: str, threads: int, decode_threads: list[int], rate: float, per_cpu_second: float) -> dict:
    return {"pipeline": pipeline, "threads": threads, "instances": len(decode_threads),
            "decode_threads": sum(decode_threads), "img_per_s": round(rate, 1),
            "img_per_s_per_thread": round(rate / sum(decode_threads), 1),
            "img_per_cpu_s": round(per_cpu_second, 1)}
