"""Pack image folders into im2rec-format .lst/.rec/.idx sets, with a class map, the training
mean and a report of every bad file. Outputs keep `.partial` names until the whole build is done.
"""
from __future__ import annotations

import errno
import io
import json
import multiprocessing
import os
import random
import stat
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .. import atomic
from ..errors import UserError
from . import layouts
from .layouts import Item, LayoutError
from .rec_writer import RecordWriter

LAYOUTS = ("folders", "imagenet-train", "imagenet-val", "dogs-vs-cats")
SUFFIXES = (".lst", ".idx", ".classes.json", ".mean.json", ".report.json", ".rec")  # .rec renamed last
PARTIAL = ".partial"


@dataclass
class Prepared:
    """One image made ready for a record: JPEG bytes, or None when the file is skipped."""
    jpeg: bytes | None
    problem: str = ""          # "" for a clean file; else what was wrong (and converted, or skipped)
    sums: np.ndarray | None = None   # per-channel RGB sums then sums of squares, float64 (6,)
    pixels: int = 0
    height: int = 0
    width: int = 0


def _resize_shorter(image: np.ndarray, side: int) -> np.ndarray:
    """The shorter side to `side`. Bilinear (im2rec's choice) down to half size, where every input pixel
    still weighs in and it costs a quarter of INTER_AREA here; INTER_AREA below half, where bilinear skips
    pixels and aliases. JPEGs reach this already reduced within 2x of `side` (prepare_image's DCT downscale)."""
    h, w = image.shape[:2]
    scale = side / min(h, w)
    size = (max(side, round(w * scale)), max(side, round(h * scale)))   # (width, height) for cv2
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR)


def _conversion_note(path: Path, fmt: str | None, mode: str) -> str:
    notes = []
    if path.suffix.lower() in (".jpg", ".jpeg") and fmt != "JPEG":
        notes.append(f"{fmt} data in a {path.suffix} file")
    if mode == "CMYK":
        notes.append("CMYK")
    elif mode in ("1", "L", "LA", "I", "I;16", "F"):
        notes.append(f"grayscale ({mode})")
    elif mode != "RGB":
        notes.append(f"mode {mode}")
    return ", ".join(notes) + " -> converted to RGB JPEG" if notes else ""


def _reduction(size: tuple[int, int], resize: int) -> int:
    """The JPEG decoder's DCT-domain downscale (1, 2, 4 or 8) that still leaves the shorter side >= `resize`:
    what PIL's Image.draft picks for the same request."""
    if resize <= 0:
        return 1
    scale = resize / min(size)
    wanted = (int(size[0] * scale) + 1, int(size[1] * scale) + 1)     # the request prepare_image makes of PIL
    most = min(size[0] // wanted[0], size[1] // wanted[1])
    return next((factor for factor in (8, 4, 2) if most >= factor), 1)


# cv2.imdecode flags for a reduction of 1, 2, 4, 8; EXIF orientation ignored, as PIL does (the pixels as stored)
CV2_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}


def _decode(path: Path, data: bytes, resize: int) -> tuple[np.ndarray | None, str, str]:
    """(BGR pixels or None, problem, format): decoded, checked and converted to 3 channels.

    A whole RGB JPEG (its last bytes the end-of-image marker, so not cut short) is decoded by cv2 straight
    into the BGR array its encoder takes (PIL costs a copy out of PIL and a channel swap more); everything
    else (other formats, CMYK, grayscale, a file cut short, data cv2 refuses) goes through PIL, which tells
    what is wrong. PIL reads the header in both cases (format, mode, size: ~0.04 ms).
    """
    from PIL import Image, ImageFile, UnidentifiedImageError
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as img:
            warnings.simplefilter("ignore")            # EXIF and size warnings: not our concern
            fmt, mode, size = img.format, img.mode, img.size
            if fmt == "JPEG" and mode == "RGB" and data.endswith(b"\xff\xd9"):
                flags = CV2_FLAGS[_reduction(size, resize)] | cv2.IMREAD_IGNORE_ORIENTATION
                bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
                if bgr is not None:
                    return bgr, "", fmt
            if resize > 0 and fmt == "JPEG":
                scale = resize / min(size)
                img.draft("RGB", (int(size[0] * scale) + 1, int(size[1] * scale) + 1))  # DCT-domain downscale
            # raises on truncated or corrupt data, unless PIL was told to load cut files: importing gluoncv does
            # that for the whole process (gluoncv/data/mhp.py sets ImageFile.LOAD_TRUNCATED_IMAGES = True)
            allowed, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
            try:
                img.load()
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = allowed
            rgb = np.asarray(img.convert("RGB"))       # handles CMYK (Adobe inverted too), L, P, RGBA
    except UnidentifiedImageError:
        return None, "not an image -> skipped", ""
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        kind = "truncated" if "truncated" in str(err) else "corrupt"
        return None, f"{kind} ({err}) -> skipped", ""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _conversion_note(path, fmt, mode), fmt


def read_without_links(path: Path, root: Path) -> bytes:
    """The bytes of `path`, a regular file under `root`, opened one folder at a time and following no
    symbolic link (O_NOFOLLOW at every step): a link planted after the folder was listed cannot redirect
    the read out of `root`, nor a FIFO planted there stall it."""
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in path.relative_to(root).parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            os.close(folder)
            folder = inner
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    finally:
        os.close(folder)
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return handle.read()


def prepare_image(path: Path, resize: int = 0, quality: int = 95, root: Path | None = None) -> Prepared:
    """Decode, check, convert to RGB, resize the shorter side to `resize` (0: keep) and encode.

    A clean RGB JPEG that needs no resize keeps its bytes (no second lossy encode). With `root`, the
    file is read following no link (`read_without_links`).
    """
    try:
        data = path.read_bytes() if root is None else read_without_links(path, root)
    except OSError as err:       # unreadable, or a link or other non-file put in its place since the listing
        return Prepared(None, f"cannot be read ({err.strerror or err}) -> skipped")
    if not data:
        return Prepared(None, "empty file -> skipped")
    bgr, problem, fmt = _decode(path, data, resize)
    if bgr is None:
        return Prepared(None, problem)
    if resize > 0:
        bgr = _resize_shorter(bgr, resize)
    if resize <= 0 and not problem and fmt == "JPEG":
        jpeg = data
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        jpeg = buf.tobytes()
    # Per-channel mean and std in float64 (cv2: SIMD, ~100x faster than numpy's float64 sums here), as sums
    mean, std = (v.ravel()[::-1] for v in cv2.meanStdDev(bgr))       # BGR -> RGB
    pixels = bgr.shape[0] * bgr.shape[1]
    sums = np.concatenate([mean * pixels, (std * std + mean * mean) * pixels])
    return Prepared(jpeg, problem, sums, pixels, bgr.shape[0], bgr.shape[1])


def _prepare_job(job: tuple[int, Path, int, int, Path | None]) -> tuple[int, Prepared]:
    number, path, resize, quality, root = job
    return number, prepare_image(path, resize, quality, root)


def _worker_init() -> None:
    cv2.setNumThreads(1)   # one process per core already; cv2's own threads would oversubscribe
    _keep_freed_memory()


def _keep_freed_memory() -> None:
    """Let glibc keep freed image buffers for the next image instead of handing them back to the kernel.

    Its defaults gave every image ~240 fresh pages to fault in (the decoded, resized and encoded buffers):
    a quarter of the packing CPU time, in the kernel. With these thresholds a process reuses the same
    memory and faults ~0 pages an image. mallopt is glibc's; elsewhere this does nothing.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(-3, 32 << 20)      # M_MMAP_THRESHOLD: buffers below 32 MB come from the heap
        libc.mallopt(-1, 64 << 20)      # M_TRIM_THRESHOLD: the heap's free top is trimmed past 64 MB only
    except (OSError, AttributeError, TypeError):
        pass


class RecordSet:
    """One OUT_PREFIX.{lst,rec,idx} set, written under .partial names; `finish` adds the stats."""

    def __init__(self, prefix: Path):
        self.prefix = prefix
        self.count = 0
        self.sums = np.zeros(6)
        self.pixels = 0
        self.sides: list[int] = [1 << 30, 0]       # min, max shorter side
        self._lst = atomic.open_new(self.partial(".lst"))   # first: an unwritable place raises OSError naming it
        self._writer = RecordWriter(self.partial(".idx"), self.partial(".rec"))

    def partial(self, suffix: str) -> str:
        return f"{self.prefix}{suffix}{PARTIAL}"

    def add(self, item: Item, prepared: Prepared) -> None:
        record_id = self.count if item.record_id is None else item.record_id
        self._writer.write(record_id, item.label, prepared.jpeg)      # IRHeader(0, label, id, 0), as im2rec
        self._lst.write(f"{record_id}\t{item.label:f}\t{item.rel}\n")
        self.count += 1
        self.sums += prepared.sums
        self.pixels += prepared.pixels
        short = min(prepared.height, prepared.width)
        self.sides = [min(self.sides[0], short), max(self.sides[1], short)]

    def close(self) -> None:
        self._writer.close()
        self._lst.close()

    def write_json(self, suffix: str, content: dict) -> None:
        with atomic.open_new(self.partial(suffix)) as out:
            out.write(json.dumps(content, indent=1) + "\n")

    def stats(self) -> dict:
        mean = self.sums[:3] / max(self.pixels, 1)
        std = np.sqrt(np.maximum(self.sums[3:] / max(self.pixels, 1) - mean ** 2, 0))
        return {"mean": [round(v, 3) for v in mean], "std": [round(v, 3) for v in std], "images": self.count,
                "min_side": self.sides[0] if self.count else 0, "max_side": self.sides[1]}

    def discard(self) -> None:
        """Close without raising (a full disk fails the last flush too) and remove every .partial file."""
        for stream in (self._writer, self._lst):
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - the files are deleted next
                pass
        for suffix in SUFFIXES:
            Path(self.partial(suffix)).unlink(missing_ok=True)


@dataclass
class BuildResult:
    sets: dict[str, int]                 # OUT prefix -> images written
    converted: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    report: str = ""                     # path of the report file


def list_items(layout: str, src: Path, ground_truth: Path | None = None, synset_order: Path | None = None,
               classes_file: Path | None = None, follow_links: bool = False) -> tuple[list[Item], list[str]]:
    if layout == "folders":
        return layouts.list_class_folders(src, follow_links)
    if layout == "imagenet-train":
        return layouts.list_imagenet_train(src, follow_links)
    if layout == "dogs-vs-cats":
        return layouts.list_dogs_vs_cats(src, follow_links)
    if layout == "imagenet-val":
        if ground_truth is None:
            raise LayoutError("--layout imagenet-val needs --ground-truth (LOC_val_solution.csv, a synset per "
                              "line, or ILSVRC2012_validation_ground_truth.txt with --synset-order).")
        classes = layouts.read_classes_file(classes_file) if classes_file else None
        return layouts.list_imagenet_val(src, ground_truth, classes, synset_order, follow_links)
    raise LayoutError(f"unknown layout {layout!r}: one of {', '.join(LAYOUTS)}.")


def _run_jobs(jobs: list[tuple], workers: int, progress: bool, desc: str):
    """Yield (number, Prepared) in job order, on `workers` processes, with a progress bar and ETA."""
    from tqdm import tqdm
    # a log file (no terminal) gets a line a minute instead of a carriage-return stream
    bar = tqdm(total=len(jobs), unit="img", desc=desc, disable=not progress, smoothing=0.05,
               mininterval=0.5 if sys.stderr.isatty() else 60)
    if workers <= 1:
        _keep_freed_memory()
        results, pool = map(_prepare_job, jobs), None
    else:
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_init)
        results = pool.imap(_prepare_job, jobs, chunksize=8)
    try:
        for result in results:
            bar.update()
            yield result
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()


def build_rec(src: str | Path, out_prefix: str | Path, layout: str = "folders", resize: int = 0,
              quality: int = 95, holdout: int = 0, seed: int = 0, workers: int = 0,
              ground_truth: str | Path | None = None, synset_order: str | Path | None = None,
              classes_file: str | Path | None = None, synset_words: str | Path | None = None,
              progress: bool = True, follow_links: bool = False) -> BuildResult:
    """Pack `src` into OUT_PREFIX.{lst,rec,idx} (+ OUT_PREFIX_val.* when `holdout` > 0).

    Also writes OUT_PREFIX.classes.json (label -> name, words), .mean.json (RGB mean/std and
    shorter-side range of the images written) and .report.json (converted and skipped files).
    Symbolic links that lead out of `src` are refused unless `follow_links`; without it every image is
    read following no link at all, so a link planted after the listing cannot redirect a read.
    Raises LayoutError (a ValueError) when the source does not match the layout.
    """
    src, out_prefix = Path(src), Path(out_prefix)
    if not src.is_dir():
        raise LayoutError(f"source folder not found: {src}")
    if not 1 <= quality <= 100:
        raise LayoutError(f"--quality {quality}: must be 1..100.")
    items, classes = list_items(layout, src, *(Path(p) if p else None for p in (ground_truth, synset_order, classes_file)),
                                follow_links=follow_links)
    result = BuildResult(sets={})
    result.skipped = [{"file": it.rel, "problem": "no label for this file name -> skipped"}
                      for it in items if it.label is None]
    items = [it for it in items if it.label is not None]
    fixed_ids = any(it.record_id is not None for it in items)
    if holdout and fixed_ids:
        raise LayoutError("--holdout needs labeled images; the Dogs vs. Cats test folder (N.jpg) has none.")
    if layout != "imagenet-val" and not fixed_ids:
        random.Random(seed).shuffle(items)     # mixed classes on disk: contiguous shards stay balanced
    parts = [(out_prefix, items)]
    if holdout:
        kept, held = layouts.holdout_split(items, holdout, seed)
        parts = [(out_prefix, kept), (Path(f"{out_prefix}_val"), held)]
    words = layouts.read_synset_words(Path(synset_words)) if synset_words else {}
    class_map = {str(i): {"name": name, **({"words": words[name]} if name in words else {})}
                 for i, name in enumerate(classes)}
    sets: list[RecordSet] = []
    try:
        out_prefix.parent.mkdir(parents=True, exist_ok=True)
        sets.extend(RecordSet(prefix) for prefix, _ in parts)
        _write_sets(sets, parts, resize, quality, workers or len(os.sched_getaffinity(0)), progress, result,
                    None if follow_links else src.resolve())
        for record_set in sets:
            record_set.write_json(".classes.json", class_map)
            record_set.write_json(".mean.json", record_set.stats())
        result.report = f"{out_prefix}.report.json"
        sets[0].write_json(".report.json", {"source": str(src), "layout": layout, "written": result.sets,
                                            "converted": result.converted, "skipped": result.skipped})
        _publish(sets)
    except BaseException as err:
        for record_set in sets:
            record_set.discard()
        problem = _write_failure(err, Path(f"{out_prefix}.rec"))
        if problem:
            raise UserError(f"{problem}; the build's .partial files were removed.") from None
        raise
    return result


def _write_failure(err: BaseException, rec: Path) -> str | None:
    """One line for a failed write (full disk, read-only place), None for any other error."""
    if isinstance(err, OSError):         # the .rec writer's OSError names no file: the .rec is meant
        return atomic.explain(err.filename or rec, err)
    return None


def _write_sets(sets: list[RecordSet], parts: list, resize: int, quality: int, workers: int,
                progress: bool, result: BuildResult, root: Path | None) -> None:
    owner = [(record_set, item) for record_set, (_, part) in zip(sets, parts) for item in part]
    jobs = [(n, item.path, resize, quality, root) for n, (_, item) in enumerate(owner)]
    for n, prepared in _run_jobs(jobs, workers, progress, f"packing {sets[0].prefix.name}"):
        record_set, item = owner[n]
        if prepared.problem:
            (result.converted if prepared.jpeg else result.skipped).append(
                {"file": item.rel, "problem": prepared.problem})
        if prepared.jpeg is not None:
            record_set.add(item, prepared)
    for record_set in sets:
        record_set.close()
        if record_set.count == 0:
            raise LayoutError(f"no usable image for {record_set.prefix}.rec: every file was skipped "
                              f"(first problem: {result.skipped[0]['problem'] if result.skipped else 'none'}).")
        result.sets[f"{record_set.prefix}"] = record_set.count


def _publish(sets: list[RecordSet]) -> None:
    """Rename .partial files to their final names. Old .rec files go first and new ones come
    last, so an interruption never leaves a .rec beside files from another build."""
    for record_set in sets:
        Path(f"{record_set.prefix}.rec").unlink(missing_ok=True)
    for suffix in SUFFIXES:
        for record_set in sets[::-1]:              # the main .rec is the very last file to appear
            partial = Path(record_set.partial(suffix))
            if partial.exists():
                os.replace(partial, f"{record_set.prefix}{suffix}")
