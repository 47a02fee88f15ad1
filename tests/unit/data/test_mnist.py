"""MNIST: IDX reading, damaged files, loading a fake MNIST folder, downloads from a local mirror."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from research.config import MnistData
from research.data import mnist
from research.data.mnist import MnistError, check_mnist, get_mnist_iterators, load_mnist, read_idx

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_CODES = {np.dtype("u1"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write an IDX file the way the MNIST distribution does (big-endian), gzipped if path ends in .gz."""
    big = array.astype(array.dtype.newbyteorder(">"))
    payload = bytes([0, 0, IDX_CODES[big.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += big.tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def fake_mnist(folder: Path, num_train: int = 64, num_test: int = 32, seed: int = 0, gz: bool = True) -> dict:
    """A tiny MNIST folder: random uint8 images and digit labels in the four standard files."""
    rng = np.random.RandomState(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.randint(0, 256, (num_train, 28, 28)).astype(np.uint8),
        "train-labels-idx1-ubyte": rng.randint(0, 10, num_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.randint(0, 256, (num_test, 28, 28)).astype(np.uint8),
        "t10k-labels-idx1-ubyte": rng.randint(0, 10, num_test).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / (f"{name}.gz" if gz else name), array)
    return arrays


# --- read_idx ----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trips_images_and_labels(tmp_path, suffix):
    images = np.random.RandomState(1).randint(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    got_images = read_idx(write_idx(tmp_path / f"images{suffix}", images))
    got_labels = read_idx(write_idx(tmp_path / f"labels{suffix}", labels))
    assert got_images.shape == (5, 28, 28) and got_images.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_decodes_big_endian_wider_types(tmp_path):
    ints = np.array([[1, -2, 70000], [2**31 - 1, 0, -1]], dtype=np.int32)
    floats = np.array([0.5, -1.25, 3.0e7], dtype=np.float32)
    got_ints = read_idx(write_idx(tmp_path / "ints", ints))
    np.testing.assert_array_equal(got_ints, ints)
    assert got_ints.dtype.isnative
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "floats.gz", floats)), floats)


def test_truncated_file_names_the_file_and_the_fix(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MnistError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and "truncated" in message and "delete it" in message


def test_truncated_gzip_names_the_file(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.arange(4 * 28 * 28).reshape(4, 28, 28).astype(np.uint8))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(MnistError, match="train-images-idx3-ubyte.gz.*delete it"):
        read_idx(path)


def test_bad_magic_and_unknown_type_are_reported(tmp_path):
    html = tmp_path / "t10k-labels-idx1-ubyte"
    html.write_bytes(b"<html>403 Forbidden</html>")           # what a failing mirror may serve
    with pytest.raises(MnistError, match="t10k-labels-idx1-ubyte: not an IDX file .*magic"):
        read_idx(html)
    odd = tmp_path / "odd"
    odd.write_bytes(bytes([0, 0, 0x42, 1]) + struct.pack(">I", 2) + b"ab")
    with pytest.raises(MnistError, match="unknown IDX data type code 0x42"):
        read_idx(odd)


def test_file_longer_than_its_header_is_rejected(tmp_path):
    path = write_idx(tmp_path / "labels", np.arange(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\0" * 7)
    with pytest.raises(MnistError, match="longer than its header says"):
        read_idx(path)


def test_gzip_bomb_is_read_no_further_than_its_header_says(tmp_path):
    """A small .gz that inflates far past its declared shape stops at that shape: memory stays bounded."""
    import tracemalloc
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb") as out:
        out.write(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 10, 28, 28))
        for _ in range(64):
            out.write(b"\0" * (1 << 20))                           # 64 MB of zeros, ~64 KB on disk
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(MnistError, match=r"train-images-idx3-ubyte.gz: longer than its header says.*\(10, 28, 28\)"):
            read_idx(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes held while reading a file that declares 7,840"


def test_a_header_declaring_more_than_the_reader_takes_is_refused_unread(tmp_path):
    huge = tmp_path / "train-images-idx3-ubyte.gz"
    huge.write_bytes(gzip.compress(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2 ** 31, 28, 28) + b"\0" * 100))
    with pytest.raises(MnistError, match=r"\(2147483648, 28, 28\) of uint8 \(1683627180032 bytes\), more than"):
        read_idx(huge)


# --- load_mnist on local files -------------------------------------------------------------------

def test_load_mnist_from_a_folder_of_gz_and_raw_files(tmp_path):
    arrays = fake_mnist(tmp_path, num_train=64, num_test=32)
    # Raw files are read as well as .gz: unzip two of them.
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        gz = tmp_path / f"{name}.gz"
        (tmp_path / name).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    x_train, y_train, x_test, y_test = load_mnist(str(tmp_path), download=False)
    assert x_train.shape == (64, 1, 28, 28) and x_test.shape == (32, 1, 28, 28)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert np.issubdtype(y_train.dtype, np.integer) and y_test.shape == (32,)
    np.testing.assert_allclose(x_train[:, 0] * 255, arrays["train-images-idx3-ubyte"], atol=1e-3)
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])


def test_labels_that_do_not_match_the_images_are_reported(tmp_path):
    fake_mnist(tmp_path, num_train=64, num_test=32)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(63, np.uint8))
    with pytest.raises(MnistError, match="train-labels-idx1-ubyte.gz: expected 64 labels"):
        load_mnist(str(tmp_path), download=False)


def test_check_mnist_names_missing_files_and_folder_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "_download", lambda *a: pytest.fail("must not download"))
    root = tmp_path / "mnist"
    fake_mnist(root)
    (root / "t10k-images-idx3-ubyte.gz").unlink()
    check_mnist(MnistData(root=str(root), download=True))       # download allowed: nothing to say yet
    with pytest.raises(MnistError) as info:
        check_mnist(MnistData(root=str(root), download=False))
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in message and str(root) in message
    assert "train-images-idx3-ubyte" not in message                     # only what is missing
    assert "https://" in message and "data.download" in message


# --- downloads ----------------------------------------------------------------------------------

@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve(no_proxy):
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 serving that folder."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def checksums_of(folder: Path) -> dict:
    sums = {}
    for name in NAMES:
        data = (folder / f"{name}.gz").read_bytes()
        sums[name] = {"md5": hashlib.md5(data).hexdigest(), "sha1": hashlib.sha1(data).hexdigest()}
    return sums


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"          # nothing listens there any more


def test_offline_download_says_which_files_go_where_and_leaves_nothing(tmp_path, monkeypatch, no_proxy):
    mirrors = (closed_port_url(), closed_port_url())
    monkeypatch.setattr(mnist, "MIRRORS", mirrors)
    root = tmp_path / "data" / "mnist"
    with pytest.raises(MnistError) as info:
        load_mnist(str(root), download=True)
    message = str(info.value)
    for name in NAMES:
        assert f"{name}.gz" in message
    assert str(root) in message and mirrors[0] in message
    assert list(root.iterdir()) == []                              # no partial or temporary file


def test_download_from_a_local_mirror_verifies_checksums(tmp_path, monkeypatch, serve):
    good = tmp_path / "good"
    arrays = fake_mnist(good)
    monkeypatch.setattr(mnist, "CHECKSUMS", checksums_of(good))
    monkeypatch.setattr(mnist, "MIRRORS", (closed_port_url(), serve(good)))   # the first mirror is down
    root = tmp_path / "root"
    x_train, y_train, x_test, y_test = load_mnist(str(root), download=True)
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    assert x_test.shape == (32, 1, 28, 28)


def test_corrupted_mirror_copy_is_rejected_for_the_next_mirror(tmp_path, monkeypatch, serve):
    good, bad = tmp_path / "good", tmp_path / "bad"
    arrays = fake_mnist(good)
    fake_mnist(bad)
    # Same size, one flipped byte: only the checksum can tell.
    data = bytearray((good / "t10k-labels-idx1-ubyte.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(data))
    for name in NAMES:
        if name != "t10k-labels-idx1-ubyte":
            (bad / f"{name}.gz").write_bytes((good / f"{name}.gz").read_bytes())
    monkeypatch.setattr(mnist, "CHECKSUMS", checksums_of(good))

    monkeypatch.setattr(mnist, "MIRRORS", (serve(bad),))
    root = tmp_path / "root"
    with pytest.raises(MnistError, match="checksum mismatch") as info:
        load_mnist(str(root), download=True)
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value)
    assert not (root / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in root.iterdir() if p.name.endswith(".part")]

    monkeypatch.setattr(mnist, "MIRRORS", (serve(bad), serve(good)))
    *_, y_test = load_mnist(str(root), download=True)
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])


# --- iterators ----------------------------------------------------------------------------------

def test_iterators_give_full_train_batches_and_the_whole_test_set(tmp_path):
    fake_mnist(tmp_path, num_train=64, num_test=32)
    data = MnistData(root=str(tmp_path), download=False)
    train, val = get_mnist_iterators(data, batch_size=10, seed=0)
    train_batches = list(train)
    assert len(train_batches) == 6                                      # 64 // 10, last 4 dropped
    assert all(b.data[0].shape == (10, 1, 28, 28) and b.pad == 0 for b in train_batches)
    val_batches = list(val)
    assert len(val_batches) == 4 and val_batches[-1].pad == 8           # 32 = 3 * 10 + 2
    assert sum(10 - b.pad for b in val_batches) == 32


def test_iterator_parts_are_disjoint_and_equal(tmp_path):
    fake_mnist(tmp_path, num_train=64, num_test=32)
    data = MnistData(root=str(tmp_path), download=False)
    parts = [get_mnist_iterators(data, batch_size=8, seed=3, num_parts=2, part_index=i)[0] for i in range(2)]
    seen = [np.concatenate([b.data[0].asnumpy().reshape(8, -1) for b in part]) for part in parts]
    assert len(seen[0]) == len(seen[1]) == 32
    rows = {row.tobytes() for row in seen[0]}
    assert not rows & {row.tobytes() for row in seen[1]}
