"""Fixtures for the transfer tests: small .rec files written the way im2rec writes them."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import mxnet as mx
import numpy as np
import pytest


def pack_rec(prefix: Path, records: list[tuple[int, float, np.ndarray]]) -> Path:
    """Write prefix.rec/.idx: (record id, label, RGB uint8 image) per record, in this order."""
    writer = mx.recordio.MXIndexedRecordIO(f"{prefix}.idx", f"{prefix}.rec", "w")
    for i, (record_id, label, rgb) in enumerate(records):
        header = mx.recordio.IRHeader(0, float(label), int(record_id), 0)
        writer.write_idx(i, mx.recordio.pack_img(header, rgb[..., ::-1], quality=95, img_fmt=".jpg"))  # BGR in
    writer.close()
    return Path(f"{prefix}.rec")


def flat_image(value: int, height: int = 20, width: int = 24) -> np.ndarray:
    """One grey level: survives JPEG to within a level or two, so it can encode an id or a label."""
    return np.full((height, width, 3), value, dtype=np.uint8)


@pytest.fixture
def write_rec() -> Callable[[Path, list], Path]:
    return pack_rec


@pytest.fixture
def grey() -> Callable[..., np.ndarray]:
    return flat_image
