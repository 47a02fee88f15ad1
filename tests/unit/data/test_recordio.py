"""RecordIO iterators: im2rec-made files, exact-once validation, equal shards, clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from research.config import RecipeError, RecordData, recipe_from_dict
from research.data import get_iterators
from research.data.recordio import decode_thread_cap, get_rec_iterators, plan_threads
from research.errors import UserError


def pack_like_im2rec(prefix: Path, labels: list[int], size=(36, 48), colour=None, seed: int = 0) -> Path:
    """A .rec/.idx as mxnet/tools/im2rec.py writes them: pack_img with IRHeader(0, label, id, 0)."""
    rng = np.random.RandomState(seed)
    record = mx.recordio.MXIndexedRecordIO(f"{prefix}.idx", f"{prefix}.rec", "w")
    for i, label in enumerate(labels):
        if colour is None:
            bgr = rng.randint(0, 256, size + (3,), dtype=np.uint8)
        else:
            bgr = np.full(size + (3,), colour[::-1], np.uint8)     # cv2 images are BGR
        record.write_idx(i, mx.recordio.pack_img(mx.recordio.IRHeader(0, float(label), i, 0), bgr, quality=95))
    record.close()
    return Path(f"{prefix}.rec")


def labels_of(batches) -> list[list[int]]:
    """Labels of each batch without its padding, read as each batch arrives: ImageRecordIter
    reuses a batch's arrays a few batches later, as a training loop expects."""
    out = []
    for batch in batches:
        labels = batch.label[0].asnumpy().astype(int)
        out.append(list(labels[:len(labels) - batch.pad]))
    return out


def pads_and_shapes(batches) -> list[tuple[int, tuple]]:
    return [(batch.pad, batch.data[0].shape) for batch in batches]


def record_data(train: Path, val: Path, **kw) -> RecordData:
    kw.setdefault("data_shape", [3, 32, 32])
    return RecordData(train_rec=str(train), val_rec=str(val), **kw)


@pytest.fixture
def unique(tmp_path) -> tuple[Path, int]:
    """23 records labelled 0..22: every label names one image."""
    return pack_like_im2rec(tmp_path / "unique", list(range(23))), 23


def test_validation_sees_every_image_once_per_epoch(unique):
    rec, n = unique
    _, val = get_rec_iterators(record_data(rec, rec), batch_size=5, classes=n)
    assert val.num_samples == n
    for _ in range(3):           # MXNet's round_batch would shift the second pass by the pad
        assert [pad for pad, _ in pads_and_shapes(val)] == [0, 0, 0, 0, 2]
        val.reset()
        seen = sum(labels_of(val), [])
        assert sorted(seen) == list(range(n)) and seen == list(range(n))     # each once, in file order
        val.reset()


@pytest.mark.parametrize("threads", [1, 4])
def test_train_gives_full_distinct_batches_and_reshuffles(unique, threads):
    rec, n = unique
    train, _ = get_rec_iterators(record_data(rec, rec, preprocess_threads=threads), batch_size=4, classes=n)
    epochs = []
    assert set(pads_and_shapes(train)) == {(0, (4, 3, 32, 32))}
    for _ in range(2):
        train.reset()
        seen = sum(labels_of(train), [])
        assert len(seen) == train.num_samples == 20 and len(set(seen)) == len(seen)
        epochs.append(seen)
    assert epochs[0] != epochs[1]


def test_shards_have_equal_batch_counts_and_disjoint_images(tmp_path):
    rec = pack_like_im2rec(tmp_path / "many", list(range(103)), size=(24, 24))
    data = record_data(rec, rec, data_shape=[3, 16, 16])
    counts, parts = set(), []
    for part in range(3):
        for threads in (1, 4):           # machines with other core counts must agree on the count
            train, _ = get_rec_iterators(RecordData(**{**data.__dict__, "preprocess_threads": threads}),
                                         batch_size=4, classes=103, num_parts=3, part_index=part)
            batches = labels_of(train)
            counts |= {len(batches), train.num_samples // 4}
            assert all(len(b) == 4 for b in batches)
        parts.append(set(sum(batches, [])))
    assert len(counts) == 1
    assert not (parts[0] & parts[1]) and not (parts[1] & parts[2]) and not (parts[0] & parts[2])


def test_set_epoch_reproduces_an_uninterrupted_order(unique):
    rec, n = unique
    data = record_data(rec, rec, preprocess_threads=2)
    first, _ = get_rec_iterators(data, batch_size=4, classes=n, seed=7)
    orders = []
    for epoch in range(3):
        first.set_epoch(epoch)
        orders.append(labels_of(first))
    resumed, _ = get_rec_iterators(data, batch_size=4, classes=n, seed=7)
    resumed.set_epoch(2)
    assert labels_of(resumed) == orders[2] and orders[1] != orders[2]


def test_augmentation_differs_between_batches(tmp_path):
    gradient = np.zeros((48, 48, 3), np.uint8)
    gradient[:, :, 0] = np.arange(48)[None, :] * 5
    gradient[:, :, 1] = np.arange(48)[:, None] * 5
    record = mx.recordio.MXIndexedRecordIO(str(tmp_path / "same.idx"), str(tmp_path / "same.rec"), "w")
    for i in range(32):                       # one picture 32 times: only the augmentation differs
        record.write_idx(i, mx.recordio.pack_img(mx.recordio.IRHeader(0, 0.0, i, 0), gradient, quality=100))
    record.close()
    data = record_data(tmp_path / "same.rec", tmp_path / "same.rec", data_shape=[3, 24, 24])
    train, _ = get_rec_iterators(data, batch_size=8, classes=1, seed=1)
    first, second = (batch.data[0].asnumpy().copy() for batch in (train.next(), train.next()))
    assert len({image.tobytes() for image in first}) > 1
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))    # not the same crop per position


def test_pixels_are_rgb_and_normalised_with_the_recipe_mean(tmp_path):
    rec = pack_like_im2rec(tmp_path / "solid", [0, 1, 0, 1], colour=(200, 100, 50))
    data = record_data(rec, rec, mean=[100.0, 50.0, 25.0], std=[2.0, 1.0, 0.5], rand_mirror=False)
    train, val = get_rec_iterators(data, batch_size=2, classes=2)
    x = next(iter(val)).data[0].asnumpy()
    assert np.allclose(x.mean(axis=(0, 2, 3)), [50.0, 50.0, 50.0], atol=2.0)


def test_mean_rec_reads_the_build_mean(tmp_path):
    rec = pack_like_im2rec(tmp_path / "solid", [0, 1], colour=(90, 120, 150))
    (tmp_path / "solid.mean.json").write_text(json.dumps({"mean": [90, 120, 150], "std": [1, 1, 1],
                                                          "images": 2, "min_side": 36, "max_side": 36}))
    _, val = get_rec_iterators(record_data(rec, rec, mean="rec", std=[1.0, 1.0, 1.0]), batch_size=2, classes=2)
    assert np.abs(next(iter(val)).data[0].asnumpy()).max() < 3.0
    for junk, field in (('{"min_side": 36, "mean": ["1", 2, 3]}', "mean"), ('{"min_side": 36, "mean": [1e999, 0, 0]}',
                        "mean"), ('{"min_side": "36", "mean": [1, 2, 3]}', "min_side"), ("not json", "min_side")):
        (tmp_path / "solid.mean.json").write_text(junk)
        with pytest.raises(RecipeError, match=rf"solid.mean.json: no valid '{field}' .*rebuild the set, or delete it"):
            get_rec_iterators(record_data(rec, rec, mean="rec", std=[1.0, 1.0, 1.0]), batch_size=2, classes=2)
    (tmp_path / "solid.mean.json").unlink()
    with pytest.raises(RecipeError, match="solid.mean.json, which is missing"):
        get_rec_iterators(record_data(rec, rec, mean="rec"), batch_size=2, classes=2)


def test_get_iterators_dispatches_recordio_recipes(unique):
    rec, n = unique
    recipe = recipe_from_dict({"name": "t", "net": {"name": "lenet", "classes": n},
                               "train": {"epochs": 1, "lr": 0.1, "batch_size": 8},
                               "data": {"kind": "recordio", "train_rec": str(rec), "val_rec": str(rec),
                                        "data_shape": [3, 32, 32]}})
    train, val = get_iterators(recipe, batch_size=8)
    assert (train.num_samples, val.num_samples) == (16, 23)
    assert train.provide_data[0].shape == (8, 3, 32, 32)


def test_missing_files_name_the_file_and_the_fix(tmp_path, unique):
    rec, n = unique
    with pytest.raises(RecipeError, match=r"data.train_rec: .*nope.rec not found; build it with.*build_rec.py"):
        get_rec_iterators(record_data(tmp_path / "nope.rec", rec), 4, n)
    copy = tmp_path / "noidx.rec"
    copy.write_bytes(rec.read_bytes())
    with pytest.raises(RecipeError, match=r"data.val_rec: .*noidx.idx not found"):
        get_rec_iterators(record_data(rec, copy), 4, n)
    cut = tmp_path / "cut.rec"
    cut.write_bytes(rec.read_bytes()[:1000])
    (tmp_path / "cut.idx").write_text(rec.with_suffix(".idx").read_text())
    with pytest.raises(UserError, match="points past the end"):
        get_rec_iterators(record_data(cut, rec), 4, n)


def test_labels_beyond_the_class_count_are_refused(tmp_path, unique):
    rec, n = unique
    with pytest.raises(RecipeError, match=r"label 22 but net.classes is 10.*set net.classes to 23"):
        get_rec_iterators(record_data(rec, rec), 4, classes=10)
    unlabeled = pack_like_im2rec(tmp_path / "test", [-1, -1, -1])
    with pytest.raises(RecipeError, match="unlabeled images"):
        get_rec_iterators(record_data(rec, unlabeled), 4, classes=n)


def test_a_crop_larger_than_the_images_is_refused(unique):
    rec, n = unique                          # images are 36x48
    with pytest.raises(RecipeError, match=r"shorter side of 36.*data.train_resize >= 64"):
        get_rec_iterators(record_data(rec, rec, data_shape=[3, 64, 64]), 4, n)
    with pytest.raises(RecipeError, match=r"data.resize >= 64"):
        get_rec_iterators(record_data(rec, rec, data_shape=[3, 64, 64], random_resized_crop=True), 4, n)
    train, val = get_rec_iterators(record_data(rec, rec, data_shape=[3, 64, 64], random_resized_crop=True,
                                               resize=72), 4, n)
    assert next(iter(val)).data[0].shape == (4, 3, 64, 64)
    with pytest.raises(RecipeError, match="channels must be 3"):
        get_rec_iterators(record_data(rec, rec, data_shape=[2, 32, 32]), 4, n)


def test_thread_plan_passes_the_decode_cap():
    assert decode_thread_cap(2) == 1 and decode_thread_cap(16) == 7
    assert plan_threads(0, cores=2) == [1, 1]
    assert plan_threads(0, cores=16) == [6, 5, 5]
    assert plan_threads(4, cores=16) == [4]
    assert all(t <= decode_thread_cap(16) for t in plan_threads(40, cores=16))
