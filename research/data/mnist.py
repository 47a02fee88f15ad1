"""MNIST from the four standard IDX files (.gz or raw): read, download with checksums, iterate.

IDX format (http://yann.lecun.com/exdb/mnist/): bytes 0-1 zero, byte 2 the dtype code,
byte 3 the number of dimensions, then one big-endian uint32 per dimension, then the data.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import os
import struct
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from .. import atomic
from ..config import MnistData
from ..errors import UserError
from .arrays import ArrayIter

log = logging.getLogger(__name__)

# The .gz files' digests: MD5 as torchvision lists them, SHA-1 as MXNet's gluon MNIST dataset
# lists them; every mirror below serves the same bytes.
CHECKSUMS: dict[str, dict[str, str]] = {
    "train-images-idx3-ubyte": {"md5": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                "sha1": "6c95f4b05d2bf285e1bfb0e7960c31bd3b3f8a7d"},
    "train-labels-idx1-ubyte": {"md5": "d53e105ee54ea40749a09fcbcd1e9432",
                                "sha1": "2a80914081dc54586dbdf242f9805a6b8d2a15fc"},
    "t10k-images-idx3-ubyte": {"md5": "9fb629c4189551a2d022fa330f9573f3",
                               "sha1": "c3a25af1f52dad7f726cce8cacb138654b760d48"},
    "t10k-labels-idx1-ubyte": {"md5": "ec29112dd5afa0611ce80d1b7f02629c",
                               "sha1": "763e7fa3757d93b0cdec073cef058b2004252c17"},
}
FILES = tuple(CHECKSUMS)

# Tried in order. LeCun's own site comes last: it has at times refused downloads (HTTP 403).
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/dataset/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
TIMEOUT_S = 30.0      # per connect/read; a stalled mirror gives way to the next one
MAX_BYTES = 1 << 30   # the most data read_idx takes from one file (EMNIST's largest, a drop-in, has 547 MB)

_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class MnistError(UserError):
    """MNIST files missing, damaged or not downloadable (a ValueError): tools exit 2 on it."""


def read_idx(path: str | Path, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read one IDX file (gzip-compressed if its name ends in .gz) into a native-endian array.

    The data is read no further than the shape the header declares (at most `max_bytes`): a small .gz
    that inflates to gigabytes is refused at that bound instead of filling memory.

    Raises:
        MnistError: the file is truncated, corrupt, too large or not IDX; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise MnistError(f"{path}: no such file.")
    fix = "The file is damaged or incomplete: delete it and run again to re-download it (or copy in a good one)."
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as stream:
            head = stream.read(4)
            if not head:
                raise MnistError(f"{path}: the file is empty. {fix}")
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise MnistError(f"{path}: not an IDX file (bad magic number 0x{head.hex()}). {fix}")
            code, ndim = head[2], head[3]
            if code not in _IDX_DTYPES:
                raise MnistError(f"{path}: unknown IDX data type code 0x{code:02x}. {fix}")
            sizes = stream.read(4 * ndim)
            if ndim == 0 or len(sizes) < 4 * ndim:
                raise MnistError(f"{path}: truncated IDX header ({4 + len(sizes)} bytes, {ndim} dimensions). {fix}")
            dims = struct.unpack(f">{ndim}I", sizes)
            dtype = _IDX_DTYPES[code]
            expected = math.prod(dims) * dtype.itemsize     # Python ints: a corrupt header cannot overflow
            if expected > max_bytes:
                raise MnistError(f"{path}: the header gives shape {dims} of {dtype.name} ({expected} bytes), more "
                                 f"than the {max_bytes} this reader takes (MNIST's largest file has 47,040,000). {fix}")
            raw = stream.read(expected)
            longer = stream.read(1) != b""
    except (OSError, EOFError, zlib.error) as err:   # BadGzipFile is an OSError; a cut .gz an EOFError
        raise MnistError(f"{path}: cannot be read ({err}). {fix}") from None
    if len(raw) != expected or longer:
        what = "longer than its header says" if longer else "truncated"
        raise MnistError(f"{path}: {what}: the header gives shape {dims} of {dtype.name} "
                         f"({expected} data bytes), the file has {'more' if longer else len(raw)}. {fix}")
    array = np.frombuffer(raw, dtype=dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="))     # a writable copy in native byte order


def _locate(root: Path) -> dict[str, Path | None]:
    """Each of FILES -> its raw or .gz copy in root (raw preferred: no gunzip), or None."""
    found = {}
    for name in FILES:
        candidates = [root / name, root / f"{name}.gz"]
        found[name] = next((p for p in candidates if p.is_file()), None)
    return found


def _where_to_get(root: Path, missing: list[str]) -> str:
    return (f"Put {', '.join(f'{n}.gz' for n in missing)} (gzipped or not) in {root}/, "
            f"from a machine with internet access; each is at any of {', '.join(MIRRORS)} "
            f"(e.g. {MIRRORS[0]}{missing[0]}.gz).")


def check_mnist(data: MnistData) -> None:
    """Fail fast, before any heavy work, when the files are absent and may not be downloaded.

    Raises:
        MnistError: naming the missing files, the folder and where to get them.
    """
    _check(Path(data.root).expanduser().resolve(), data.download)


def _check(root: Path, download: bool) -> dict[str, Path | None]:
    found = _locate(root)
    missing = [name for name, path in found.items() if path is None]
    if missing and not download:
        raise MnistError(f"MNIST files missing and data.download is false. "
                         f"{_where_to_get(root, missing)} Or set data.download=true.")
    return found


def _fetch(url: str, dest: Path, expected: dict[str, str]) -> None:
    """Download url to dest via a temp file in dest's folder, renamed only if the digests match."""
    digests = {algo: hashlib.new(algo) for algo in expected}
    tmp = atomic.temporary_file(dest, suffix=".part")
    try:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            while block := response.read(1 << 20):
                out.write(block)
                for digest in digests.values():
                    digest.update(block)
        for algo, digest in digests.items():
            if digest.hexdigest() != expected[algo]:
                raise MnistError(f"checksum mismatch ({algo} {digest.hexdigest()}, expected {expected[algo]})")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _download(root: Path, name: str) -> Path:
    """Fetch name.gz from the first mirror that serves a copy with the right checksums."""
    dest = root / f"{name}.gz"
    failures = []
    for mirror in MIRRORS:
        url = f"{mirror}{name}.gz"
        log.info("downloading %s", url)
        try:
            _fetch(url, dest, CHECKSUMS[name])
            return dest
        # URLError, HTTPError and timeouts are OSErrors; a connection cut mid-body is an HTTPException
        except (OSError, http.client.HTTPException, MnistError) as err:
            log.warning("%s failed: %s", url, err)
            failures.append(f"{url}: {err}")
    raise MnistError(f"no mirror served {name}.gz (tried {len(MIRRORS)}; last: {failures[-1]})")


def load_mnist(root: str, download: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (x_train, y_train, x_test, y_test): x float32 (N, 1, 28, 28) in [0, 1], y int32.

    Files missing from root are downloaded first when `download` is true.

    Raises:
        MnistError: files missing and not downloadable, damaged, or not MNIST-shaped.
    """
    root_path = Path(root).expanduser().resolve()
    paths = _check(root_path, download)
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        try:
            root_path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MnistError(f"cannot create the MNIST folder {root_path} ({err}); "
                             f"set data.root to a writable folder.") from None
        pending = list(missing)
        for name in missing:
            try:
                paths[name] = _download(root_path, name)
            except MnistError as err:
                raise MnistError(f"MNIST files missing and the download failed: {err}. "
                                 f"{_where_to_get(root_path, pending)}") from None
            pending.remove(name)
    x_train, y_train = _images_and_labels(paths["train-images-idx3-ubyte"], paths["train-labels-idx1-ubyte"])
    x_test, y_test = _images_and_labels(paths["t10k-images-idx3-ubyte"], paths["t10k-labels-idx1-ubyte"])
    return x_train, y_train, x_test, y_test


def _images_and_labels(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise MnistError(f"{images_path}: expected uint8 images of shape (N, 28, 28), "
                         f"got {images.dtype} {images.shape}. Is it an MNIST image file?")
    if labels.ndim != 1 or len(labels) != len(images):
        raise MnistError(f"{labels_path}: expected {len(images)} labels to match {images_path.name}, "
                         f"got shape {labels.shape}.")
    if labels.size and labels.max() > 9:
        raise MnistError(f"{labels_path}: labels must be digits 0-9, found {labels.max()}.")
    x = (images.astype(np.float32) / 255.0)[:, None, :, :]    # (N, 1, 28, 28): NCHW, one channel
    return x, labels.astype(np.int32)


def get_mnist_iterators(data: MnistData, batch_size: int, seed: int = 0,
                        num_parts: int = 1, part_index: int = 0) -> tuple[ArrayIter, ArrayIter]:
    """(train, val): the 60k training images shuffled per epoch, and the 10k test images.

    Every distributed part loads all files and keeps its own slice of the training set;
    each part evaluates on the whole test set.
    """
    x_train, y_train, x_test, y_test = load_mnist(data.root, data.download)
    train = ArrayIter(x_train, y_train, batch_size, shuffle=True, drop_last=True, seed=seed,
                      num_parts=num_parts, part_index=part_index)
    return train, ArrayIter(x_test, y_test, batch_size)
