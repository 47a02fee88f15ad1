"""Training: the data-parallel loop, lr schedules, checkpoints."""
