"""Check a .rec against its .idx before MXNet reads it: a damaged record makes MXNet abort from C++
(exit 134, "Check failed: p[0] == RecordIOWriter::kMagic"), which Python cannot catch.

The check reads 32 bytes per record (the RecordIO header and the image header), found through the
.idx: about 1.3 M small reads for ImageNet's train set, seconds when the file is cached. A file that
passed is remembered in PREFIX.verified.json by the size and mtime of both files, so a resume does
not pay again. RecordIO has no checksum: bytes damaged inside an image are not seen here.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..errors import UserError

MAGIC = 0xCED7230A            # dmlc RecordIO: uint32 magic, uint32 (cflag << 29 | length), data padded to 4 bytes
LENGTH_MASK = (1 << 29) - 1
IMAGE_HEADER = 24             # mx.recordio.IRHeader: flag, label, id, id2 (struct "IfQQ")
CACHE_SUFFIX = ".verified.json"
WHOLE, FIRST, MIDDLE, LAST = 0, 1, 2, 3     # cflag: a record holding the magic word is split into parts


@dataclass
class Damage:
    """One bad record: its position in the .idx, its key, its byte offset in the .rec and what is wrong."""
    index: int
    key: int
    offset: int
    problem: str

    def __str__(self) -> str:
        return f"record {self.index} (id {self.key}) at byte {self.offset}: {self.problem}"


def read_index(idx: Path) -> list[tuple[int, int]]:
    """(key, offset) for every line of an im2rec .idx, in file order."""
    entries = []
    for line in idx.read_text().splitlines():
        if line.strip():
            key, offset = line.split()[:2]
            entries.append((int(key), int(offset)))
    return entries


def find_damage(rec: Path, idx: Path, limit: int = 0) -> list[Damage]:
    """Walk every record the .idx lists; return the damaged ones (the first `limit` of them, 0: all).

    Records are expected back to back in offset order, the last one ending at the end of the file,
    as MXNet's writer leaves them: a gap or an overlap means lost or overwritten bytes.
    """
    entries = sorted((offset, index, key) for index, (key, offset) in enumerate(read_index(idx)))
    size = rec.stat().st_size
    found: list[Damage] = []
    fd = os.open(rec, os.O_RDONLY)
    try:
        expected: int | None = 0          # where the next record should start
        for offset, index, key in entries:
            end, problem = _walk_parts(fd, offset, size)
            if problem is None and expected is not None and offset != expected:
                problem = (f"{offset - expected} bytes before it belong to no record" if offset > expected
                           else "it overlaps the record before")
            if problem is None and offset == entries[-1][0] and end != size:
                problem = f"{size - end} stray bytes follow it at the end of the file"
            if problem:
                found.append(Damage(index, key, offset, problem))
                if limit and len(found) >= limit:
                    break
            expected = end                # None after a damaged record: where it ends is unknown
    finally:
        os.close(fd)
    return found


def _walk_parts(fd: int, offset: int, size: int) -> tuple[int | None, str | None]:
    """(offset just past the record, problem or None), following a record split into parts."""
    position, first = offset, True
    while True:
        head = os.pread(fd, 8 + IMAGE_HEADER, position)
        if len(head) < 8:
            return None, f"the file ends inside its header ({size} bytes in all: cut short?)"
        magic, word = struct.unpack("<II", head[:8])
        if magic != MAGIC:
            return None, f"no RecordIO header (0x{magic:08x} instead of 0x{MAGIC:08x}): overwritten or zeroed"
        flag, length = word >> 29, word & LENGTH_MASK
        if first and flag not in (WHOLE, FIRST) or not first and flag not in (MIDDLE, LAST):
            return None, f"a record part out of order (flag {flag})"
        if first and flag == WHOLE and length < IMAGE_HEADER:
            return None, f"{length} bytes, too short for an image record"
        end = position + 8 + length
        if end > size:
            return None, f"it claims {length} bytes but the file ends {size - position - 8} bytes in (cut short?)"
        position = end + (-length % 4)
        if flag in (WHOLE, LAST):
            return position, None
        first = False


def _stamp(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def is_known_good(rec: Path, idx: Path) -> bool:
    cache = Path(f"{rec.with_suffix('')}{CACHE_SUFFIX}")
    try:
        saved = json.loads(cache.read_text())
    except (OSError, ValueError):
        return False
    return saved == {"rec": _stamp(rec), "idx": _stamp(idx)}


def remember_good(rec: Path, idx: Path) -> None:
    """Note the verified files; a read-only data folder just means the next run checks again."""
    cache = Path(f"{rec.with_suffix('')}{CACHE_SUFFIX}")
    try:
        atomic.write_text(cache, json.dumps({"rec": _stamp(rec), "idx": _stamp(idx)}))
    except OSError:
        pass


def check_rec(rec: Path, idx: Path) -> Damage | None:
    """The first damaged record, or None; a verified pair (same sizes and mtimes) is not read again."""
    if is_known_good(rec, idx):
        return None
    damage = find_damage(rec, idx, limit=1)
    if damage:
        return damage[0]
    remember_good(rec, idx)
    return None


def require_intact(rec: Path, key: str) -> None:
    """Raise UserError naming the first damaged record of `rec` (key: the recipe key or option)."""
    damage = check_rec(rec, rec.with_suffix(".idx"))
    if damage is not None:
        raise UserError(f"{key}: {rec} is damaged, {damage}; copy it again or rebuild it with tools/build_rec.py. "
                        f"python tools/build_rec.py --verify {rec} lists every bad record.")
