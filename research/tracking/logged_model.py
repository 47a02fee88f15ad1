"""The final model as an MLflow pyfunc: `predict` takes image files or decoded images and answers
like tools/predict.py (the recipe's validation preprocessing, then the exported net).

A logged model names its class by this import path, and loading it (`mlflow.pyfunc.load_model`,
`mlflow models serve`) imports this module and research.model.predict, never the trainer.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

ARTIFACT = "model"            # the exported folder (symbol, params, recipe.yaml, classes.json) inside the logged model


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Top-k classes of images. Input: file paths (a list, or a DataFrame/Series of them), decoded
    RGB uint8 images (one HxWxC array, an NxHxWxC array or a list), or encoded image bytes.
    Output: one row per image with `class`, `probability` and the top `top` (param, default 5)
    `top_classes` / `top_probabilities`, most likely first."""

    # No type-hint schema: the input takes several forms. (Else MLflow warns at every definition and load.)
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from research.model.predict import Predictor
        self.predictor = Predictor(context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        top = int((params or {}).get("top", 5))
        paths, arrays = _split_input(model_input)
        if paths is not None:
            results = self.predictor.predict(paths, k=top)
        else:
            results = self.predictor.predict_arrays(arrays, k=top)
        return pd.DataFrame({"class": [r[0][0] for r in results], "probability": [r[0][1] for r in results],
                             "top_classes": [[name for name, _ in r] for r in results],
                             "top_probabilities": [[p for _, p in r] for r in results]})


def _split_input(model_input: Any) -> tuple[list[str] | None, list[np.ndarray] | None]:
    """(file paths, None) or (None, decoded RGB images) from what a caller or the scoring server passes."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        model_input = model_input.iloc[:, 0].tolist()          # one column: paths or encoded images
    elif isinstance(model_input, pd.Series):
        model_input = model_input.tolist()
    if isinstance(model_input, (str, Path, bytes)):
        model_input = [model_input]
    if isinstance(model_input, np.ndarray):
        if model_input.dtype.kind in "US":
            return [str(p) for p in model_input.ravel()], None
        return None, list(model_input) if model_input.ndim == 4 else [model_input]
    items = list(model_input)
    if all(isinstance(item, (str, Path)) for item in items):
        return [str(item) for item in items], None
    return None, [_decode(item) if isinstance(item, bytes) else np.asarray(item) for item in items]


def _decode(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("image bytes that OpenCV cannot decode")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def log(model_dir: str | Path, model_id: str, requirements: list[str], code: str | Path) -> None:
    """Write the pyfunc into the LoggedModel `model_id` (created by research.tracking): the
    exported folder as its artifact, this package's code beside it, so it loads without the repo."""
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    pyfunc_log.setLevel(logging.ERROR)        # the CloudPickle caution: the class is pickled by reference
    try:
        mlflow.pyfunc.log_model(name=ARTIFACT, python_model=ImageClassifier(), artifacts={ARTIFACT: str(model_dir)},
                                code_paths=[str(code)], pip_requirements=requirements, model_id=model_id)
    finally:
        pyfunc_log.setLevel(level)


def model_requirements() -> list[str]:
    """pip requirements of the logged model, pinned to this environment (listed: MLflow's inference
    of them would load the model in a subprocess, seconds per run). It predicts on the CPU, so the
    CPU build of mxnet serves it whichever build trained it."""
    from importlib.metadata import PackageNotFoundError, version
    pins = ["mxnet==1.9.1"]
    for package in ("mlflow", "numpy", "opencv-python-headless", "pyyaml", "pandas"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins
