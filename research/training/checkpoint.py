"""Checkpoints: one self-checking file each, written atomically; find the newest valid one.

A file holds arrays (weights, optimizer state) and JSON (position, history, recipe, loss scale),
nothing that runs code when it is opened (checkpoint_file.py has the layout). A truncated or corrupt
file fails the length or hash check and is skipped with a warning; one that asks to run code (an
earlier pickled file, altered) is refused with an error. The step count and lr live in our own
metadata, not in MXNet's optimizer state, which counts updates per device (apache/mxnet#17357).
"""
from __future__ import annotations

import copy
import logging
import re
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import atomic
from ..errors import UserError
from . import checkpoint_file, precision
from .legacy_checkpoint import read_legacy
from .optimizer_state import OptimizerStateError, load_optimizer_state, optimizer_state

if TYPE_CHECKING:      # mxnet is imported where it is used: the keep-alive supervisor (research/detached/supervise.py)
    from mxnet import gluon   # lists checkpoints all run long, and importing mxnet costs it seconds and 300 MB

NAME = re.compile(r"^step-(\d{10})\.ckpt$")
BEST = "best.ckpt"
log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says which file and why."""


class CheckpointRefused(UserError):
    """A file in the checkpoints folder asks to run code: refused, and the run stops (exit status 2) rather
    than go back to an older checkpoint past a file someone altered."""


@dataclass
class TrainState:
    """Everything besides weights and optimizer state that a resumed run needs."""
    epoch: int = 0                 # epochs fully done
    batch_in_epoch: int = 0        # batches done in the current epoch (mid-epoch checkpoints)
    step: int = 0                  # global step (updates) so far
    run_id: str | None = None      # MLflow run to continue
    history: list[dict[str, float]] = field(default_factory=list)   # one dict per epoch done
    best_top1: float = -1.0
    recipe: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0         # training seconds over all sessions of this run
    # The epoch under way's train sums up to batch_in_epoch (loop.EpochTotals.carried_on), so that a run resumed
    # mid-epoch reports the epoch's loss and top-1 over all its batches; None at an epoch's end, and in
    # checkpoints written before it was kept (the resumed epoch's figures then cover its batches after the resume).
    epoch_totals: dict[str, float] | None = None


def net_arrays(net: gluon.Block) -> dict[str, np.ndarray]:
    """Parameters by structural name (as save_parameters names them), averaged over devices."""
    return {name: p._reduce().asnumpy() for name, p in net._collect_params_with_prefix().items()}


def load_net_arrays(net: gluon.Block, arrays: dict[str, np.ndarray]) -> None:
    import mxnet as mx
    params = net._collect_params_with_prefix()
    missing = sorted(set(params) - set(arrays))
    if missing:
        raise CheckpointError(f"checkpoint lacks parameters {missing[:5]}: it was made for another net")
    for name, param in params.items():
        if tuple(param.shape) != arrays[name].shape:
            raise CheckpointError(f"parameter {name} has shape {arrays[name].shape} in the checkpoint but "
                                  f"{tuple(param.shape)} in the net: it was made for another net or class count")
        param.set_data(mx.nd.array(arrays[name], dtype=param.dtype))


def snapshot(state: TrainState, net: gluon.Block, trainer: gluon.Trainer) -> dict[str, Any]:
    """Everything a checkpoint holds, copied off the devices now (a sync point):
    {"state", "params", "optimizer": (layout, arrays) or None, "loss_scaler", "numpy_rng", "mxnet"}."""
    import mxnet as mx
    return {
        "state": copy.deepcopy(state.__dict__),
        "params": net_arrays(net),
        "optimizer": optimizer_state(trainer),         # None where the distributed servers hold it
        "loss_scaler": precision.scaler_state(trainer),     # train.amp: AMP's dynamic loss scale; else None
        "numpy_rng": np.random.get_state(),
        "mxnet": mx.__version__,
    }


def encode(content: dict[str, Any]) -> bytes:
    """A snapshot's file bytes: the arrays by name, the rest as JSON (checkpoint_file)."""
    layout, optimizer_arrays = content["optimizer"] or (None, {})
    rng = content["numpy_rng"]
    arrays = {**{f"{PARAMS}{name}": value for name, value in content["params"].items()}, **optimizer_arrays,
              RNG_KEYS: rng[1]}
    document = {"state": content["state"], "optimizer": layout, "loss_scaler": content["loss_scaler"],
                "numpy_rng": [rng[0], *rng[2:]], "mxnet": content["mxnet"]}
    return checkpoint_file.encode(arrays, document)


def decode(arrays: dict[str, np.ndarray], document: dict[str, Any]) -> dict[str, Any]:
    """The snapshot a file's arrays and document hold, its state a TrainState."""
    try:
        rng = document.get("numpy_rng")
        optimizer = document.get("optimizer")
        return {
            "state": TrainState(**document["state"]),
            "params": {name[len(PARAMS):]: value for name, value in arrays.items() if name.startswith(PARAMS)},
            "optimizer": None if optimizer is None else (optimizer, arrays),
            "loss_scaler": document.get("loss_scaler"),
            "numpy_rng": None if rng is None else (rng[0], arrays[RNG_KEYS], *rng[1:]),
            "mxnet": document.get("mxnet"),
        }
    except (KeyError, TypeError, IndexError) as err:
        raise checkpoint_file.CheckpointFileError(f"is not a checkpoint this project can read ({err!r})") from None


PARAMS = "params/"            # array names: params/<structural name>, as save_parameters names them
RNG_KEYS = "numpy_rng/keys"


def write_checkpoint(folder: str | Path, step: int, content: dict[str, Any], keep_last: int = 3,
                     is_best: bool = False) -> Path:
    """Write step-NNNNNNNNNN.ckpt atomically, update best.ckpt, prune to the newest keep_last.

    Raises:
        CheckpointError: disk full or folder not writable; older checkpoints are untouched.
    """
    folder = Path(folder)
    blob = encode(content)
    path = folder / f"step-{step:010d}.ckpt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(path, blob)
        if is_best:
            atomic.write_bytes(folder / BEST, blob)
    except OSError as err:
        raise CheckpointError(f"checkpoint not saved: {atomic.explain(path, err)}. "
                              f"Earlier checkpoints in {folder} are intact.") from err
    for old in list_checkpoints(folder)[:-max(keep_last, 1)]:
        old.unlink(missing_ok=True)
    return path


def save_checkpoint(folder: str | Path, state: TrainState, net: gluon.Block, trainer: gluon.Trainer,
                    keep_last: int = 3, is_best: bool = False) -> Path:
    """Snapshot and write in the calling thread."""
    return write_checkpoint(folder, state.step, snapshot(state, net, trainer), keep_last, is_best)


class CheckpointWriter:
    """Writes checkpoints on a background thread, one at a time and in order.

    The snapshot is taken in the caller's thread (a sync point), so training goes on while the file
    is hashed, written and fsynced. `save` returns the write's Future: the loop hands it to the
    tracker, which logs the epoch's metrics once the file is on disk, so MLflow never shows an epoch
    that a resume would not start after.
    """

    def __init__(self, folder: str | Path, keep_last: int):
        self.folder, self.keep_last = Path(folder), keep_last
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._writes: list[Future] = []

    def save(self, state: TrainState, net: gluon.Block, trainer: gluon.Trainer, is_best: bool = False) -> Future:
        content = snapshot(state, net, trainer)
        write = self._pool.submit(write_checkpoint, self.folder, state.step, content, self.keep_last, is_best)
        self._writes.append(write)
        return write

    @property
    def failed(self) -> CheckpointError | None:
        """The first write that failed (the loop stops on it), else None; writes still running are not waited for."""
        for write in [w for w in self._writes if w.done()]:
            if write.exception() is not None:
                return write.exception()
            self._writes.remove(write)
        return None

    def wait(self) -> None:
        """Until every write queued so far is on disk (or failed)."""
        wait(self._writes)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class NoCheckpoints:
    """The CheckpointWriter of a distributed worker other than rank 0, which writes none: `save` takes no
    snapshot and returns a Future that is already done; nothing ever fails."""
    failed = None

    def save(self, state: TrainState, net: gluon.Block, trainer: gluon.Trainer, is_best: bool = False) -> Future:
        done: Future = Future()
        done.set_result(None)
        return done

    def wait(self) -> None:
        pass

    def close(self) -> None:
        pass


def list_checkpoints(folder: str | Path) -> list[Path]:
    """step-*.ckpt files, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if NAME.match(p.name))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and verify one file: {"state": TrainState, "params", "optimizer", "loss_scaler", "numpy_rng", ...}.

    Raises:
        CheckpointError: unreadable, cut short, damaged, or not a checkpoint of this project.
        CheckpointRefused: it asks to run code (nothing in it was run).
    """
    path = Path(path)
    try:
        payload, legacy = checkpoint_file.open_payload(path.read_bytes())
        return decode(*(read_legacy(payload) if legacy else checkpoint_file.read_payload(payload)))
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from err
    except checkpoint_file.CheckpointRefused as err:
        raise CheckpointRefused(f"{path} {err}. A checkpoint holds arrays and JSON only; one that asks for more "
                                f"was made or altered by someone: delete it (the run resumes from the one "
                                f"before), or start over with --fresh.") from None
    except checkpoint_file.CheckpointFileError as err:
        raise CheckpointError(f"{path} {err}") from None


def find_latest(folder: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies, warning about each newer one that does not."""
    for path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping checkpoint: %s", err)
    return None


def unusable_after(folder: str | Path, step: int) -> str:
    """Why no checkpoint newer than `step` could be resumed from: each newer file's problem, or that there
    is none (deleted, or lost with a disk)."""
    problems = []
    for path in list_checkpoints(folder):
        if int(NAME.match(path.name).group(1)) > step:
            try:
                load_checkpoint(path)
            except CheckpointError as err:
                problems.append(str(err))
    return "; ".join(problems) or f"no checkpoint after step {step} in {folder}"


def restore(content: dict[str, Any], net: gluon.Block, trainer: gluon.Trainer) -> TrainState:
    """Load weights and optimizer state into an initialised net/trainer on any number of devices."""
    load_net_arrays(net, content["params"])
    if content["optimizer"] is None:
        log.warning("this checkpoint has no optimizer state (distributed servers held it): "
                    "momentum restarts from zero")
    else:
        try:
            load_optimizer_state(trainer, *content["optimizer"])
        except (OptimizerStateError, KeyError) as err:
            raise CheckpointError(f"its optimizer state does not fit this net ({err})") from None
    precision.load_scaler_state(trainer, content.get("loss_scaler"))    # absent from checkpoints before train.amp
    if content["numpy_rng"] is not None:
        np.random.set_state(content["numpy_rng"])
    return content["state"]
