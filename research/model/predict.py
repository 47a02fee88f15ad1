"""Classify image files with an exported model: find its files, preprocess like the recipe's
validation pipeline, return the top-k class names with their probabilities."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DigitsData, MnistData, Recipe, RecipeError, RecordData, SyntheticData, load_recipe
from ..errors import UserError
from .export import CLASSES, RECIPE, deployable_recipe, input_shape
from .input_check import UnusualInput, read_stats, unusual


@dataclass
class ModelFiles:
    symbol: Path
    params: Path
    recipe: Path | None          # recipe.yaml beside the model or in the run directory above it
    classes: Path | None         # classes.json written by research.model.export


def find_model(path: str | Path) -> ModelFiles:
    """Resolve a run directory, a model/ folder, a -symbol.json file or its prefix.

    Raises:
        UserError: nothing exported there, or several models to choose from.
    """
    path = Path(path)
    if path.is_dir() and (path / "model").is_dir():        # a run directory: its model/ folder
        path = path / "model"
    if path.is_dir():
        symbols = sorted(path.glob("*-symbol.json"))
        if len(symbols) != 1:
            found = ", ".join(s.name for s in symbols) or "none"
            raise UserError(f"{path}: expected one exported model (*-symbol.json), found {found}. Pass a run "
                            f"directory of a finished run, its model/ folder or a <prefix>-symbol.json file.")
        symbol = symbols[0]
    elif path.name.endswith("-symbol.json") and path.is_file():
        symbol = path
    elif Path(f"{path}-symbol.json").is_file():
        symbol = Path(f"{path}-symbol.json")
    else:
        raise UserError(f"no exported model at {path}: pass a run directory, its model/ folder or a "
                        f"<prefix>-symbol.json file. Runs export their model when they finish.")
    prefix = str(symbol)[:-len("-symbol.json")]
    params = sorted(Path(symbol.parent).glob(f"{Path(prefix).name}-*.params"))
    if not params:
        raise UserError(f"{symbol}: no {Path(prefix).name}-NNNN.params beside it; the export is incomplete.")
    folder = symbol.parent
    recipe = next((p for p in (folder / RECIPE, folder.parent / RECIPE) if p.is_file()), None)
    classes = folder / CLASSES
    return ModelFiles(symbol, params[-1], recipe, classes if classes.is_file() else None)


def load_classes(files: ModelFiles, count: int) -> list[str]:
    """Class names from classes.json, else the indices as text."""
    if files.classes is None:
        return [str(i) for i in range(count)]
    names = [str(name) for name in json.loads(files.classes.read_text())]
    if len(names) != count:
        raise UserError(f"{files.classes} names {len(names)} classes but the model has {count} outputs.")
    return names


def read_image(path: str | Path, channels: int) -> np.ndarray:
    """HxWxC uint8, RGB (or 1 channel for grayscale nets). Raises UserError if unreadable."""
    import cv2

    if not Path(path).is_file():
        raise UserError(f"{path}: no such image file.")
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    image = cv2.imread(str(path), flag)
    if image is None:
        raise UserError(f"{path}: not a readable image (missing, or not a format OpenCV decodes).")
    if channels == 1:
        return image[:, :, None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def as_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """An HxW or HxWxC uint8 RGB image with the net's channel count, converted as read_image would."""
    import cv2

    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise UserError(f"an image array must be HxW, HxWx1 or HxWx3 uint8 RGB; got shape {image.shape}.")
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    return np.repeat(image, channels, axis=2)


def preprocess(image: np.ndarray, recipe: Recipe) -> np.ndarray:
    """HxWxC uint8 -> float32 (1, C, H, W) as the recipe's validation data looks."""
    import cv2

    channels, height, width = input_shape(recipe)
    data = recipe.data
    if isinstance(data, RecordData):
        data = deployable_recipe(recipe).data      # a run directory's recipe may still say mean 'rec'
        if isinstance(data.mean, str):
            raise UserError(f"the recipe's data.mean is 'rec' but {data.train_rec} has no .mean.json beside it: "
                            f"pass --recipe with data.mean as 3 numbers.")
        image = _resize_and_crop(image, data.resize, height, width)
        mean = np.array(data.mean[:channels], np.float32)
        std = np.array(data.std[:channels], np.float32)
        x = (image.astype(np.float32) - mean) / std
    else:
        # Digits and MNIST are single-channel arrays scaled to [0, 1]; synthetic data is uniform
        # in [-1, 1]. cv2.resize drops a single channel axis: put it back.
        interpolation = cv2.INTER_AREA if image.shape[0] > height else cv2.INTER_LINEAR
        resized = cv2.resize(image, (width, height), interpolation=interpolation)
        x = resized.reshape(height, width, channels).astype(np.float32) / 255.0
        if isinstance(data, SyntheticData):
            x = x * 2 - 1
        elif not isinstance(data, (DigitsData, MnistData)):
            raise TypeError(f"no preprocessing for data section {type(data).__name__}")
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _resize_and_crop(image: np.ndarray, resize: int, height: int, width: int) -> np.ndarray:
    """Shorter side to `resize` (at least the crop), then the centre crop: ImageRecordIter's val
    pipeline, which resizes bilinearly."""
    import cv2

    short = min(image.shape[:2])
    target = max(resize if resize > 0 else short, height, width)
    if target != short:
        scale = target / short
        size = (max(width, round(image.shape[1] * scale)), max(height, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR).reshape(size[1], size[0], -1)
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return image[top:top + height, left:left + width]


def load_exported(files: ModelFiles):
    """The exported net as a SymbolBlock on the CPU; UserError naming the file when one is damaged or cut short
    (MXNet would print its C++ check: "Invalid NDArray file format")."""
    import mxnet as mx
    from mxnet import gluon

    try:
        json.loads(files.symbol.read_text())
    except ValueError as err:                    # UnicodeDecodeError and JSONDecodeError both
        raise UserError(f"{files.symbol} is not a whole symbol file ({err}): {DAMAGED}") from None
    try:
        with warnings.catch_warnings():          # "unused parameter" chatter from gluon on import
            warnings.simplefilter("ignore")
            return gluon.SymbolBlock.imports(str(files.symbol), ["data"], str(files.params), ctx=mx.cpu())
    except (mx.base.MXNetError, ValueError, AssertionError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "Check failed" in line), lines[-1] if lines else type(err).__name__)
        raise UserError(f"{files.params} cannot be read ({reason[:200]}): {DAMAGED}") from None


DAMAGED = "the file is damaged or was cut short (a partial copy?); copy the model folder again from where it was trained"


class Predictor:
    """An exported model loaded with gluon.SymbolBlock.imports, on the CPU."""

    def __init__(self, model: str | Path, recipe: str | Path | None = None):
        import mxnet as mx

        self.files = find_model(model)
        recipe_path = Path(recipe) if recipe else self.files.recipe
        if recipe_path is None:
            raise UserError(f"no recipe.yaml beside {self.files.symbol} or in the folder above it: pass the "
                            f"run's recipe with --recipe so images are preprocessed as in training.")
        try:
            self.recipe = load_recipe(recipe_path)
        except RecipeError as err:
            raise UserError(f"cannot read the model's recipe: {err}") from None
        self.net = load_exported(self.files)
        self.shape = input_shape(self.recipe)
        outputs = self.net(mx.nd.zeros((1, *self.shape))).shape[-1]
        self.classes = load_classes(self.files, outputs)
        self.input_stats = read_stats(self.files.symbol.parent)

    def predict(self, images: list[str | Path], k: int = 5) -> list[list[tuple[str, float]]]:
        """For each image file, the top-k (class name, probability), most likely first."""
        return self.predict_arrays([read_image(p, self.shape[0]) for p in images], k, [str(p) for p in images])

    def predict_arrays(self, images: list[np.ndarray], k: int = 5,
                       names: list[str] | None = None) -> list[list[tuple[str, float]]]:
        """`predict` for decoded images: HxWxC (or HxW) uint8 RGB, as read_image returns them. An image far from
        the training images (input_stats.json beside the model) gets a UnusualInput warning, named by `names`."""
        import mxnet as mx

        xs = [preprocess(as_channels(image, self.shape[0]), self.recipe) for image in images]
        for i, x in enumerate(xs):
            if problem := unusual(x, self.input_stats):
                warnings.warn(f"{names[i] if names else f'image {i}'}: {problem}", UnusualInput, stacklevel=2)
        batch = np.concatenate(xs)
        probs = mx.nd.softmax(self.net(mx.nd.array(batch))).asnumpy()
        k = min(k, probs.shape[1])
        tops = np.argsort(-probs, axis=1)[:, :k]
        return [[(self.classes[i], float(row[i])) for i in top] for row, top in zip(probs, tops)]
