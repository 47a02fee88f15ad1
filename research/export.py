"""Deployable models: the hybridized net exported as MXNet symbol + params."""
from __future__ import annotations

from pathlib import Path

from mxnet import gluon

from .config import Recipe


def export_model(net: gluon.HybridBlock, folder: str | Path, recipe: Recipe) -> list[Path]:
    """Write folder/<net name>-symbol.json and -0000.params; returns the files written.

    The net must have run forward once hybridized (the trainer's warm-up does that).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = folder / recipe.net.name
    net.export(str(prefix), epoch=0)
    return [Path(f"{prefix}-symbol.json"), Path(f"{prefix}-0000.params")]
