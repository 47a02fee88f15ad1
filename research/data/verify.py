"""Check a .rec against its .idx before MXNet reads it: a damaged record makes MXNet abort from C++
(exit 134, "Check failed: p[0] == RecordIOWriter::kMagic"), which Python cannot catch.

The check reads the .idx strictly and 36 bytes per record (the RecordIO header, the image header and the
first float after it), found through the .idx; the labels ImageRecordIter will hand the loop come from
those same bytes, so they are summarised in the same pass (no second read, whatever a .lst beside the
file says). A pair that passed is remembered in the user's own cache, ~/.cache/research/verified/, keyed
by device, inode, size, mtime and ctime of both files: not beside the data, where whoever can write the
data could write the note too, and with the ctime, which no user can set (every write or utime moves it
to the present), so a changed file is always checked again. RecordIO has no checksum: bytes damaged
inside an image are not seen here (MXNet reports those as an error, not an abort).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import UserError

MAGIC = 0xCED7230A            # dmlc RecordIO: uint32 magic, uint32 (cflag << 29 | length), data padded to 4 bytes
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
IMAGE_HEADER = 24             # mx.recordio.IRHeader: flag, label, id, id2 (struct "IfQQ")
LABEL_END = IMAGE_HEADER + 4  # with flag 1 the label is the float after the image header
WHOLE, FIRST, MIDDLE, LAST = 0, 1, 2, 3     # cflag: a record holding the magic word is split into parts
FIRST_WORDS = struct.Struct("<IIIf")   # magic, cflag << 29 | length, then the image header's flag and label
MAX_DIGITS = 18               # an .idx number: below 2**63, so int64 holds it
MAX_INDEX_BYTES = 1 << 30     # the most read_index reads (~40 M lines): it holds about 6 bytes per byte read
DIGIT = np.zeros(256, bool)
DIGIT[list(b"0123456789")] = True
BLANK = np.zeros(256, bool)
BLANK[list(b" \t\r\n")] = True
REBUILD = "copy it again, or rebuild the set with tools/build_rec.py (or im2rec, which writes the .rec and .idx together)"
SETTLED_S = 2.0               # remember only files whose ctime is older: timestamps advance in coarse ticks
MEMO_VERSION = 2


@dataclass
class Damage:
    """One bad record: its position in the .idx, its key, its byte offset in the .rec and what is wrong."""
    index: int
    key: int
    offset: int
    problem: str

    def __str__(self) -> str:
        return f"record {self.index} (id {self.key}) at byte {self.offset}: {self.problem}"


@dataclass
class Labels:
    """The labels ImageRecordIter will read from an intact .rec, summarised; each figure with the record
    (position in the .idx, key) it comes from."""
    records: int
    low: tuple[float, int, int]              # (smallest label, index, key)
    high: tuple[float, int, int]             # (largest label, index, key)
    odd: tuple[float, int, int] | None       # the first NaN, infinite or fractional label, or None
    distinct: int                            # distinct labels


def read_index(idx: Path, limit: int = 0) -> np.ndarray:
    """(key, offset) rows of an im2rec .idx ("key<TAB>offset" lines) in file order, int64, shape (N, 2).

    Stricter than MXNet's reader, which takes the file as a stream of whitespace-separated size_t pairs:
    there a stray token shifts every pair after it, a '-' wraps to a huge offset, and junk ends the index.

    Raises:
        UserError: a line that is not two decimal numbers, or a file larger than `limit` bytes (0: any).
    """
    size = idx.stat().st_size
    if limit and size > limit:
        raise UserError(f"{idx} has {size} bytes, more than its .rec or {MAX_INDEX_BYTES >> 30} GiB (about 40 M "
                        f"records, the most this check reads): not an index of it; {REBUILD}.")
    raw = np.fromfile(idx, dtype=np.uint8)
    digit = DIGIT[raw]
    starts = np.flatnonzero(digit & ~np.r_[False, digit[:-1]])      # first digit of each number
    ends = np.flatnonzero(digit & ~np.r_[digit[1:], False]) + 1
    newlines = np.flatnonzero(raw == ord("\n"))
    line_of = np.searchsorted(newlines, starts)                      # 0-based line of each number
    per_line = np.bincount(line_of, minlength=len(newlines) + 1)
    bad = np.r_[np.searchsorted(newlines, np.flatnonzero(~BLANK[raw] & ~digit)),
                np.flatnonzero((per_line != 0) & (per_line != 2)), line_of[ends - starts > MAX_DIGITS]]
    if bad.size:
        line = int(bad.min())
        text = raw[newlines[line - 1] + 1 if line else 0:newlines[line] if line < len(newlines) else None]
        raise UserError(f"{idx}: line {line + 1} is not 'key<TAB>offset' (two numbers of at most {MAX_DIGITS} "
                        f"digits): {text.tobytes().decode(errors='replace')[:40]!r}; {REBUILD}.")
    if not starts.size:
        return np.zeros((0, 2), np.int64)
    # only digits and blanks are left, two numbers a line
    return np.fromstring(raw.tobytes(), dtype=np.int64, sep=" ").reshape(-1, 2)


def walk(rec: Path, idx: Path, limit: int = 0) -> tuple[list[Damage], Labels | None]:
    """Walk every record the .idx lists: (the damaged ones, the first `limit` of them (0: all); the labels
    MXNet will read, None when a record is damaged).

    Records are expected back to back in offset order, the last one ending at the end of the file, as
    MXNet's writer leaves them and as its reader assumes (a record's size is the distance to the next
    offset): a gap or an overlap means lost or overwritten bytes.
    """
    size = rec.stat().st_size
    rows = read_index(idx, limit=min(max(size, 1 << 20), MAX_INDEX_BYTES))
    if not len(rows):
        raise UserError(f"{idx} lists no records; {REBUILD}.")
    if rows[:, 1].max() >= size:
        raise UserError(f"{idx} points past the end of {rec} (a partial copy, or files from different builds); "
                        f"copy both again, or rebuild the set with tools/build_rec.py.")
    keys, offsets = rows[:, 0].tolist(), rows[:, 1].tolist()     # Python ints: ~3x faster in the loop
    labels = [math.nan] * len(offsets)
    found: list[Damage] = []
    fd = os.open(rec, os.O_RDONLY)
    try:
        expected: int | None = 0          # where the next record should start
        last = max(offsets)
        for index in np.argsort(rows[:, 1], kind="stable").tolist():
            key, offset = keys[index], offsets[index]
            end, problem, labels[index] = _read_record(fd, offset, size)
            if problem is None and expected is not None and offset != expected:
                problem = (f"{offset - expected} bytes before it belong to no record" if offset > expected
                           else "it overlaps the record before")
            if problem is None and offset == last and end != size:
                problem = f"{size - end} stray bytes follow it at the end of the file"
            if problem:
                found.append(Damage(index, key, offset, problem))
                if limit and len(found) >= limit:
                    break
            expected = end                # None after a damaged record: where it ends is unknown
    finally:
        os.close(fd)
    return found, None if found else summarise(np.array(labels, np.float32), rows[:, 0])


def find_damage(rec: Path, idx: Path, limit: int = 0) -> list[Damage]:
    """The damaged records of `rec` (the first `limit` of them, 0: all); see `walk`."""
    return walk(rec, idx, limit)[0]


def _read_record(fd: int, offset: int, size: int) -> tuple[int | None, str | None, float]:
    """(offset just past the record, problem or None, the label ImageRecordIter reads)."""
    chunk = os.pread(fd, 8 + LABEL_END, offset)
    if len(chunk) >= 16:       # the common case, in one unpack: a whole record, one label in its header
        magic, word, flag, label = FIRST_WORDS.unpack_from(chunk)
        length = word & LENGTH_MASK
        if magic == MAGIC and word >> 29 == WHOLE and flag == 0 and length > IMAGE_HEADER and offset + 8 + length <= size:
            return offset + 8 + length + (-length % 4), None, label
    return _read_parts(fd, offset, size)


def _read_parts(fd: int, offset: int, size: int) -> tuple[int | None, str | None, float]:
    """`_read_record` for every other record: following a record split into parts (dmlc puts the magic
    word back between parts when it reads them), a label after the header (flag 1), or naming the problem."""
    position, head, length_in_all = offset, b"", 0
    while True:
        chunk = os.pread(fd, 8 + LABEL_END, position)
        if len(chunk) < 8:
            return None, f"the file ends inside its header ({size} bytes in all: cut short?)", math.nan
        magic, word = struct.unpack("<II", chunk[:8])
        if magic != MAGIC:
            return None, f"no RecordIO header (0x{magic:08x} instead of 0x{MAGIC:08x}): overwritten or zeroed", math.nan
        flag, length = word >> 29, word & LENGTH_MASK
        first = position == offset
        if first and flag not in (WHOLE, FIRST) or not first and flag not in (MIDDLE, LAST):
            return None, f"a record part out of order (flag {flag})", math.nan
        end = position + 8 + length
        if end > size:
            return None, f"it claims {length} bytes but the file ends {size - position - 8} bytes in (cut short?)", math.nan
        head = (head + (b"" if first else MAGIC_BYTES) + chunk[8:8 + length])[:LABEL_END]
        length_in_all += length + (0 if first else 4)
        position = end + (-length % 4)
        if flag in (WHOLE, LAST):
            return position, *_image_header(head, length_in_all)


def _image_header(head: bytes, length: int) -> tuple[str | None, float]:
    """(problem or None, label) of a record's data, as MXNet's ImageRecordIO::Load reads it (label_width 1)."""
    if length < IMAGE_HEADER:
        return f"{length} bytes, too short for an image record", math.nan
    flag, label = struct.unpack("<If", head[:8])
    if flag > 1:     # MXNet wants label_width == flag; the iterators read one label
        return f"it carries {flag} labels (image header flag {flag}); the iterators read one per image", math.nan
    if flag == 1:
        if length < LABEL_END:
            return "its image header announces a label the record does not hold", math.nan
        label = struct.unpack("<f", head[IMAGE_HEADER:LABEL_END])[0]
    if length - IMAGE_HEADER - 4 * flag <= 0:
        return "it holds no image bytes", math.nan
    return None, label


def summarise(labels: np.ndarray, keys: np.ndarray) -> Labels:
    """Labels of every record (in .idx order) and their keys -> the summary the iterators check."""
    def where(i: int) -> tuple[float, int, int]:
        return float(labels[i]), int(i), int(keys[i])
    finite = np.flatnonzero(np.isfinite(labels))
    odd = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
    low, high = (finite[labels[finite].argmin()], finite[labels[finite].argmax()]) if finite.size else (0, 0)
    return Labels(len(labels), where(low), where(high), where(odd[0]) if odd.size else None,
                  len(np.unique(labels[finite])))


def stamp(path: Path) -> list[int]:
    """What identifies this version of a file: device, inode, size, mtime and ctime (which no user can set)."""
    info = path.stat()
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _memo(rec: Path) -> Path:
    """The user's note for `rec`: named after its absolute path, in a folder only the user can read."""
    name = hashlib.sha256(str(rec.resolve()).encode()).hexdigest()[:32]
    return Path.home() / ".cache" / "research" / "verified" / f"{name}.json"


def remembered(rec: Path, idx: Path) -> Labels | None:
    """What an earlier check of these very files learnt, or None (never checked, or changed since)."""
    try:
        saved = json.loads(_memo(rec).read_text())
        if saved["version"] == MEMO_VERSION and saved["stamps"] == [stamp(rec), stamp(idx)]:
            labels = saved["labels"]
            return Labels(labels["records"], tuple(labels["low"]), tuple(labels["high"]),
                          tuple(labels["odd"]) if labels["odd"] else None, labels["distinct"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def remember(rec: Path, idx: Path, labels: Labels, stamps: list[list[int]]) -> None:
    """Note the verified files, stamped as they were before the walk. A file changed less than SETTLED_S
    ago is not noted: a change within the same timestamp tick would keep the stamp. Nothing is noted
    where the cache cannot be written (the next run checks again)."""
    if time.time_ns() - max(ctime for *_, ctime in stamps) < SETTLED_S * 1e9:
        return
    memo = _memo(rec)
    try:
        memo.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic.write_text(memo, json.dumps({"version": MEMO_VERSION, "rec": str(rec.resolve()),
                                            "stamps": stamps, "labels": asdict(labels)}))
    except OSError:
        return
    for other in memo.parent.glob("*.json"):          # notes of files since deleted go too
        try:
            if not Path(json.loads(other.read_text())["rec"]).exists():
                other.unlink()
        except (OSError, ValueError, KeyError, TypeError):
            other.unlink(missing_ok=True)


def check_rec(rec: Path, idx: Path) -> Damage | Labels:
    """The first damaged record, else the labels; a pair checked before and unchanged is not read again."""
    labels = remembered(rec, idx)
    if labels is not None:
        return labels
    stamps = [stamp(rec), stamp(idx)]
    damage, labels = walk(rec, idx, limit=1)
    if damage:
        return damage[0]
    remember(rec, idx, labels, stamps)
    return labels


def require_intact(rec: Path, key: str) -> Labels:
    """The labels of `rec`, read as MXNet will read them; UserError naming the first damaged record, a
    bad .idx line, an empty index or one that points past the end (key: the recipe key or option)."""
    try:
        found = check_rec(rec, rec.with_suffix(".idx"))
    except UserError as err:
        raise UserError(f"{key}: {err}") from None
    if isinstance(found, Damage):
        raise UserError(f"{key}: {rec} is damaged, {found}; copy it again or rebuild it with tools/build_rec.py. "
                        f"python tools/build_rec.py --verify {rec} lists every bad record.")
    return found
