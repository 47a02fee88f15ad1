"""A checkpoint file's bytes: named arrays and a JSON document, nothing that runs code when it is read.

    MAGIC (8 bytes) | payload length (u64, little-endian) | sha256 of the payload (32 bytes) | payload
    payload: safetensors (the arrays by name; the JSON document in its metadata, under "research")

The length and hash catch a file cut short or damaged on disk; they do not catch tampering (anyone can
recompute an unkeyed hash): what keeps a file from someone else harmless is that reading it only ever
builds arrays and JSON values. Payloads of the earlier format (a pickle) are read by legacy_checkpoint.py.
"""
from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import numpy as np

MAGIC = b"RSRCHCK2"
LEGACY_MAGIC = b"RSRCHCK1"     # before 2026-12: the payload was a pickle
HEAD = len(MAGIC) + 8 + 32
METADATA_KEY = "research"


class CheckpointFileError(ValueError):
    """The bytes are not a checkpoint this project can read; the message says why (without the path)."""


class CheckpointRefused(CheckpointFileError):
    """The file asks to run code (a pickle naming a function or class beyond arrays and plain values)."""


def encode(arrays: dict[str, np.ndarray], document: dict[str, Any]) -> bytes:
    """The file's bytes for `arrays` (C-contiguous numpy arrays) and `document` (JSON values)."""
    from safetensors.numpy import save

    payload = save({name: np.ascontiguousarray(a) for name, a in arrays.items()},
                   metadata={METADATA_KEY: json.dumps(document, default=_plain)})
    return MAGIC + struct.pack("<Q", len(payload)) + hashlib.sha256(payload).digest() + payload


def _plain(value):
    """JSON for the numpy scalars a document may hold (metrics read off the devices)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def open_payload(blob: bytes) -> tuple[bytes, bool]:
    """(payload, legacy) of a file's bytes once its header, length and hash check out; `legacy` for the
    earlier pickled format, which legacy_checkpoint.read_legacy reads.

    Raises:
        CheckpointFileError: not a checkpoint, cut short or damaged.
    """
    if len(blob) < HEAD or blob[:len(MAGIC)] not in (MAGIC, LEGACY_MAGIC):
        raise CheckpointFileError("is not a checkpoint of this project (bad header)")
    (length,) = struct.unpack("<Q", blob[len(MAGIC):len(MAGIC) + 8])
    payload = memoryview(blob)[HEAD:]
    if len(payload) != length:
        raise CheckpointFileError(f"is truncated: {len(payload)} of {length} bytes")
    if hashlib.sha256(payload).digest() != blob[len(MAGIC) + 8:HEAD]:
        raise CheckpointFileError("is corrupt: checksum mismatch")
    return bytes(payload), blob.startswith(LEGACY_MAGIC)


def read_payload(payload: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, document) of a payload of this format (CheckpointFileError if it is not one)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        arrays = load(payload)
        (size,) = struct.unpack("<Q", payload[:8])
        header = json.loads(payload[8:8 + size])
        document = json.loads(header["__metadata__"][METADATA_KEY])
    except (SafetensorError, ValueError, KeyError, TypeError, struct.error) as err:
        raise CheckpointFileError(f"is not a checkpoint this project can read ({err})") from None
    if not isinstance(document, dict):
        raise CheckpointFileError("is not a checkpoint this project can read (its document is not an object)")
    return arrays, document
