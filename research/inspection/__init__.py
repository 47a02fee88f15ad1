"""Looking at runs: the state of every run under an output root (status.py, tools/status.py) and runs side
by side from the MLflow store (compare.py, tools/compare.py, research.compare)."""
