"""Speed and stability measurements (tools/benchmark.py, tools/stability.py): the trainer against a bare
loop, the data pipeline against a bare ImageRecordIter, a run's plan, checkpoint and tracking cost,
SqueezeNet's first steps at the reference set-up."""
