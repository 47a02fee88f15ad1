"""research/data/rec_writer.py writes what MXNet's own RecordIO writer writes, byte for byte."""
from __future__ import annotations

import struct

import mxnet as mx

from research.data.rec_writer import RecordWriter
from research.data.verify import MAGIC, find_damage

MAGIC_WORD = struct.pack("<I", MAGIC)


def test_records_match_mxnets_writer_byte_for_byte(tmp_path):
    # payload lengths 0-3 mod 4, and the magic word inside the data: aligned (the record is cut into
    # parts there), twice in a row, at the very end, and unaligned (left as it is)
    payloads = [b"", b"a", b"abcdefg", b"x" * 21, b"abcd" + MAGIC_WORD + b"efgh", MAGIC_WORD * 2 + b"tail",
                b"1234" + MAGIC_WORD, b"12" + MAGIC_WORD + b"34", bytes(range(256)) * 40]
    ours = RecordWriter(tmp_path / "ours.idx", tmp_path / "ours.rec")
    theirs = mx.recordio.MXIndexedRecordIO(str(tmp_path / "mx.idx"), str(tmp_path / "mx.rec"), "w")
    for key, payload in enumerate(payloads):
        ours.write(key * 7, float(key % 3), payload)
        theirs.write_idx(key * 7, mx.recordio.pack(mx.recordio.IRHeader(0, float(key % 3), key * 7, 0), payload))
    ours.close()
    theirs.close()
    assert (tmp_path / "ours.rec").read_bytes() == (tmp_path / "mx.rec").read_bytes()
    assert (tmp_path / "ours.idx").read_text() == (tmp_path / "mx.idx").read_text()
    # framed right; only the empty payload is refused, as no image (MXNet's decoder would stop on it)
    assert [(d.index, d.problem) for d in find_damage(tmp_path / "ours.rec", tmp_path / "ours.idx")] == \
        [(0, "it holds no image bytes")]
    reader = mx.recordio.MXIndexedRecordIO(str(tmp_path / "ours.idx"), str(tmp_path / "ours.rec"), "r")
    for key, payload in enumerate(payloads):
        header, data = mx.recordio.unpack(reader.read_idx(key * 7))
        assert (header.label, header.id, data) == (float(key % 3), key * 7, payload)
    reader.close()
