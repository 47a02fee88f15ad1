"""Where things are: the repository root, and the folders under it that the tools default to."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent     # the checkout: tools/, recipes/, runs/, mlruns/
RUNS = REPO / "runs"                               # run directories: runs/<recipe name>/ unless --output
MLRUNS = REPO / "mlruns"                           # the MLflow store (sqlite) and its artifacts
TOOLS = REPO / "tools"
