"""One training run: job.py builds and runs it inside lifecycle.py (the run directory, the MLflow run,
the exit status), loop.py `fit` is the loop. The library call is research.train (research/api.py)."""
