"""Source layouts for tools/build_rec.py: which image files to pack and their labels.

Each layout returns (items, class_names); an item's `record_id` is None unless the layout
fixes it (the Kaggle ids of the Dogs vs. Cats test folder). Symbolic links are followed where they stay
inside the source folder; one that leads out of it is refused unless `follow_links` (a folder from
elsewhere must not pack files from the rest of the disk, nor turn a linked folder into a class).
"""
from __future__ import annotations

import csv
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SYNSET = re.compile(r"^n\d{8}$")
UNLABELED = -1.0   # label of the Dogs vs. Cats test images, which have none


class LayoutError(UserError):
    """The source folder or a ground-truth file does not match the chosen layout: tools/build_rec.py says so in
    one line and exits 2."""


@dataclass
class Item:
    path: Path             # the image file; without follow_links its real path, with no link on the way
    rel: str               # path relative to SRC, as written in the .lst
    label: float | None    # None: no label found; the builder skips and reports it
    record_id: int | None = None


def _children(folder: Path, root: Path, follow_links: bool) -> list[tuple[Path, Path]]:
    """(path as listed, path to read) of each entry of `folder`, sorted. The path to read is the real one,
    with no link on the way (build_rec reads it following none), unless `follow_links`; an entry whose
    real path is outside `root` (the source folder's real path) raises LayoutError unless `follow_links`."""
    entries = []
    for path in sorted(folder.iterdir()):
        target = path if follow_links else Path(os.path.realpath(path))
        if not follow_links and not target.is_relative_to(root):
            raise LayoutError(f"{path} links to {target}, outside the source folder {root}; pass --follow-links "
                              f"to pack what such links point to, or remove the link.")
        entries.append((path, target))
    return entries


def _images_under(folder: Path, root: Path, follow_links: bool, seen: set[str]) -> list[tuple[Path, Path]]:
    """(path as listed, path to read) of the image files anywhere under `folder`, sorted; a folder
    reached twice through links is read once."""
    if os.path.realpath(folder) in seen:
        return []
    seen.add(os.path.realpath(folder))
    images = []
    for listed, real in _children(folder, root, follow_links):
        if real.is_dir():
            images += _images_under(listed, root, follow_links, seen)
        elif real.is_file() and listed.suffix.lower() in IMAGE_EXTENSIONS:
            images.append((listed, real))
    return images


def _image_files(src: Path, follow_links: bool) -> list[tuple[Path, Path]]:
    """(path as listed, path to read) of the image files directly in a flat `src`."""
    return [(listed, real) for listed, real in _children(src, src.resolve(), follow_links)
            if real.is_file() and listed.suffix.lower() in IMAGE_EXTENSIONS]


def list_class_folders(src: Path, follow_links: bool = False) -> tuple[list[Item], list[str]]:
    """One sub-folder per class; labels follow the sorted folder names, as im2rec does."""
    root = src.resolve()
    folders = [listed for listed, real in _children(src, root, follow_links)
               if real.is_dir() and not listed.name.startswith(".")]
    if not folders:
        raise LayoutError(f"{src}: no class sub-folders found. The 'folders' layout expects SRC/<class>/<image>; "
                          "use --layout imagenet-val or dogs-vs-cats for flat folders.")
    items = [Item(real, str(listed.relative_to(src)), float(label))
             for label, folder in enumerate(folders) for listed, real in _images_under(folder, root, follow_links, set())]
    return items, [folder.name for folder in folders]


def list_imagenet_train(src: Path, follow_links: bool = False) -> tuple[list[Item], list[str]]:
    """ILSVRC-2012 train: one folder per synset (n01440764, ...); labels follow sorted synsets."""
    items, classes = list_class_folders(src, follow_links)
    odd = [name for name in classes if not SYNSET.match(name)]
    if odd:
        raise LayoutError(f"{src}: folders {odd[:3]} are not synset ids like n01440764; "
                          "use the default --layout folders for other class names.")
    return items, classes


def list_dogs_vs_cats(src: Path, follow_links: bool = False) -> tuple[list[Item], list[str]]:
    """Kaggle Dogs vs. Cats: train `cat.N.jpg` / `dog.N.jpg` (labels 0 / 1), or the test folder
    `N.jpg`, whose Kaggle id N becomes the record id (label -1: unlabeled)."""
    classes = ["cat", "dog"]
    files = _image_files(src, follow_links)
    numeric = [(listed, real) for listed, real in files if listed.stem.isdigit()]
    if numeric and len(numeric) != len(files):
        raise LayoutError(f"{src}: mixes test images (N.jpg) with others such as "
                          f"{next(p.name for p, _ in files if not p.stem.isdigit())}; build train and test separately.")
    if numeric:
        numeric.sort(key=lambda pair: int(pair[0].stem))
        return [Item(real, listed.name, UNLABELED, int(listed.stem)) for listed, real in numeric], classes
    items = []
    for listed, real in files:
        kind = listed.name.split(".")[0].lower()
        # a stray name gets label None and is reported by the builder instead of aborting
        items.append(Item(real, listed.name, float(classes.index(kind)) if kind in classes else None))
    if not items:
        raise LayoutError(f"{src}: no images. The dogs-vs-cats layout expects cat.N.jpg / dog.N.jpg or N.jpg files.")
    return items, classes


def read_classes_file(path: Path) -> list[str]:
    """Class names in label order from a .classes.json written by build_rec, or one name per line."""
    import json
    if path.suffix == ".json":
        table = json.loads(path.read_text())
        return [table[str(i)]["name"] for i in range(len(table))]
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def read_synset_words(path: Path) -> dict[str, str]:
    """`n01440764 tench, Tinca tinca` lines (LOC_synset_mapping.txt, synset_words.txt) -> {synset: words}."""
    words = {}
    for line in path.read_text().splitlines():
        parts = line.strip().split(maxsplit=1)
        if parts:
            words[parts[0]] = parts[1] if len(parts) > 1 else ""
    return words


def _val_number(name: str) -> int | None:
    match = re.search(r"(\d+)$", Path(name).stem)
    return int(match.group(1)) if match else None


def read_val_ground_truth(ground_truth: Path, synset_order: Path | None) -> dict[int, str]:
    """{validation image number: synset} from one of three forms:

    LOC_val_solution.csv (ImageId,PredictionString: the first word is the synset);
    one synset per line, line i for ILSVRC2012_val_{i:08d};
    ILSVRC2012_validation_ground_truth.txt (ILSVRC2012_IDs 1..1000, one per line) together with
    `synset_order`, the synsets listed in ILSVRC2012_ID order (first word of each line).
    """
    if ground_truth.suffix.lower() == ".csv":
        with ground_truth.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "ImageId" not in rows[0] or "PredictionString" not in rows[0]:
            raise LayoutError(f"{ground_truth}: expected the columns ImageId,PredictionString of LOC_val_solution.csv.")
        return {_val_number(r["ImageId"]): r["PredictionString"].split()[0] for r in rows}
    lines = [line.split()[0] for line in ground_truth.read_text().splitlines() if line.strip()]
    if lines and SYNSET.match(lines[0]):
        return {i + 1: synset for i, synset in enumerate(lines)}
    if not lines or not all(v.isdigit() for v in lines):
        raise LayoutError(f"{ground_truth}: neither synsets nor ILSVRC2012_IDs (integers) one per line, nor a .csv.")
    if synset_order is None:
        raise LayoutError(f"{ground_truth} holds ILSVRC2012_IDs: pass --synset-order, the synsets in ID order "
                          "(from the devkit's meta.mat), to map them to synsets.")
    order = [line.split()[0] for line in synset_order.read_text().splitlines() if line.strip()]
    try:
        return {i + 1: order[int(v) - 1] for i, v in enumerate(lines)}
    except IndexError:
        raise LayoutError(f"{ground_truth}: ids go up to {max(map(int, lines))} but {synset_order} lists "
                          f"{len(order)} synsets.") from None


def list_imagenet_val(src: Path, ground_truth: Path, classes: list[str] | None,
                      synset_order: Path | None = None, follow_links: bool = False) -> tuple[list[Item], list[str]]:
    """Flat ILSVRC2012_val_*.JPEG folder; labels are positions in the train classes (sorted synsets
    by default, or `classes` from the train build's .classes.json). Unlisted images get label None."""
    truth = read_val_ground_truth(ground_truth, synset_order)
    classes = classes or sorted(set(truth.values()))
    position = {synset: i for i, synset in enumerate(classes)}
    unknown = sorted(set(truth.values()) - set(position))
    if unknown:
        raise LayoutError(f"{ground_truth}: synsets {unknown[:3]} are not among the {len(classes)} train classes.")
    items = []
    for listed, real in _image_files(src, follow_links):
        synset = truth.get(_val_number(listed.name))
        items.append(Item(real, listed.name, float(position[synset]) if synset else None))
    if not items:
        raise LayoutError(f"{src}: no images; the imagenet-val layout expects the flat ILSVRC2012_val_*.JPEG folder.")
    return items, classes


def holdout_split(items: list[Item], count: int, seed: int) -> tuple[list[Item], list[Item]]:
    """(kept, held_out): `count` items held out, stratified by label (largest remainder per class)."""
    if not 0 < count < len(items):
        raise LayoutError(f"--holdout {count}: must be between 1 and {len(items) - 1} (the set has {len(items)} images).")
    by_label: dict[float, list[Item]] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    shares = {label: count * len(group) / len(items) for label, group in by_label.items()}
    quota = {label: int(share) for label, share in shares.items()}
    by_remainder = sorted(shares, key=lambda label: (quota[label] - shares[label], label))
    for label in by_remainder[:count - sum(quota.values())]:
        quota[label] += 1
    rng = random.Random(seed)
    held = []
    for label in sorted(by_label):
        held += rng.sample(by_label[label], quota[label])
    held_ids = {id(item) for item in held}
    return [item for item in items if id(item) not in held_ids], held
