"""What a run directory holds, by name: the one place a file of RUN_DIR is spelled (tests/unit/test_layout.py
refuses these names anywhere else in research/ and tools/)."""
from __future__ import annotations

STATUS = "status.json"            # where the run is, for tools/status.py and the supervisor (status.py)
RUN_JSON = "run.json"             # the MLflow run the directory logs to (run_json.py)
RECIPE = "recipe.yaml"            # the recipe as trained, overrides applied
CHECKPOINTS = "checkpoints"       # step-*.ckpt and best.ckpt (research/training/checkpoint.py)
MODEL = "model"                   # the exported model (research/model/export.py)
TRAIN_LOG = "train.log"           # the trainer's log lines (research/training/logs.py)
CONSOLE_LOG = "console.log"       # all a detached run or a sweep's trial printed (console.py)
TRACEBACK = "traceback.txt"       # an unexpected error's traceback
CURVES = "curves.png"             # loss and accuracy per epoch (research/training/plots.py)
KEEP_ALIVE = "keep-alive.json"    # the keep-alive supervisor's record of the run (supervision.py)
LOCK = ".lock"                    # the flock of the one process that owns the directory (lock.py)
SUBFOLDERS = (CHECKPOINTS, MODEL)  # a run's own folders: no run directory is nested in them
