"""The names of what a training run logs, defined once: its MLflow metric keys and the columns of its per-epoch
history (research/training/ writes them; tools/compare.py, a sweep, the guard and research.load_run read them)."""
from __future__ import annotations

# Per epoch (the history, MLflow at step = epoch)
TRAIN_LOSS = "train/loss"
TRAIN_TOP1 = "train/top1"
TRAIN_BATCHES = "train/batches"          # the batches the epoch's train figures cover (fewer after an old resume)
VAL_LOSS = "val/loss"
VAL_TOP1 = "val/top1"
VAL_TOP5 = "val/top5"
LR = "lr"                                # the last lr the epoch trained with
IMG_PER_S = "speed/img_per_s"
EPOCH_S = "time/epoch_s"
DATA_WAIT = "time/data_wait"             # the devices' estimated idle share, waiting on data
DEAD_FRACTION = "health/dead_fraction"
LOSS_SCALE = "amp/loss_scale"            # train.amp
SKIPPED_STEPS = "amp/skipped_steps"
# Every log interval (MLflow at step = the global step)
ITER_LOSS = "iter/loss"
ITER_LR = "iter/lr"
ITER_IMG_PER_S = "iter/img_per_s"
# The transfer job (research/transfer/job.py) logs its classifier's accuracy as VAL_TOP1 too
VAL_ACCURACY = "val/accuracy"
VAL_LOG_LOSS = "val/log_loss"
