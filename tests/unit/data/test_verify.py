"""Damaged .rec files are found before MXNet reads them (it would abort the process from C++)."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import mxnet as mx
import pytest

from research.data.verify import MAGIC, CACHE_SUFFIX, check_rec, find_damage, read_index
from research.errors import UserError
from research.data.recordio import open_record_files

from .test_recordio import pack_like_im2rec


@pytest.fixture
def rec(tmp_path) -> Path:
    return pack_like_im2rec(tmp_path / "set", list(range(10)) * 3)      # 30 records


def test_intact_file_passes_and_is_remembered(rec):
    assert find_damage(rec, rec.with_suffix(".idx")) == []
    assert check_rec(rec, rec.with_suffix(".idx")) is None
    assert Path(f"{rec.with_suffix('')}{CACHE_SUFFIX}").is_file()
    assert open_record_files(str(rec), "data.train_rec").num_records == 30


def test_record_that_holds_the_magic_word_is_split_and_still_intact(tmp_path):
    # dmlc splits a record whose payload holds the magic at a 4-byte boundary into parts (cflag 1..3)
    record = mx.recordio.MXIndexedRecordIO(str(tmp_path / "m.idx"), str(tmp_path / "m.rec"), "w")
    payload = b"\0" * 8 + struct.pack("<I", MAGIC) * 3 + b"tail"
    for i in range(3):
        record.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, 1.0, i, 0), payload))
    record.close()
    assert find_damage(tmp_path / "m.rec", tmp_path / "m.idx") == []


def test_file_cut_inside_its_last_record(rec):
    offsets = [offset for _, offset in read_index(rec.with_suffix(".idx"))]
    os.truncate(rec, offsets[-1] + 100)
    (damage,) = find_damage(rec, rec.with_suffix(".idx"))
    assert (damage.index, damage.offset) == (29, offsets[-1])
    assert "cut short" in str(damage)
    with pytest.raises(UserError, match=rf"data.train_rec: {rec} is damaged, record 29 \(id 29\) at byte "
                                        rf"{offsets[-1]}: .*build_rec.py --verify {rec}"):
        open_record_files(str(rec), "data.train_rec")


def test_zeroed_block_in_the_middle(rec):
    offsets = [offset for _, offset in read_index(rec.with_suffix(".idx"))]
    middle = rec.stat().st_size // 2
    with open(rec, "r+b") as f:
        f.seek(middle)
        f.write(b"\0" * 4096)
    damage = find_damage(rec, rec.with_suffix(".idx"))
    hit = [i for i, offset in enumerate(offsets) if middle <= offset < middle + 4096]
    assert hit and [d.index for d in damage] == hit
    assert all("zeroed" in d.problem for d in damage)


def test_a_changed_file_is_checked_again(rec):
    assert check_rec(rec, rec.with_suffix(".idx")) is None
    with open(rec, "ab") as f:
        f.write(b"garbage")
    damage = check_rec(rec, rec.with_suffix(".idx"))
    assert damage is not None and "7 stray bytes" in damage.problem
