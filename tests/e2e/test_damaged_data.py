"""A damaged .rec, as a user meets it: a clear one-line error naming the record, never MXNet's abort."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from helpers import make_env, run_tool

from research.data.verify import read_index


def pack(prefix: Path, count: int) -> Path:
    """`count` 32x32 JPEG records, labels 0/1 alternating, as im2rec writes them."""
    rng = np.random.RandomState(0)
    record = mx.recordio.MXIndexedRecordIO(f"{prefix}.idx", f"{prefix}.rec", "w")
    for i in range(count):
        image = rng.randint(0, 256, (32, 32, 3), dtype=np.uint8)
        record.write_idx(i, mx.recordio.pack_img(mx.recordio.IRHeader(0, float(i % 2), i, 0), image))
    record.close()
    return Path(f"{prefix}.rec")


def copy_rec(rec: Path, prefix: Path) -> Path:
    shutil.copy(rec, f"{prefix}.rec")
    shutil.copy(rec.with_suffix(".idx"), f"{prefix}.idx")
    return Path(f"{prefix}.rec")


def recipe(path: Path, train_rec: Path, val_rec: Path) -> Path:
    path.write_text(json.dumps({
        "name": "rec_faults", "net": {"name": "lenet", "classes": 2},
        "data": {"kind": "recordio", "train_rec": str(train_rec), "val_rec": str(val_rec), "data_shape": [3, 28, 28]},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.01, "log_every": 2}, "tracking": {"enabled": False}}))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A good set, a copy cut inside its last record and a copy with a zeroed 4 KB block in the middle."""
    root = tmp_path_factory.mktemp("recs")
    good = pack(root / "good", 64)
    cut = copy_rec(good, root / "cut")
    os.truncate(cut, read_index(cut.with_suffix(".idx"))[-1][1] + 50)
    zeroed = copy_rec(good, root / "zeroed")
    with open(zeroed, "r+b") as f:
        f.seek(zeroed.stat().st_size // 2)
        f.write(b"\0" * 4096)
    return {"good": good, "cut": cut, "zeroed": zeroed, "root": root}


def one_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


@pytest.mark.parametrize("damaged", ["cut", "zeroed"])
def test_train_on_a_damaged_rec_exits_2_naming_the_record(tmp_path, data, damaged):
    rec = data[damaged]
    offsets = [offset for _, offset in read_index(rec.with_suffix(".idx"))]
    middle = rec.stat().st_size // 2
    bad = 63 if damaged == "cut" else next(i for i, offset in enumerate(offsets) if offset >= middle)
    offset = offsets[bad]
    proc = run_tool("train.py", recipe(tmp_path / "r.yaml", rec, data["good"]), "--output", tmp_path / "run",
                    env=make_env(tmp_path))
    message = one_line(proc)
    assert f"data.train_rec: {rec} is damaged, record {bad} (id {bad}) at byte {offset}" in message
    assert f"build_rec.py --verify {rec}" in message
    assert not (tmp_path / "run").exists()


def test_evaluate_on_a_damaged_rec_exits_2(tmp_path, data):
    env = make_env(tmp_path)
    run_tool("train.py", recipe(tmp_path / "r.yaml", data["good"], data["good"]), "--output", tmp_path / "run",
             env=env, check=True)
    proc = run_tool("evaluate.py", tmp_path / "run", "--rec", data["cut"], env=env)
    assert f"--rec: {data['cut']} is damaged, record 63" in one_line(proc)
    good = run_tool("evaluate.py", tmp_path / "run", "--rec", data["good"], "--no-log", env=env, check=True)
    assert "centre crop" in good.stdout


def test_build_rec_verify_lists_every_damaged_record(tmp_path, data):
    env = make_env(tmp_path)
    proc = run_tool("build_rec.py", "--verify", data["zeroed"], env=env)
    assert proc.returncode == 1 and "damaged record(s)" in proc.stdout, proc.stdout + proc.stderr
    assert all("zeroed" in line for line in proc.stdout.splitlines()[:-1])
    good = run_tool("build_rec.py", "--verify", data["good"], env=env, check=True)
    assert "64 records, none damaged" in good.stdout


def patched(data: dict, name: str, edit) -> Path:
    """A copy of the good set named `name`, with `edit(rec, idx)` applied, and an intact .lst beside it."""
    rec = copy_rec(data["good"], data["root"] / name)
    Path(f"{rec.with_suffix('')}.lst").write_text("".join(f"{i}\t{i % 2:.6f}\timg{i}.jpg\n" for i in range(64)))
    edit(rec, rec.with_suffix(".idx"))
    return rec


def set_label(rec: Path, index: int, value: float) -> None:
    with open(rec, "r+b") as f:
        f.seek(int(read_index(rec.with_suffix(".idx"))[index][1]) + 12)     # magic, length, flag, then the label
        f.write(struct.pack("<f", value))


def set_offset(idx: Path, line: int, text: str) -> None:
    lines = idx.read_text().splitlines()
    lines[line] = f"{line}\t{text}"
    idx.write_text("\n".join(lines) + "\n")


def tamper_keeping_size_and_mtime(rec: Path, idx: Path) -> None:
    """Zero a record header, put the mtime back and plant the note the old check trusted (size and mtime)."""
    before = rec.stat()
    with open(rec, "r+b") as f:
        f.seek(int(read_index(idx)[9][1]))
        f.write(b"\0" * 8)
    os.utime(rec, ns=(before.st_atime_ns, before.st_mtime_ns))
    stamp = {name: [p.stat().st_size, p.stat().st_mtime_ns] for name, p in (("rec", rec), ("idx", idx))}
    Path(f"{rec.with_suffix('')}.verified.json").write_text(json.dumps(stamp))


@pytest.mark.parametrize("case, edit, expected", [
    ("label_high", lambda rec, idx: set_label(rec, 5, 7.0), "has label 7 but net.classes is 2 (record 5, id 5"),
    ("label_unlabeled", lambda rec, idx: set_label(rec, 5, -1.0), "holds unlabeled images (record 5, id 5: label -1)"),
    ("label_nan", lambda rec, idx: set_label(rec, 5, float("nan")), "record 5 (id 5) has label nan, not a class number"),
    ("idx_negative", lambda rec, idx: set_offset(idx, 3, "-64"), "line 4 is not 'key<TAB>offset'"),
    ("idx_junk", lambda rec, idx: set_offset(idx, 3, "0x40"), "line 4 is not 'key<TAB>offset'"),
    ("idx_shifted", lambda rec, idx: set_offset(idx, 3, str(int(read_index(idx)[3][1]) + 4)), "record 3 (id 3)"),
    ("sidecar", tamper_keeping_size_and_mtime, "is damaged, record 9 (id 9)"),
])
def test_what_an_attacker_can_put_in_a_dataset_exits_2_in_one_line(tmp_path, data, case, edit, expected):
    """Labels MXNet reads from the record headers (an intact .lst beside them changes nothing), .idx offsets,
    a note beside the data that vouches for a tampered file: each ends with exit 2 naming the file, never a
    training run with wrong labels, a traceback or MXNet's abort (exit 134)."""
    rec = patched(data, case, edit)
    proc = run_tool("train.py", recipe(tmp_path / "r.yaml", rec, data["good"]), "--output", tmp_path / "run",
                    env=make_env(tmp_path))
    message = one_line(proc)
    assert expected in message and str(rec.with_suffix("")) in message, message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_mnist_gzip_bomb_exits_2_in_one_line(tmp_path):
    """A small .gz that inflates to 256 MB, given as MNIST's training images: refused in one line once the
    size its header declares is read (tests/unit/data/test_mnist.py checks that memory stays bounded)."""
    root = tmp_path / "mnist"
    root.mkdir()
    for name, shape in (("train-images-idx3-ubyte", (16, 28, 28)), ("train-labels-idx1-ubyte", (16,)),
                        ("t10k-images-idx3-ubyte", (16, 28, 28)), ("t10k-labels-idx1-ubyte", (16,))):
        with gzip.open(root / f"{name}.gz", "wb") as out:
            out.write(bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape))
            out.write(bytes(int(np.prod(shape))))
            if name == "train-images-idx3-ubyte":
                for _ in range(256):
                    out.write(bytes(1 << 20))
    (tmp_path / "m.yaml").write_text(json.dumps({
        "name": "mnist_bomb", "net": {"name": "lenet", "classes": 10},
        "data": {"kind": "mnist", "root": str(root), "download": False},
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.01}, "tracking": {"enabled": False}}))
    proc = run_tool("train.py", tmp_path / "m.yaml", "--output", tmp_path / "run", env=make_env(tmp_path))
    message = one_line(proc)
    assert f"{root}/train-images-idx3-ubyte.gz: longer than its header says" in message, message
