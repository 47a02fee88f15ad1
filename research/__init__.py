"""research: MXNet/Gluon image classification, tracked in MLflow.

The library API (docs/notebook.md), the same code paths as tools/*.py:
    run = research.train("recipes/lenet_digits.yaml", overrides={"train.lr": 0.05})
    run = research.load_run("runs/lenet_digits")    # .recipe .history .run_id .net .plot() .predict()
    table = research.compare("lenet_digits")         # tools/compare.py's table as a DataFrame
    result = research.sweep("recipes/lenet_digits.yaml", grid={"train.lr": [0.01, 0.02]})   # tools/sweep.py

Importing research is cheap (no mxnet, no mlflow): the tools set MXNet's threads after it. It loads the CUDA
libraries a PyPI CUDA build links from their pip wheels, so that any `import mxnet` after it finds them
(research/gpu/cuda_libs.py; nothing to do, and nothing done, on the CPU build).
"""
from importlib.util import find_spec

from .gpu.cuda_libs import preload

preload()

if find_spec("mxnet") is None:          # `pip install -e .` without a build extra: say which one to add
    from .builds import missing_mxnet_message
    raise ImportError(missing_mxnet_message())

from .api import Run, compare, load_run, sweep, train  # noqa: E402
from .errors import UserError  # noqa: E402

__all__ = ["Run", "UserError", "compare", "load_run", "sweep", "train"]
