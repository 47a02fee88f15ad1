"""On-disk feature cache: one .npz per backbone, weights, layer, data file and preprocessing.

The file name carries a hash of that key and the file stores the key itself, so a file made
by another model (copied or renamed into place) is refused instead of silently used.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from .features import Features, TransferError


def cache_key(backbone: str, weights_id: str, layer: str, rec: str, data_shape: list[int],
              resize: int, mean: list[float], std: list[float], labeled: bool = True) -> dict:
    """Everything the features depend on; the data file by path, size and mtime (hashing GBs is slow).

    `labeled`: the file stores class labels (train) or record ids (test) beside the features.
    """
    stat = Path(rec).stat()
    key = {"backbone": backbone, "weights": weights_id, "layer": layer,
           "data": {"path": str(Path(rec).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                    "stores": "labels" if labeled else "ids"},
           "preprocessing": {"data_shape": list(data_shape), "resize": resize, "mean": list(mean),
                             "std": list(std)}}
    return json.loads(json.dumps(key))   # the form it takes after a round trip through the file


def cache_path(cache_dir: str | Path, key: dict) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    stem = Path(key["data"]["path"]).stem
    name = "-".join((stem, key["backbone"], key["layer"], digest))
    return Path(cache_dir) / (re.sub(r"[^\w.-]+", "_", name) + ".npz")


def load_features(path: Path, key: dict) -> Features | None:
    """The cached features at `path`, None if absent.

    Raises:
        TransferError: the file was made with another key (another model, layer, data or preprocessing).
    """
    if not path.is_file():
        return None
    with np.load(path) as stored:
        made_by = json.loads(str(stored["key"]))
        if made_by != key:
            raise TransferError(_mismatch(path, made_by, key))
        return Features(x=stored["x"], labels=stored["labels"], ids=stored["ids"])


def save_features(path: Path, key: dict, features: Features) -> None:
    """Write atomically: an interrupted run leaves no half-written cache behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, x=features.x, labels=features.labels, ids=features.ids, key=json.dumps(key))
    os.replace(tmp, path)


def _mismatch(path: Path, made_by: dict, key: dict) -> str:
    fields = [name for name in sorted(set(made_by) | set(key)) if made_by.get(name) != key.get(name)]
    what = "another model" if {"backbone", "weights"} & set(fields) else "other settings"
    details = "; ".join(f"{name}: {made_by.get(name)!r} in the cache, {key.get(name)!r} in this run"
                        for name in fields)
    return (f"feature cache {path} was made by {what} ({details}). Delete the file to extract again, or set "
            f"transfer.cache_dir to another folder.")
