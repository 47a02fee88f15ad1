"""Checkpoints: one self-checking file each, written atomically; find the newest valid one.

File layout: MAGIC, 8-byte payload length, 32-byte sha256 of the payload, payload (pickle).
A truncated or corrupt file fails the length or hash check and is skipped with a warning.
The step count and lr live in our own metadata, not in MXNet's optimizer state, which counts
updates per device (apache/mxnet#17357).
"""
from __future__ import annotations

import copy
import hashlib
import logging
import pickle
import re
import struct
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import atomic
from . import precision

if TYPE_CHECKING:      # mxnet is imported where it is used: the keep-alive supervisor (research/detached/supervise.py)
    from mxnet import gluon   # lists checkpoints all run long, and importing mxnet costs it seconds and 300 MB

MAGIC = b"RSRCHCK1"
NAME = re.compile(r"^step-(\d{10})\.ckpt$")
BEST = "best.ckpt"
FOLDER = "checkpoints"      # RUN_DIR/checkpoints/
log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says which file and why."""


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


def trainer_states(trainer: gluon.Trainer) -> bytes | None:
    """Optimizer state (momentum...) as Trainer.save_states serialises it, without the file;
    None where the kvstore servers hold it.

    One updater's state stands for all devices: with synchronous updates every device applies
    the same aggregated gradient, so the per-device states are identical (apache/mxnet#15918).
    """
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()
    kv = trainer._kvstore
    if trainer._update_on_kvstore:
        if "dist" in kv.type:
            return None    # lives on the parameter servers: not reachable from a worker
        return kv._updater.get_states(dump_optimizer=True)
    return trainer._updaters[0].get_states(dump_optimizer=True)


def load_trainer_states(trainer: gluon.Trainer, states: bytes | None) -> None:
    if states is None:
        log.warning("this checkpoint has no optimizer state (distributed servers held it): "
                    "momentum restarts from zero")
        return
    with tempfile.NamedTemporaryFile() as tmp:
        Path(tmp.name).write_bytes(states)
        trainer.load_states(tmp.name)


def snapshot(state: TrainState, net: gluon.Block, trainer: gluon.Trainer) -> dict[str, Any]:
    """Everything a checkpoint holds, copied off the devices now (a sync point)."""
    import mxnet as mx
    return {
        "state": copy.deepcopy(state.__dict__),
        "params": net_arrays(net),
        "trainer": trainer_states(trainer),
        "loss_scaler": precision.scaler_state(trainer),     # train.amp: AMP's dynamic loss scale; else None
        "numpy_rng": np.random.get_state(),
        "mxnet": mx.__version__,
    }


def write_checkpoint(folder: str | Path, step: int, content: dict[str, Any], keep_last: int = 3,
                     is_best: bool = False) -> Path:
    """Write step-NNNNNNNNNN.ckpt atomically, update best.ckpt, prune to the newest keep_last.

    Raises:
        CheckpointError: disk full or folder not writable; older checkpoints are untouched.
    """
    folder = Path(folder)
    payload = pickle.dumps(content, protocol=pickle.HIGHEST_PROTOCOL)
    blob = MAGIC + struct.pack("<Q", len(payload)) + hashlib.sha256(payload).digest() + payload
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


def list_checkpoints(folder: str | Path) -> list[Path]:
    """step-*.ckpt files, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if NAME.match(p.name))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and verify one file: {"state": TrainState, "params", "trainer", "numpy_rng"}."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from err
    head = len(MAGIC) + 8 + 32
    if len(blob) < head or not blob.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a checkpoint of this project (bad header)")
    (length,) = struct.unpack("<Q", blob[len(MAGIC):len(MAGIC) + 8])
    payload = blob[head:]
    if len(payload) != length:
        raise CheckpointError(f"{path} is truncated: {len(payload)} of {length} bytes")
    if hashlib.sha256(payload).digest() != blob[len(MAGIC) + 8:head]:
        raise CheckpointError(f"{path} is corrupt: checksum mismatch")
    content = pickle.loads(payload)
    content["state"] = TrainState(**content["state"])
    return content


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
    load_trainer_states(trainer, content["trainer"])
    precision.load_scaler_state(trainer, content.get("loss_scaler"))    # absent from checkpoints before train.amp
    np.random.set_state(content["numpy_rng"])
    return content["state"]
