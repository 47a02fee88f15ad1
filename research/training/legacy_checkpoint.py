"""Checkpoints of the earlier format (MAGIC RSRCHCK1: a pickle, with MXNet's pickled optimizer state inside)
read without running anything they hold: an unpickler that builds numpy arrays and plain values only, and
MXNet's arrays rebuilt from their saved bytes in Python (mxnet's own reader is C++, fed those bytes as is).

Anything else a pickle names (os.system, any class) refuses the file before it is built: nothing runs.
"""
from __future__ import annotations

import io
import pickle
import struct
from typing import Any

import numpy as np

from .checkpoint_file import CheckpointFileError, CheckpointRefused
from .optimizer_state import PREFIX

# MXNet's NDArray::Save: magic, storage type, shape (ndim, int64 dims), context, dtype flag, the data.
NDARRAY_MAGICS = (0xF993FAC9, 0xF993FACA)       # v2, v3 (numpy shape semantics): the same layout here
MXNET_DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64,
                7: np.bool_}
OPTIMIZERS = ("SGD", "NAG", "Adam")             # research.config's train.optimizer choices


def _plain_dtype(*args) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise CheckpointRefused("holds Python objects inside an array: refused, nothing was run")
    return dtype


def _scalar(dtype: np.dtype, *data):
    return np.core.multiarray.scalar(_plain_dtype(dtype), *data)


def _frombuffer(buffer, dtype, shape, order):
    return np.core.numeric._frombuffer(buffer, _plain_dtype(dtype), shape, order)


def _reconstruct(cls, shape, dtype):
    if cls is not np.ndarray:
        raise CheckpointRefused("asks for an array subclass: refused, nothing was run")
    return np.ndarray.__new__(np.ndarray, shape, _plain_dtype(dtype))


NUMPY = {("numpy", "dtype"): _plain_dtype, ("numpy", "ndarray"): np.ndarray}
for _core in ("numpy.core", "numpy._core"):      # numpy 2 pickles name numpy._core
    NUMPY.update({(f"{_core}.multiarray", "scalar"): _scalar, (f"{_core}.numeric", "_frombuffer"): _frombuffer,
                  (f"{_core}.multiarray", "_reconstruct"): _reconstruct})


class _SavedArray:
    """Stands for mxnet.ndarray.NDArray in the optimizer state's pickle: its saved bytes read into `array`."""

    def __init__(self, handle=None):
        self.array: np.ndarray | None = None

    def __setstate__(self, state: dict) -> None:
        data = state.get("handle") if isinstance(state, dict) else None
        self.array = None if data is None else ndarray_from_bytes(bytes(data))


class _SavedOptimizer:
    """Stands for MXNet's optimizer in the same pickle: its attributes, plain values, kept as a dict."""

    def __setstate__(self, state: dict) -> None:
        self.state = state if isinstance(state, dict) else {}


OPTIMIZER_STATE = {("mxnet.ndarray.ndarray", "NDArray"): _SavedArray, ("builtins", "bytearray"): bytearray,
                   **{("mxnet.optimizer.optimizer", name): _SavedOptimizer for name in OPTIMIZERS}}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, allowed: dict[tuple[str, str], Any]):
        super().__init__(io.BytesIO(data))
        self.allowed = allowed

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise CheckpointRefused(f"holds code: its pickle asks for {module}.{name}, which a checkpoint never "
                                    f"holds. Refused: nothing in it was run") from None


def _unpickle(data: bytes, allowed: dict[tuple[str, str], Any]):
    try:
        return _Unpickler(data, allowed).load()
    except CheckpointFileError:
        raise
    except Exception as err:  # noqa: BLE001 - any malformed pickle is the same answer
        raise CheckpointFileError(f"is not a checkpoint this project can read ({type(err).__name__}: {err})") from None


def ndarray_from_bytes(data: bytes) -> np.ndarray:
    """A dense array from MXNet's NDArray::Save bytes (MXNDArraySaveRawBytes), read in Python with every
    size checked against the data."""
    def take(fmt: str, at: int) -> tuple[tuple, int]:
        size = struct.calcsize(fmt)
        if at + size > len(data):
            raise CheckpointFileError("is not a checkpoint this project can read (an array cut short)")
        return struct.unpack_from(fmt, data, at), at + size

    (magic, stype, ndim), at = take("<Iii", 0)
    if magic not in NDARRAY_MAGICS or stype != 0 or not 0 <= ndim <= 32:
        raise CheckpointFileError("is not a checkpoint this project can read (an array of an unknown kind)")
    shape, at = take(f"<{ndim}q", at)
    (_, _, flag), at = take("<iii", at)                   # the device it was on, then the dtype
    if flag not in MXNET_DTYPES or min(shape, default=0) < 0:
        raise CheckpointFileError("is not a checkpoint this project can read (an array of an unknown type)")
    dtype = np.dtype(MXNET_DTYPES[flag])
    count = int(np.prod(shape, dtype=np.int64)) if ndim else 1
    if len(data) - at != count * dtype.itemsize:
        raise CheckpointFileError("is not a checkpoint this project can read (an array's size does not match)")
    return np.frombuffer(data, dtype, count, at).reshape(shape).copy()


def read_legacy(payload: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, document) as checkpoint_file.decode returns them, from an RSRCHCK1 payload."""
    content = _unpickle(payload, NUMPY)
    if not isinstance(content, dict) or not isinstance(content.get("state"), dict) or \
            not isinstance(content.get("params"), dict):
        raise CheckpointFileError("is not a checkpoint this project can read (unexpected content)")
    arrays = {f"params/{name}": value for name, value in content["params"].items()}
    rng = content.get("numpy_rng")
    document = {"state": content["state"], "loss_scaler": content.get("loss_scaler"),
                "mxnet": content.get("mxnet"), "optimizer": None, "numpy_rng": None}
    if isinstance(rng, tuple) and len(rng) == 5:
        arrays["numpy_rng/keys"] = rng[1]
        document["numpy_rng"] = [rng[0], *rng[2:]]
    if content.get("trainer") is not None:
        document["optimizer"] = _optimizer_layout(content["trainer"], arrays)
    return arrays, document


def _optimizer_layout(data: bytes, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """optimizer_state's layout from MXNet's Updater.get_states(dump_optimizer=True) bytes; arrays added."""
    loaded = _unpickle(bytes(data), OPTIMIZER_STATE)
    states, optimizer = loaded if isinstance(loaded, tuple) and len(loaded) == 2 else (loaded, None)
    if not isinstance(states, dict):
        raise CheckpointFileError("is not a checkpoint this project can read (unexpected optimizer state)")

    def flatten(state, name: str):
        if state is None or (isinstance(state, _SavedArray) and state.array is None):
            return None
        if isinstance(state, (tuple, list)):
            return [flatten(part, f"{name}/{n}") for n, part in enumerate(state)]
        if not isinstance(state, _SavedArray):
            raise CheckpointFileError("is not a checkpoint this project can read (unexpected optimizer state)")
        arrays[name] = state.array
        return name

    saved = optimizer.state if isinstance(optimizer, _SavedOptimizer) else {}
    counts = saved.get("_all_index_update_counts") or {}
    return {"states": [[index, flatten(state, f"{PREFIX}{index}")] for index, state in states.items()],
            "num_update": int(saved.get("num_update", 0)),
            "update_counts": [[device, [[index, int(n)] for index, n in per.items()]] for device, per in counts.items()]}
