"""Damaged .rec/.idx files are found before MXNet reads them (it would abort the process from C++), and
the labels MXNet will read come from the record headers, whatever a .lst or a note beside the files says."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from research.data import verify
from research.data.recordio import check_labels, open_record_files
from research.data.verify import MAGIC, check_rec, find_damage, read_index
from research.errors import UserError

from .test_recordio import pack_like_im2rec


@pytest.fixture
def rec(tmp_path) -> Path:
    return pack_like_im2rec(tmp_path / "set", list(range(10)) * 3)      # 30 records


@pytest.fixture
def memo_home(tmp_path, monkeypatch) -> Path:
    """A private HOME for the notes of verified files, which remember files of any age."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(verify, "SETTLED_S", 0)
    return tmp_path / "home"


def offsets_of(rec: Path) -> list[int]:
    return [int(offset) for _, offset in read_index(rec.with_suffix(".idx"))]


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_intact_file_passes_and_is_remembered_in_the_users_cache(rec, memo_home):
    assert find_damage(rec, rec.with_suffix(".idx")) == []
    labels = check_rec(rec, rec.with_suffix(".idx"))
    assert (labels.records, labels.low[0], labels.high[0], labels.odd, labels.distinct) == (30, 0, 9, None, 10)
    (note,) = (memo_home / ".cache" / "research" / "verified").iterdir()
    assert oct((memo_home / ".cache" / "research" / "verified").stat().st_mode & 0o777) == "0o700"
    assert json.loads(note.read_text())["rec"] == str(rec)
    assert not list(rec.parent.glob("*.verified.json"))      # nothing is written beside the data
    assert open_record_files(str(rec), "data.train_rec").num_records == 30


def test_record_that_holds_the_magic_word_is_split_and_still_intact(tmp_path):
    # dmlc splits a record whose payload holds the magic at a 4-byte boundary into parts (cflag 1..3)
    record = mx.recordio.MXIndexedRecordIO(str(tmp_path / "m.idx"), str(tmp_path / "m.rec"), "w")
    payload = b"\0" * 8 + struct.pack("<I", MAGIC) * 3 + b"tail"
    for i in range(3):
        record.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, 1.0, i, 0), payload))
    record.close()
    damage, labels = verify.walk(tmp_path / "m.rec", tmp_path / "m.idx")
    assert damage == [] and labels.low[0] == labels.high[0] == 1.0


def test_file_cut_inside_its_last_record(rec):
    offsets = offsets_of(rec)
    os.truncate(rec, offsets[-1] + 100)
    (damage,) = find_damage(rec, rec.with_suffix(".idx"))
    assert (damage.index, damage.offset) == (29, offsets[-1])
    assert "cut short" in str(damage)
    with pytest.raises(UserError, match=rf"data.train_rec: {rec} is damaged, record 29 \(id 29\) at byte "
                                        rf"{offsets[-1]}: .*build_rec.py --verify {rec}"):
        open_record_files(str(rec), "data.train_rec")


def test_zeroed_block_in_the_middle(rec):
    offsets = offsets_of(rec)
    middle = rec.stat().st_size // 2
    patch(rec, middle, b"\0" * 4096)
    damage = find_damage(rec, rec.with_suffix(".idx"))
    hit = [i for i, offset in enumerate(offsets) if middle <= offset < middle + 4096]
    assert hit and [d.index for d in damage] == hit
    assert all("zeroed" in d.problem for d in damage)


def test_notes_of_deleted_files_are_dropped(rec, memo_home, tmp_path):
    other = pack_like_im2rec(tmp_path / "other", [0, 1])
    check_rec(other, other.with_suffix(".idx"))
    other.unlink()
    check_rec(rec, rec.with_suffix(".idx"))
    (note,) = (memo_home / ".cache" / "research" / "verified").iterdir()
    assert json.loads(note.read_text())["rec"] == str(rec)


def test_a_changed_file_is_checked_again(rec, memo_home):
    assert not isinstance(check_rec(rec, rec.with_suffix(".idx")), verify.Damage)
    with open(rec, "ab") as f:
        f.write(b"garbage")
    damage = check_rec(rec, rec.with_suffix(".idx"))
    assert isinstance(damage, verify.Damage) and "7 stray bytes" in damage.problem


def test_a_tampered_file_with_its_old_size_and_mtime_is_checked_again(rec, memo_home):
    """As an attacker would: overwrite a record's header, then put size and mtime back (touch -d)."""
    assert not isinstance(check_rec(rec, rec.with_suffix(".idx")), verify.Damage)
    before = rec.stat()
    patch(rec, offsets_of(rec)[5], b"\0" * 8)
    os.utime(rec, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (rec.stat().st_size, rec.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    damage = check_rec(rec, rec.with_suffix(".idx"))
    assert isinstance(damage, verify.Damage) and damage.index == 5


def test_a_note_planted_beside_the_data_is_not_read(rec, memo_home):
    """The old note (size and mtime in PREFIX.verified.json) or any other: only the user's own cache counts."""
    patch(rec, offsets_of(rec)[3], b"\0" * 8)
    stamp = {name: [p.stat().st_size, p.stat().st_mtime_ns] for name, p in (("rec", rec), ("idx", rec.with_suffix(".idx")))}
    Path(f"{rec.with_suffix('')}.verified.json").write_text(json.dumps(stamp))
    with pytest.raises(UserError, match="record 3 .*zeroed"):
        open_record_files(str(rec), "data.train_rec")


@pytest.mark.parametrize("line, shown", [
    ("7\t-64", "'7\\t-64'"), ("7\tx", "'7\\tx'"), ("7\t64\t5", "'7\\t64\\t5'"), ("7", "'7'"),
    ("7\t0x40", "'7\\t0x40'"), ("7\t\u0663", "'7\\t\u0663'"), ("7\t1" + "0" * 19, "'7\\t1000"), ("\0\1", "'\\x00\\x01'"),
])
def test_bad_idx_lines_are_named(rec, line, shown):
    idx = rec.with_suffix(".idx")
    lines = idx.read_text().splitlines()
    lines[7] = line
    idx.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as err:
        open_record_files(str(rec), "data.train_rec")
    message = str(err.value)
    assert message.startswith(f"data.train_rec: {idx}: line 8 is not 'key<TAB>offset'") and shown in message
    assert "build_rec.py" in message and "\n" not in message


def test_idx_offsets_that_do_not_match_the_records(rec):
    idx = rec.with_suffix(".idx")
    good = idx.read_text()
    for edit, problem in [(lambda rows: rows.__setitem__(4, rows[3]), "overlaps the record before"),
                          (lambda rows: rows.__setitem__(4, (4, rows[4][1] + 4)), "no RecordIO header"),
                          (lambda rows: rows.pop(4), "bytes before it belong to no record"),
                          (lambda rows: rows.__setitem__(4, (4, 10 ** 12)), "points past the end")]:
        rows = [tuple(map(int, line.split())) for line in good.splitlines()]
        edit(rows)
        idx.write_text("".join(f"{k}\t{o}\n" for k, o in rows))
        with pytest.raises(UserError, match=problem):
            open_record_files(str(rec), "data.val_rec")
    idx.write_text("\n")
    with pytest.raises(UserError, match="lists no records"):
        open_record_files(str(rec), "data.val_rec")


@pytest.mark.parametrize("flag, extra, problem", [
    (3, b"", "carries 3 labels"), (2 ** 31, b"", "carries 2147483648 labels"), (1, None, "holds no image bytes"),
])
def test_image_headers_mxnet_cannot_read(tmp_path, flag, extra, problem):
    record = mx.recordio.MXIndexedRecordIO(str(tmp_path / "h.idx"), str(tmp_path / "h.rec"), "w")
    record.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(0, 1.0, 0, 0), b"image"))
    # flag 1 and nothing after the label float: no image bytes left
    payload = struct.pack("<IfQQ", flag, 1.0, 1, 0) + (struct.pack("<f", 2.0) if extra is None else b"image")
    record.write_idx(1, payload)
    record.close()
    (damage,) = find_damage(tmp_path / "h.rec", tmp_path / "h.idx")
    assert damage.index == 1 and problem in damage.problem


def label_of(rec: Path, index: int, value: float) -> None:
    patch(rec, offsets_of(rec)[index] + 12, struct.pack("<f", value))     # magic, length, flag, then the label


@pytest.mark.parametrize("value, message", [
    (-1.0, r"unlabeled images \(record 6, id 6: label -1\)"),
    (12.0, r"label 12 but net.classes is 10 \(record 6, id 6; .*set net.classes to 13"),
    (float("nan"), r"record 6 \(id 6\) has label nan, not a class number"),
    (float("inf"), r"record 6 \(id 6\) has label inf"), (2.5, r"record 6 \(id 6\) has label 2.5"),
    (1e30, r"label 1e\+30 but net.classes is 10 .*; rebuild it with tools/build_rec.py"),
])
def test_header_labels_are_checked_even_beside_an_intact_lst(rec, value, message):
    """im2rec and build_rec write a .lst beside the .rec; MXNet reads the labels in the records, not it."""
    Path(f"{rec.with_suffix('')}.lst").write_text("".join(f"{i}\t{i % 10:.6f}\tx{i}.jpg\n" for i in range(30)))
    label_of(rec, 6, value)
    files = open_record_files(str(rec), "data.train_rec")
    with pytest.raises(UserError, match=message):
        check_labels(files, 10, "data.train_rec")


def test_flag_one_records_carry_their_label_after_the_header(tmp_path):
    """A label packed as a one-element array (mx.recordio.pack(IRHeader(1, [label], ...))) is the float after
    the header (flag 1); MXNet reads that one, not the header's label field."""
    record = mx.recordio.MXIndexedRecordIO(str(tmp_path / "f.idx"), str(tmp_path / "f.rec"), "w")
    for i in range(3):
        record.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(1, [float(i + 5)], i, 0), b"jpeg"))
    record.close()
    files = open_record_files(str(tmp_path / "f.rec"), "--rec")
    assert (files.labels.low[0], files.labels.high[0]) == (5.0, 7.0)
    with pytest.raises(UserError, match="label 7 but net.classes is 6"):
        check_labels(files, 6, "--rec")


def test_fuzzed_files_never_pass_the_check_and_abort_mxnet(tmp_path):
    """Random edits of a small .rec/.idx: each is refused, or MXNet reads the whole file without aborting.
    MXNet runs in a child process (a native abort would end this one); the check runs here."""
    import subprocess
    import sys
    base = pack_like_im2rec(tmp_path / "base", [i % 4 for i in range(12)], size=(12, 12))
    original, index = base.read_bytes(), base.with_suffix(".idx").read_text()
    rng = np.random.RandomState(29)
    passed = []
    for case in range(150):
        data, rows = bytearray(original), [line.split() for line in index.splitlines()]
        kind = case % 3
        if kind == 0:                                    # flip bits in the record headers
            for _ in range(rng.randint(1, 4)):
                at = int(rows[rng.randint(len(rows))][1]) + rng.randint(36)
                data[at] ^= 1 << rng.randint(8)
        elif kind == 1:                                  # cut, insert or delete bytes
            at = rng.randint(len(data))
            data[at:at + rng.choice([0, 1, 4, 40])] = bytes(rng.randint(256, size=rng.choice([0, 4, 7])).tolist())
        else:                                            # edit an offset
            row = rows[rng.randint(len(rows))]
            row[1] = str(int(row[1]) + int(rng.choice([-8, -4, -1, 1, 4, 8, 4096])))
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        (folder / "t.rec").write_bytes(bytes(data))
        (folder / "t.idx").write_text("".join(f"{' '.join(row)}\n" for row in rows))
        try:
            check_labels(open_record_files(str(folder / "t.rec"), "data.train_rec"), 4, "data.train_rec")
        except UserError:
            continue
        passed.append(str(folder / "t.rec"))
    read_all = ("import sys, mxnet as mx\n"
                "for rec in sys.argv[1:]:\n"
                "    try:\n"
                "        for batch in mx.io.ImageRecordIter(path_imgrec=rec, path_imgidx=rec[:-3] + 'idx',"
                " data_shape=(3, 8, 8), batch_size=4, round_batch=False): pass\n"
                "    except mx.base.MXNetError: pass      # an image that does not decode: an error, not an abort\n")
    proc = subprocess.run([sys.executable, "-c", read_all, *passed], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 0 < len(passed) < 150
