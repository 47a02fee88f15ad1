"""A damaged .rec, as a user meets it: a clear one-line error naming the record, never MXNet's abort."""
from __future__ import annotations

import json
import os
import shutil
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
