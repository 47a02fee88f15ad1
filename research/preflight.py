"""Cheap checks of a recipe against this machine, run before any heavy work."""
from __future__ import annotations

import os
from pathlib import Path

from .config import MnistData, RecordData, Recipe
from .data.verify import require_intact
from .errors import UserError
from .nets import NETS


def check_recipe(recipe: Recipe, ctxs: list) -> None:
    """Raise UserError for what would otherwise fail minutes (or days) into a run."""
    if recipe.task == "classify" and recipe.net.name not in NETS:
        raise UserError(f"{recipe.source}: net.name '{recipe.net.name}' is not a known net. "
                        f"Valid names: {', '.join(sorted(NETS))}.")
    on_cpu = all(c.device_type == "cpu" for c in ctxs)
    if recipe.train.dtype == "float16" and on_cpu:
        raise UserError(f"{recipe.source}: train.dtype float16 needs GPUs: MXNet has no float16 "
                        f"convolution on the CPU. Pass --gpus, or --set train.dtype=float32.")
    if recipe.train.amp == "float16" and on_cpu:
        raise UserError(f"{recipe.source}: train.amp float16 needs GPUs: MXNet has no float16 convolution on the "
                        f"CPU. Pass --gpus, or --set train.amp=bfloat16 (CPUs with oneDNN).")
    if recipe.train.amp == "bfloat16" and not on_cpu:
        raise UserError(f"{recipe.source}: train.amp bfloat16 runs on CPUs only in MXNet 1.9 (oneDNN); on GPUs "
                        f"use --set train.amp=float16.")
    if recipe.train.kvstore.startswith("dist") and "DMLC_ROLE" not in os.environ:
        raise UserError(f"{recipe.source}: train.kvstore {recipe.train.kvstore} needs the distributed "
                        f"launcher: python tools/launch_dist.py --hosts HOSTS -- python tools/train.py ...")
    if recipe.train.kvstore == "nccl" and on_cpu:
        raise UserError(f"{recipe.source}: train.kvstore nccl needs GPUs; use device on the CPU.")
    data = recipe.data
    if isinstance(data, RecordData):
        for key in ("train_rec", "val_rec"):
            rec = Path(getattr(data, key))
            for path in (rec, rec.with_suffix(".idx")):
                if not path.is_file():
                    raise UserError(f"{recipe.source}: data.{key}: {path} does not exist. Build it with "
                                    f"tools/build_rec.py, or point the recipe at it with --set data.{key}=PATH.")
            require_intact(rec, f"{recipe.source}: data.{key}")
    if isinstance(data, MnistData) and not data.download:
        from .data.mnist import check_mnist
        check_mnist(data)
