"""Write im2rec's .rec/.idx pair without MXNet: byte for byte what mx.recordio.MXIndexedRecordIO writes
(dmlc-core's RecordIOWriter), so that tools/build_rec.py starts without MXNet's ~2 s import.

The reading side, and the format's constants, are research/data/verify.py.
"""
from __future__ import annotations

import struct
from pathlib import Path

from ..atomic import open_new
from .verify import FIRST, LAST, MAGIC, MIDDLE, WHOLE

IMAGE_HEADER_FORMAT = "IfQQ"      # mx.recordio.IRHeader: flag, label, id, id2 (mx.recordio._IR_FORMAT)
MAX_LENGTH = 1 << 29              # dmlc: "RecordIO only accept record less than 2^29 bytes"
_MAGIC_BYTES = struct.pack("<I", MAGIC)


class RecordWriter:
    """OUT.rec and OUT.idx ("key\\toffset" lines), one image record per `write`."""

    def __init__(self, idx: str | Path, rec: str | Path):
        self._rec = open_new(rec, "wb")      # first: an unwritable place raises OSError naming it
        self._idx = open_new(idx)
        self._offset = 0

    def write(self, key: int, label: float, payload: bytes) -> None:
        """A record of IRHeader(0, label, key, 0) + payload at the end of the .rec, indexed by `key`."""
        record = struct.pack(IMAGE_HEADER_FORMAT, 0, label, key, 0) + payload
        self._idx.write(f"{key}\t{self._offset}\n")
        for part in frame(record):
            self._rec.write(part)
            self._offset += len(part)

    def close(self) -> None:
        for stream in (self._rec, self._idx):
            stream.close()


def frame(record: bytes) -> list[bytes]:
    """The bytes dmlc's RecordIOWriter::WriteRecord writes for one record: magic, (cflag << 29 | length),
    data, zero padding to 4 bytes. The magic word at a 4-byte aligned place in the data is not written:
    the record is cut there into parts (cflag FIRST, MIDDLE..., LAST), as a reader would otherwise take
    it for the start of a record."""
    if len(record) >= MAX_LENGTH:
        raise ValueError(f"a record of {len(record)} bytes: RecordIO takes less than {MAX_LENGTH}")
    cuts, start = [], 0
    while (found := record.find(_MAGIC_BYTES, start)) != -1:
        if found % 4 == 0 and found + 4 <= len(record) // 4 * 4:
            cuts.append(found)
            start = found + 4
        else:
            start = found + 1
    parts, begin = [], 0
    for number, cut in enumerate(cuts):
        parts.append(_head(FIRST if number == 0 else MIDDLE, cut - begin) + record[begin:cut])
        begin = cut + 4
    parts.append(_head(LAST if cuts else WHOLE, len(record) - begin) + record[begin:] + b"\0" * (-len(record) % 4))
    return parts


def _head(flag: int, length: int) -> bytes:
    return struct.pack("<II", MAGIC, flag << 29 | length)
