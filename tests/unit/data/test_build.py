"""tools/build_rec.py's library: layouts, labels, bad files, hold-out, mean, interrupted builds."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from research.data import build
from research.data.build import build_rec
from research.data.layouts import LayoutError


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])


def random_image(rng: np.random.RandomState, height: int = 40, width: int = 52) -> np.ndarray:
    return rng.randint(0, 256, (height, width, 3), dtype=np.uint8)


def class_folders(root: Path, classes=("cat", "dog", "emu"), per_class: int = 7, seed: int = 0) -> Path:
    rng = np.random.RandomState(seed)
    for name in classes:
        for i in range(per_class):
            write_jpeg(root / name / f"{name}_{i}.jpg", random_image(rng))
    return root


def read_records(prefix: Path) -> list[tuple[mx.recordio.IRHeader, bytes]]:
    record = mx.recordio.MXIndexedRecordIO(f"{prefix}.idx", f"{prefix}.rec", "r")
    out = [mx.recordio.unpack(record.read_idx(key)) for key in record.keys]
    record.close()
    return out


def read_lst(prefix: Path) -> list[tuple[int, float, str]]:
    rows = [line.split("\t") for line in Path(f"{prefix}.lst").read_text().splitlines()]
    return [(int(i), float(label), path) for i, label, path in rows]


def test_class_folders_round_trip_labels_and_bytes(tmp_path):
    src = class_folders(tmp_path / "src")
    result = build_rec(src, tmp_path / "out" / "train", workers=1, progress=False)
    prefix = tmp_path / "out" / "train"
    rows = read_lst(prefix)
    assert result.sets == {str(prefix): 21} and len(rows) == 21
    names = ["cat", "dog", "emu"]                                  # sorted folder names give the labels
    assert all(label == names.index(path.split("/")[0]) for _, label, path in rows)
    records = read_records(prefix)
    for (record_id, label, path), (header, payload) in zip(rows, records):
        assert (header.flag, header.label, header.id, header.id2) == (0, label, record_id, 0)
        assert payload == (src / path).read_bytes()               # clean JPEGs are stored unchanged
    classes = json.loads(Path(f"{prefix}.classes.json").read_text())
    assert [classes[str(i)]["name"] for i in range(3)] == names


def test_records_are_read_by_mxnet_iterators(tmp_path):
    src = class_folders(tmp_path / "src", per_class=5)
    prefix = tmp_path / "train"
    build_rec(src, prefix, workers=2, progress=False)               # also runs the worker pool
    expected = sorted(label for _, label, _ in read_lst(prefix))
    dataset = mx.gluon.data.vision.ImageRecordDataset(f"{prefix}.rec")
    assert len(dataset) == 15 and sorted(dataset[i][1] for i in range(15)) == expected
    assert dataset[0][0].shape == (40, 52, 3)
    it = mx.io.ImageRecordIter(path_imgrec=f"{prefix}.rec", data_shape=(3, 32, 32), batch_size=5,
                               round_batch=False, verbose=False)
    labels = sorted(float(v) for batch in it for v in batch.label[0].asnumpy())
    assert labels == expected


@pytest.fixture(params=[False, True], ids=["pil-default", "after-gluoncv-import"])
def truncated_images_allowed(request, monkeypatch):
    """PIL's process-wide LOAD_TRUNCATED_IMAGES, which importing gluoncv sets to True."""
    from PIL import ImageFile
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", request.param)


def test_bad_files_are_converted_or_skipped_and_reported(tmp_path, truncated_images_allowed):
    src = class_folders(tmp_path / "src", classes=("a", "b"), per_class=3)
    rng = np.random.RandomState(1)
    (src / "a" / "text.jpg").write_text("not an image at all")
    (src / "a" / "empty.jpg").write_bytes(b"")
    whole = (src / "a" / "a_0.jpg").read_bytes()
    (src / "a" / "truncated.jpg").write_bytes(whole[:len(whole) // 2])
    Image.fromarray(random_image(rng)).convert("CMYK").save(src / "b" / "cmyk.jpg")
    Image.fromarray(np.full((40, 52), 77, np.uint8)).save(src / "b" / "gray.jpg")
    Image.fromarray(np.full((40, 52, 3), (10, 200, 30), np.uint8)).save(src / "b" / "png.jpg", format="PNG")
    result = build_rec(src, tmp_path / "out", workers=1, progress=False)

    assert {e["file"] for e in result.skipped} == {"a/text.jpg", "a/empty.jpg", "a/truncated.jpg"}
    assert {e["file"] for e in result.converted} == {"b/cmyk.jpg", "b/gray.jpg", "b/png.jpg"}
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert report["skipped"] == result.skipped and report["converted"] == result.converted
    rows = read_lst(tmp_path / "out")
    assert len(rows) == 6 + 3
    images = {path: mx.image.imdecode(payload).asnumpy()          # RGB, as the iterators decode
              for (_, _, path), (_, payload) in zip(rows, read_records(tmp_path / "out"))}
    assert images["b/gray.jpg"].shape == (40, 52, 3) and np.abs(images["b/gray.jpg"].astype(int) - 77).max() <= 2
    assert np.abs(images["b/png.jpg"].astype(int) - (10, 200, 30)).max() <= 4


@pytest.mark.parametrize("height, width, resize", [(120, 160, 64), (600, 800, 64), (48, 64, 0)])
def test_fast_and_checked_decoders_give_the_same_image(tmp_path, height, width, resize):
    """A whole RGB JPEG goes through cv2, anything else through PIL's checks: the same pixels either way
    (a few bytes after the end-of-image marker send the same image down the PIL path). 600x800 to 64 is
    decoded at 1/8 scale in the DCT by both."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)
    write_jpeg(tmp_path / "whole.jpg", rgb)
    (tmp_path / "tail.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes() + b"\0\0")
    fast, checked = (build.prepare_image(tmp_path / name, resize) for name in ("whole.jpg", "tail.jpg"))
    assert fast.problem == checked.problem == "" and (fast.height, fast.width) == (checked.height, checked.width)
    assert min(fast.height, fast.width) == (resize or height)
    a, b = (cv2.imdecode(np.frombuffer(p.jpeg, np.uint8), cv2.IMREAD_COLOR).astype(int) for p in (fast, checked))
    assert np.abs(a - b).mean() < 1.0
    np.testing.assert_allclose(fast.sums[:3] / fast.pixels, checked.sums[:3] / checked.pixels, atol=1.0)


def test_interrupted_build_leaves_old_outputs_and_no_new_ones(tmp_path, monkeypatch):
    src = class_folders(tmp_path / "src", per_class=4)
    prefix = tmp_path / "train"
    build_rec(src, prefix, workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("train*")}
    calls = []

    def failing(path, *args):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt       # as a Ctrl-C in the middle of the build
        return real(path, *args)

    real = build.prepare_image
    monkeypatch.setattr(build, "prepare_image", failing)
    with pytest.raises(KeyboardInterrupt):
        build_rec(src, prefix, resize=16, workers=1, progress=False)
    after = {p.name: p.read_bytes() for p in tmp_path.glob("train*")}
    assert after == before                # the earlier complete build is untouched, no .partial left
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        build_rec(src, tmp_path / "fresh", workers=1, progress=False)
    assert list(tmp_path.glob("fresh*")) == []


def test_holdout_is_stratified_and_disjoint(tmp_path):
    src = class_folders(tmp_path / "src", per_class=10)
    result = build_rec(src, tmp_path / "train", holdout=6, seed=3, workers=1, progress=False)
    train, val = read_lst(tmp_path / "train"), read_lst(tmp_path / "train_val")
    assert result.sets == {str(tmp_path / "train"): 24, str(tmp_path / "train_val"): 6}
    assert sorted(label for _, label, _ in val) == [0, 0, 1, 1, 2, 2]
    assert not {p for *_, p in train} & {p for *_, p in val}
    assert len({p for *_, p in train} | {p for *_, p in val}) == 30


def test_seed_fixes_the_record_order(tmp_path):
    src = class_folders(tmp_path / "src", per_class=6)
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        build_rec(src, tmp_path / name, seed=seed, workers=1, progress=False)
    order = {name: [p for *_, p in read_lst(tmp_path / name)] for name in "abc"}
    assert order["a"] == order["b"] != order["c"]
    assert sorted(order["a"]) == sorted(order["c"])


def test_resize_and_training_mean(tmp_path):
    colours = {"red": (200, 20, 20), "blue": (10, 30, 220)}
    for name, colour in colours.items():
        for i in range(3 if name == "red" else 1):
            write_jpeg(tmp_path / "src" / name / f"{i}.jpg", np.full((60, 90, 3), colour, np.uint8))
    build_rec(tmp_path / "src", tmp_path / "train", resize=24, workers=1, progress=False)
    stats = json.loads((tmp_path / "train.mean.json").read_text())
    expected = (3 * np.array(colours["red"]) + np.array(colours["blue"])) / 4      # 3 red, 1 blue image
    assert np.allclose(stats["mean"], expected, atol=2.0)
    assert stats["images"] == 4 and stats["min_side"] == stats["max_side"] == 24
    shapes = {mx.image.imdecode(payload).shape for _, payload in read_records(tmp_path / "train")}
    assert shapes == {(24, 36, 3)}


def test_dogs_vs_cats_train_and_test_folders(tmp_path):
    rng = np.random.RandomState(0)
    for name in ("cat.1.jpg", "dog.7.jpg", "cat.12.jpg", "dog.3.jpg", "readme.jpg"):
        write_jpeg(tmp_path / "train" / name, random_image(rng))
    for kaggle_id in (10, 2, 1):
        write_jpeg(tmp_path / "test" / f"{kaggle_id}.jpg", random_image(rng))
    result = build_rec(tmp_path / "train", tmp_path / "dvc_train", layout="dogs-vs-cats", workers=1, progress=False)
    labels = {path: label for _, label, path in read_lst(tmp_path / "dvc_train")}
    assert labels == {"cat.1.jpg": 0, "cat.12.jpg": 0, "dog.7.jpg": 1, "dog.3.jpg": 1}
    assert [e["file"] for e in result.skipped] == ["readme.jpg"]
    build_rec(tmp_path / "test", tmp_path / "dvc_test", layout="dogs-vs-cats", workers=1, progress=False)
    headers = [header for header, _ in read_records(tmp_path / "dvc_test")]
    assert [(h.id, h.label) for h in headers] == [(1, -1.0), (2, -1.0), (10, -1.0)]
    write_jpeg(tmp_path / "test" / "cat.5.jpg", random_image(rng))
    with pytest.raises(LayoutError, match="mixes test images"):
        build_rec(tmp_path / "test", tmp_path / "mixed", layout="dogs-vs-cats", workers=1, progress=False)


@pytest.mark.parametrize("form", ["csv", "synsets", "ids"])
def test_imagenet_val_maps_ground_truth_to_train_labels(tmp_path, form):
    rng = np.random.RandomState(0)
    synsets = ["n01440764", "n01443537", "n01484850"]           # sorted: train labels 0, 1, 2
    truth = {1: "n01484850", 2: "n01440764", 3: "n01443537", 4: "n01484850"}
    for number in truth:
        write_jpeg(tmp_path / "val" / f"ILSVRC2012_val_{number:08d}.JPEG", random_image(rng))
    extra = {}
    if form == "csv":
        gt = tmp_path / "LOC_val_solution.csv"
        gt.write_text("ImageId,PredictionString\n" + "".join(
            f"ILSVRC2012_val_{n:08d},{s} 1 2 30 40 {s} 5 6 7 8\n" for n, s in sorted(truth.items(), reverse=True)))
    elif form == "synsets":
        gt = tmp_path / "val_synsets.txt"
        gt.write_text("".join(f"{truth[n]}\n" for n in sorted(truth)))
    else:
        id_order = ["n01443537", "n01484850", "n01440764"]     # the devkit's ILSVRC2012_ID order is not sorted
        gt = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
        gt.write_text("".join(f"{id_order.index(truth[n]) + 1}\n" for n in sorted(truth)))
        extra["synset_order"] = tmp_path / "order.txt"
        extra["synset_order"].write_text("\n".join(id_order) + "\n")
    words = tmp_path / "LOC_synset_mapping.txt"
    words.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\nn01484850 great white shark\n")
    build_rec(tmp_path / "val", tmp_path / "imagenet_val", layout="imagenet-val", ground_truth=gt,
              synset_words=words, workers=1, progress=False, **extra)
    labels = {path: label for _, label, path in read_lst(tmp_path / "imagenet_val")}
    assert labels == {f"ILSVRC2012_val_{n:08d}.JPEG": synsets.index(s) for n, s in truth.items()}
    classes = json.loads((tmp_path / "imagenet_val.classes.json").read_text())
    assert classes["2"] == {"name": "n01484850", "words": "great white shark"}


def test_layout_errors_name_the_problem(tmp_path):
    (tmp_path / "flat").mkdir()
    write_jpeg(tmp_path / "flat" / "x.jpg", random_image(np.random.RandomState(0)))
    with pytest.raises(LayoutError, match="no class sub-folders"):
        build_rec(tmp_path / "flat", tmp_path / "out", progress=False)
    with pytest.raises(LayoutError, match="needs --ground-truth"):
        build_rec(tmp_path / "flat", tmp_path / "out", layout="imagenet-val", progress=False)
    with pytest.raises(LayoutError, match="not found"):
        build_rec(tmp_path / "missing", tmp_path / "out", progress=False)
    with pytest.raises(LayoutError, match="not synset ids"):
        build_rec(class_folders(tmp_path / "src", per_class=1), tmp_path / "out", layout="imagenet-train",
                  progress=False)


def test_links_out_of_the_source_folder_are_refused_unless_followed(tmp_path):
    """As a dataset from elsewhere might hold them: a file linked to a picture elsewhere on the disk, and a
    linked folder that would become a class. Links that stay inside the source folder are followed."""
    src = class_folders(tmp_path / "src", per_class=2)
    outside = tmp_path / "home" / "private"
    write_jpeg(outside / "holiday.jpg", random_image(np.random.RandomState(5)))
    (src / "dog" / "dup.jpg").symlink_to(src / "cat" / "cat_0.jpg")           # inside: followed
    build_rec(src, tmp_path / "inside", workers=1, progress=False)
    assert len(read_lst(tmp_path / "inside")) == 7
    (src / "cat" / "cute.jpg").symlink_to(outside / "holiday.jpg")
    with pytest.raises(LayoutError, match=rf"{src}/cat/cute.jpg links to {outside}/holiday.jpg, outside the source "
                                          rf"folder {src}; pass --follow-links"):
        build_rec(src, tmp_path / "out", workers=1, progress=False)
    (src / "cat" / "cute.jpg").unlink()
    (src / "zebra").symlink_to(outside)
    with pytest.raises(LayoutError, match=rf"{src}/zebra links to {outside}, outside"):
        build_rec(src, tmp_path / "out", workers=1, progress=False)
    assert not list(tmp_path.glob("out*"))
    result = build_rec(src, tmp_path / "followed", workers=1, progress=False, follow_links=True)
    assert result.sets == {str(tmp_path / "followed"): 8}
    assert ("zebra/holiday.jpg", 3.0) in {(path, label) for _, label, path in read_lst(tmp_path / "followed")}


def test_a_link_planted_after_the_listing_is_not_read_through(tmp_path):
    src = class_folders(tmp_path / "src", per_class=1)
    secret = tmp_path / "secret.jpg"
    write_jpeg(secret, random_image(np.random.RandomState(3)))
    image = src.resolve() / "cat" / "cat_0.jpg"
    assert build.prepare_image(image, root=src.resolve()).jpeg == image.read_bytes()
    image.unlink()
    image.symlink_to(secret)                              # swapped between the listing and the read
    assert build.prepare_image(image, root=src.resolve()).jpeg is None
    (src / "cat").rename(src / "cat.real")
    (src / "cat").symlink_to(secret.parent)               # a folder on the way swapped for a link
    prepared = build.prepare_image(image, root=src.resolve())
    assert prepared.jpeg is None and "cannot be read" in prepared.problem


def test_output_files_are_not_written_through_planted_links(tmp_path):
    """Links planted where the build writes its .partial files (a shared output folder): the build replaces
    them with its own files and the files they point to stay as they were."""
    src = class_folders(tmp_path / "src", per_class=2)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for suffix in (".lst", ".rec", ".idx", ".classes.json", ".mean.json", ".report.json"):
        Path(f"{tmp_path / 'out'}{suffix}.partial").symlink_to(victim)
    build_rec(src, tmp_path / "out", workers=1, progress=False)
    assert victim.read_text() == "precious"
    assert len(read_records(tmp_path / "out")) == 6 and not any(p.is_symlink() for p in tmp_path.glob("out*"))
