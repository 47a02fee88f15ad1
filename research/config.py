"""Recipe schema: dataclasses for every YAML section, strict loading, `--set` overrides.

A recipe is validated completely before any data is read. Every key is the name of the
function argument it feeds, so `grep -rn <key> research/` finds where it is used.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import UserError


class RecipeError(UserError):
    """A problem in a recipe or an override, worded for the user who wrote it."""


@dataclass
class NetConfig:
    name: str                 # a key of research.nets.NETS
    classes: int
    pretrained: str = ""      # "" none; a gluoncv model-zoo name or a .params file: weights to start from
    activation: Literal["relu", "elu"] = "relu"      # SqueezeNet: after every convolution, conv10 included
    init: Literal["caffe", "xavier"] = "caffe"       # SqueezeNet: the release's fillers, or mx.init.Xavier() defaults


@dataclass
class DigitsData:
    """scikit-learn's bundled 8x8 digits, upscaled: needs no download."""
    kind: str = "digits"
    size: int = 28            # side the 8x8 images are upscaled to
    val_fraction: float = 0.2
    split_seed: int = 0       # the stratified split is fixed by this, not by train.seed


@dataclass
class MnistData:
    kind: str = "mnist"
    root: str = "data/mnist"  # folder holding the four IDX files (.gz or raw)
    download: bool = True     # fetch missing files from the mirrors in research/data/mnist.py


@dataclass
class SyntheticData:
    """Random tensors at a given shape: for speed measurements and smoke tests."""
    kind: str = "synthetic"
    data_shape: list[int] = field(default_factory=lambda: [3, 224, 224])
    num_train: int = 1024
    num_val: int = 256


@dataclass
class RecordData:
    """Images in im2rec RecordIO files, decoded and augmented by MXNet's ImageRecordIter."""
    kind: str = "recordio"
    train_rec: str = ""
    val_rec: str = ""
    data_shape: list[int] = field(default_factory=lambda: [3, 224, 224])
    resize: int = -1          # val: resize the shorter side to this before the centre crop; -1 keeps it
    train_resize: int = -1    # train: same, before the random crop; -1 keeps it
    rand_crop: bool = True
    random_resized_crop: bool = False
    min_random_area: float = 0.08
    max_random_area: float = 1.0
    min_aspect_ratio: float = 0.75
    max_aspect_ratio: float = 1.3333333
    rand_mirror: bool = True
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    pca_noise: float = 0.0
    # RGB mean/std in 0-255 units; mean "rec" reads the mean computed by tools/build_rec.py
    mean: list[float] | str = field(default_factory=lambda: [123.68, 116.779, 103.939])
    std: list[float] = field(default_factory=lambda: [58.393, 57.12, 57.375])
    preprocess_threads: int = 0   # 0: all cores (past MXNet's cores/2 - 1 cap)
    prefetch_buffer: int = 4
    shuffle: bool = True


DATA_KINDS: dict[str, type] = {
    "digits": DigitsData,
    "mnist": MnistData,
    "synthetic": SyntheticData,
    "recordio": RecordData,
}


@dataclass
class TrainConfig:
    epochs: int
    lr: float
    batch_size: int
    batch_per: Literal["global", "device"] = "global"   # global: batch_size is split over devices; device: per device
    base_batch_size: int = 0         # batch the lr was tuned for; lr scales linearly from it (0: batch_size)
    optimizer: Literal["sgd", "nag", "adam"] = "sgd"
    momentum: float = 0.9
    wd: float = 1e-4
    clip_gradient: float = 0.0       # clip each gradient element to +-this (after rescaling); 0: off
    lr_schedule: Literal["step", "cosine", "poly", "constant"] = "step"
    lr_steps: list[int] = field(default_factory=list)   # epochs at which lr *= lr_factor
    lr_factor: float = 0.1
    lr_power: float = 2.0            # poly schedule exponent
    warmup_epochs: float = 0.0       # linear warmup from 0 over this many epochs
    frozen_epochs: int = 0           # train only net.output for this many epochs (fine-tuning)
    kvstore: Literal["local", "device", "nccl", "dist_sync", "dist_device_sync", "dist_async"] = "device"
    dtype: Literal["float32", "float16"] = "float32"    # float16: GPU only; multi-precision master weights
    # mixed precision through mxnet.contrib.amp: convolutions and dense layers in float16 (GPUs) or bfloat16
    # (CPUs), float32 weights, a dynamic loss scale (kept in checkpoints); use instead of dtype: float16
    amp: Literal["off", "float16", "bfloat16"] = "off"
    hybridize: bool = True
    log_every: int = 50              # batches between progress reports: log line, status.json, MLflow iter/ (each a device sync)
    chance_epochs: int = 0           # stop if val top-1 is still at chance (the data's labels) after this many; 0: off
    stall_epochs: int = 3            # stop if val top-1 stays at chance this many epochs with a flat loss; 0: off
    seed: int = 0


@dataclass
class CheckpointConfig:
    keep_last: int = 3               # newest checkpoints kept; the best by val/top1 is kept as well
    every_minutes: float = 0.0       # also save mid-epoch this often; 0: only at epoch ends


@dataclass
class TrackingConfig:
    enabled: bool = True
    experiment: str = ""             # "" : the recipe name
    system_metrics: bool = True      # CPU, memory, disk, network (GPUs with nvidia-ml-py) in MLflow's System metrics
    # One point per metric this often, the mean of samples taken every min(this, 15) s: a 8-day run
    # stores about 11,500 points per metric at 60 s, where MLflow's default 10 s would store 69,000.
    system_metrics_every_s: float = 60.0


@dataclass
class TransferConfig:
    """Features of net.name with net.pretrained weights + a grid-searched logistic regression.

    Labeled images come from data.train_rec (cross-validation, fit) and data.val_rec (held-out
    report), preprocessed like validation: data.resize, centre crop to data.data_shape, data.mean/std.
    """
    layer: str = "features"          # "features": net.features, global-pooled; "features[:K]": its first K blocks
    test_rec: str = ""               # unlabeled images (record ids are the Kaggle ids); "" : no submission
    batch_size: int = 64             # images per device per batch during feature extraction
    cache_dir: str = "data/feature_cache"
    cs: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0])   # LogisticRegression C grid
    cv_folds: int = 5
    class_names: list[str] = field(default_factory=lambda: ["cat", "dog"])   # label 0, 1, ...
    clip: float = 0.005              # submission probabilities clipped to [clip, 1 - clip] for log loss
    submission: str = "submission.csv"   # relative to the run directory
    seed: int = 0                    # shuffles the cross-validation folds


@dataclass
class Recipe:
    name: str
    net: NetConfig
    train: TrainConfig
    data: Any                        # one of DATA_KINDS, chosen by data.kind
    task: Literal["classify", "transfer"] = "classify"
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    transfer: TransferConfig | None = None
    source: str = field(default="", metadata={"internal": True})  # the YAML file it came from

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("source")
        if out["transfer"] is None:
            out.pop("transfer")
        return out

    def flat(self) -> dict[str, Any]:
        """`section.key` -> value, the form MLflow params take."""
        return dict(flatten(self.to_dict()))


# Keys that say how a run is carried out, not what it learns: where its data is read from and how fast, how often
# it reports and saves, what it records. A run continues with other values of these (the change recorded in MLflow)
# and they do not name its folder or its MLflow run; another value of any other key but train.epochs (which extends
# a run) is another run. A key ending in "." stands for its section.
HOW_KEYS = ("data.train_rec", "data.val_rec", "data.root", "data.download", "data.preprocess_threads",
            "data.prefetch_buffer", "train.log_every", "train.hybridize", "train.kvstore", "train.chance_epochs",
            "train.stall_epochs", "checkpoint.", "tracking.", "transfer.cache_dir", "transfer.batch_size")


def is_how_key(key: str) -> bool:
    """Whether another value of this recipe key leaves the run the same run (HOW_KEYS)."""
    return any(key == how or (how.endswith(".") and key.startswith(how)) for how in HOW_KEYS)


def flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _closest(key: str, valid: list[str], prefix: str = "") -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" Did you mean '{prefix}{match[0]}'?" if match else f" Valid keys: {', '.join(valid)}."


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """Return value converted to tp (int -> float only), or raise naming the expected type."""
    origin = typing.get_origin(tp)
    if origin is Literal:             # a recipe choice: the field's annotation lists the valid values
        options = typing.get_args(tp)
        if value is False and "off" in options:
            value = "off"             # YAML 1.1 reads a bare off (and no) as false: take it as the choice meant
        if isinstance(value, str) and value in options:
            return value
        hint = _closest(str(value), list(options)).replace("Valid keys", "Valid values")
        raise RecipeError(f"{where} = {value!r} is not one of {', '.join(options)}.{hint}")
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _check_value(value, option, where)
            except RecipeError:
                continue
        raise RecipeError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}).")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list of {_type_name(item_tp)}, got {value!r}.")
        return [_check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is type(None):
        if value is None:
            return None
    elif tp is float and (isinstance(value, (int, float)) and not isinstance(value, bool)
                          or isinstance(value, str) and FLOAT_TEXT.match(value)):
        number = float(value)     # YAML 1.1 reads 1e-4 (no dot) as a string: take it as the number meant
        if not math.isfinite(number):
            raise RecipeError(f"{where}: expected a finite number, got {value!r} (.nan/.inf would reach MXNet).")
        return number
    elif tp is bool and isinstance(value, bool):
        return value
    elif tp in (int, str) and isinstance(value, tp) and not isinstance(value, bool):
        return value
    raise RecipeError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}).")


def _build(cls: type, raw: Any, path: tuple[str, ...], origin: str) -> Any:
    where = f"{origin}: {'.'.join(path) or 'top level'}"
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping of keys, got {raw!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in fields:
            dotted = ".".join(path + (str(key),))
            prefix = ".".join(path + ("",))
            raise RecipeError(f"{origin}: unknown key '{dotted}'.{_closest(str(key), list(fields), prefix)}")
    values = {}
    for name, f in fields.items():
        key_path = path + (name,)
        dotted = ".".join(key_path)
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f"{origin}: missing required key '{dotted}' ({_type_name(hints[name])}).")
            continue
        value = raw[name]
        tp = hints[name]
        sub = _dataclass_for(cls, name, value, key_path, origin)
        if sub is not None:
            values[name] = _build(sub, value, key_path, origin)
        elif value is None and f.default is None:
            values[name] = None
        else:
            values[name] = _check_value(value, tp, f"{origin}: {dotted}")
    return cls(**values)


def _dataclass_for(cls: type, name: str, value: Any, key_path: tuple, origin: str) -> type | None:
    """The dataclass a nested section is read into, or None for a plain value."""
    if cls is Recipe and name == "data":
        if not isinstance(value, dict) or "kind" not in value:
            raise RecipeError(f"{origin}: data.kind is required: one of {', '.join(DATA_KINDS)}.")
        kind = value["kind"]
        if kind not in DATA_KINDS:
            raise RecipeError(f"{origin}: data.kind = {kind!r} is not one of {', '.join(DATA_KINDS)}."
                              f"{_closest(str(kind), list(DATA_KINDS))}")
        return DATA_KINDS[kind]
    tp = typing.get_type_hints(cls)[name]
    for option in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(option):
            return option
    return None


def _apply_override(raw: dict, assignment: str, origin: str) -> None:
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment}: expected section.key=value, e.g. train.lr=0.05.")
    dotted, text = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise RecipeError(f"--set {assignment}: the value is not valid YAML ({err}).") from None
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"--set {assignment}: '{key}' is a value, not a section.")
        node = child
    node[keys[-1]] = value


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _validate_semantics(recipe: Recipe, origin: str) -> None:
    if not NAME.match(recipe.name):
        raise RecipeError(f"{origin}: name {recipe.name!r} is not a safe run name: it names the folder runs/<name>, so "
                          f"use letters, digits, '.', '_' and '-', starting with a letter or digit (e.g. lenet_digits).")
    train = recipe.train
    positive = {"train.epochs": train.epochs, "train.batch_size": train.batch_size,
                "train.lr": train.lr, "net.classes": recipe.net.classes,
                "train.log_every": train.log_every,
                "tracking.system_metrics_every_s": recipe.tracking.system_metrics_every_s}
    for key in ("chance_epochs", "stall_epochs"):
        if getattr(train, key) < 0:
            raise RecipeError(f"{origin}: train.{key} must be 0 (off) or a number of epochs, got {getattr(train, key)}.")
    for key, value in positive.items():
        if value <= 0:
            raise RecipeError(f"{origin}: {key} must be positive, got {value}.")
    if train.amp != "off" and train.dtype != "float32":
        raise RecipeError(f"{origin}: train.amp {train.amp} with train.dtype {train.dtype}: choose one. train.amp keeps "
                          f"float32 weights and casts each convolution and dense layer (with a loss scale); "
                          f"train.dtype float16 casts the whole net. Set train.dtype: float32.")
    if train.amp != "off" and (train.kvstore.startswith("dist") or train.kvstore == "nccl"):
        raise RecipeError(f"{origin}: train.amp with train.kvstore {train.kvstore} is not supported: AMP needs the "
                          f"weights updated on each worker (update_on_kvstore=False), which gave wrong results on "
                          f"dist kvstores in 10 of 25 runs here, and users report nccl failing with AMP "
                          f"(gluon-cv#959). Use train.kvstore: device.")
    net = recipe.net
    if not net.name.startswith("squeezenet") and (net.activation, net.init) != ("relu", "caffe"):
        raise RecipeError(f"{origin}: net.activation and net.init apply to SqueezeNet only; "
                          f"remove them for net.name {net.name!r}.")
    if train.lr_schedule == "step" and sorted(train.lr_steps) != train.lr_steps:
        raise RecipeError(f"{origin}: train.lr_steps must be increasing epochs, got {train.lr_steps}.")
    if any(s <= 0 or s >= train.epochs for s in train.lr_steps):
        raise RecipeError(f"{origin}: train.lr_steps {train.lr_steps} must lie inside 1..{train.epochs - 1}.")
    if recipe.task == "transfer" and recipe.transfer is None:
        raise RecipeError(f"{origin}: task 'transfer' needs a 'transfer:' section.")
    data = recipe.data
    if isinstance(data, RecordData):
        if not data.train_rec or not data.val_rec:
            raise RecipeError(f"{origin}: data.train_rec and data.val_rec are required for kind recordio.")
        if len(data.data_shape) != 3:
            raise RecipeError(f"{origin}: data.data_shape must be [channels, height, width], got {data.data_shape}.")
        if isinstance(data.mean, str) and data.mean != "rec":
            raise RecipeError(f"{origin}: data.mean must be 3 numbers or 'rec', got {data.mean!r}.")


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate a recipe; raises RecipeError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}. The recipes shipped are in recipes/.")
    try:
        with open(path) as stream:        # the marks in errors then name the file
            raw = yaml.load(stream, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections (net, data, train, ...).")
    raw.setdefault("name", path.stem)
    base = _build_checked(raw, str(path))
    for assignment in overrides:
        _apply_override(raw, assignment, str(path))
    recipe = _build_checked(raw, f"{path} (with --set {' '.join(overrides)})" if overrides else str(path))
    del base
    recipe.source = str(path)
    return recipe


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key written twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise RecipeError(f"{key_node.start_mark.name}: key '{key}' is written twice, on lines {seen[key]} "
                                  f"and {line}; keep one.")
            seen[key] = line
        return super().construct_mapping(node, deep)


def override_recipe(recipe: Recipe, overrides: list[str]) -> Recipe:
    """A loaded recipe with `section.key=value` overrides applied, validated like `--set`."""
    raw = recipe.to_dict()
    origin = recipe.source or recipe.name
    for assignment in overrides:
        _apply_override(raw, assignment, origin)
    overridden = _build_checked(raw, f"{origin} (with --set {' '.join(overrides)})")
    overridden.source = recipe.source
    return overridden


def _build_checked(raw: dict, origin: str) -> Recipe:
    recipe = _build(Recipe, raw, (), origin)
    _validate_semantics(recipe, origin)
    return recipe


def recipe_from_dict(raw: dict, origin: str = "<recipe>") -> Recipe:
    """Validate an already-parsed recipe (a checkpoint's copy, a test's dict)."""
    return _build_checked(dict(raw), origin)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
