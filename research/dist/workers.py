"""The workers' half of training on several machines: the kvstore and this process's place among the workers,
rank 0's position and weights on every worker, the recipe's lr schedule on the servers, the weights' digest.
With one worker (a kvstore that is not distributed) each of these does nothing. The launcher is
research/dist/nodes.py.

Imports mxnet only inside functions, and nothing of research/training/ (which imports this): the servers import
this module (for ScheduleLR) before mxnet.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
from typing import TYPE_CHECKING, Callable

from ..config import RecipeError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
DIST_KVSTORES = ("dist_sync", "dist_device_sync", "dist_async")
POSITION_KEY = 999_999          # kvstore key for rank 0's (epoch, batch, step); the Trainer uses 0..len(params)-1
Position = tuple[int, int, int]  # epochs done, batches done in the epoch under way, global step


def is_distributed(kvstore: str) -> bool:
    """True for the parameter-server kvstores that tools/launch_dist.py starts."""
    return kvstore in DIST_KVSTORES


def placement(kv) -> tuple[int, int]:
    """(rank, number of workers) of this process: (0, 1) unless `kv` is a distributed kvstore."""
    return (0, 1) if isinstance(kv, str) else (kv.rank, kv.num_workers)


class ScheduleLR:
    """The recipe's lr as an optimizer lr_scheduler, for the optimizer copy the kvstore servers run.

    With update_on_kvstore (the default on dist kvstores) the servers update the weights with a pickled
    copy of the optimizer: trainer.set_learning_rate() on a worker never reaches them. The servers count
    updates per key: one per global step under dist_sync, one per worker push under dist_async.
    `lr_at_epoch` is the lr at a fractional epoch (training.schedules.lr_at with the run's base lr and recipe,
    as a functools.partial: it is pickled with the optimizer).
    """

    def __init__(self, lr_at_epoch: Callable[[float], float], steps_per_epoch: int, updates_per_step: int = 1):
        self.lr_at_epoch, self.steps_per_epoch, self.updates_per_step = lr_at_epoch, steps_per_epoch, updates_per_step

    def __call__(self, num_update: int) -> float:
        step = (num_update - 1) // self.updates_per_step     # MXNet counts an update before asking its lr
        return self.lr_at_epoch(step / self.steps_per_epoch)


def create_kvstore(name: str):
    """mx.kv.create(name) for dist_* kvstores (announcing the rank), else `name` for the Trainer.

    Raises:
        RecipeError: started by tools/launch_dist.py with a kvstore that is not distributed, which
            would train independent copies into the same run directory.
    """
    if not is_distributed(name):
        if os.environ.get("DMLC_ROLE") == "worker":
            raise RecipeError(f"train.kvstore is {name}, but tools/launch_dist.py started this process as a "
                              f"distributed worker: use --set train.kvstore=dist_sync (or dist_device_sync)")
        return name
    import ctypes

    import mxnet as mx

    kv = mx.kv.create(name)
    # No barrier at exit: with it, a worker that stops early (signal, error, NaN) waits forever for the
    # others. Without it each worker exits by itself and the launcher ends the servers afterwards.
    mx.base.check_call(mx.base._LIB.MXKVStoreSetBarrierBeforeExit(kv.handle, ctypes.c_int(0)))
    print(f"distributed: worker rank {kv.rank} of {kv.num_workers} ({name}, pid {os.getpid()} on "
          f"{socket.gethostname()})", flush=True)
    return kv


def prepare_workers(kv, trainer, net, position: Position, *, lr_at_epoch: Callable[[float], float],
                    steps_per_epoch: int, global_batch: int, frozen_epochs: int, layout: str) -> Position:
    """Before the first batch, with several workers: rank 0's position (returned) and weights on every worker, and
    the lr schedule on the servers. With one worker, nothing: `position` back.

    A worker whose run directory lacks rank 0's checkpoint (another machine) takes its epoch, batch and
    step, so that all run the same batches. The Trainer would send rank 0's weights only inside the first
    trainer.step, after each worker computed its first gradients with its own weights: done here instead.
    `layout` ("1 device(s), batch 16 per worker, ...") opens the log line that says where each worker starts.

    Raises:
        RecipeError: train.frozen_epochs (lr_mult changes on a worker never reach the servers' optimizer).
    """
    rank, num_workers = placement(kv)
    if num_workers == 1:
        return position
    import mxnet as mx

    if frozen_epochs:
        raise RecipeError("train.frozen_epochs does not work with a distributed kvstore: the servers' copy of "
                          "the optimizer never sees the lr_mult changes. Fine-tune with train.kvstore: device.")
    agreed = mx.nd.array(position)                       # float32: exact below 2**24 steps
    kv.broadcast(POSITION_KEY, agreed, out=agreed)
    epoch, batch, step = (int(value) for value in agreed.asnumpy())
    if (epoch, batch, step) != position:
        log.warning("rank %d: starting at rank 0's epoch %d, step %d; this worker's run directory says epoch %d, "
                    "step %d.%s", rank, epoch, step, position[0], position[2],
                    " Unless that is --fresh, rank 0's machine lacks this run's newest checkpoint: stop the job and "
                    "put the run directory on a shared filesystem (docs/distributed.md)" if step < position[2] else "")
    updates_per_step = num_workers if "async" in kv.type else 1
    optimizer = trainer.optimizer
    optimizer.lr_scheduler = ScheduleLR(lr_at_epoch, steps_per_epoch, updates_per_step)
    optimizer.begin_num_update = optimizer.num_update = step * updates_per_step
    optimizer.rescale_grad = trainer._scale / global_batch   # as trainer.step(global_batch) sets it
    trainer._init_kvstore()      # pickles the optimizer, schedule included, to the servers
    trainer._init_params()       # kvstore.broadcast: rank 0's weights to every worker
    log.info("%s: %d workers x %s; rank %d starts at epoch %d, step %d, weights sha256 %s", kv.type, num_workers,
             layout, rank, epoch, step, weights_digest(net))
    return epoch, batch, step


def log_final_digest(kv, net) -> None:
    """Several workers: the final weights' digest, equal on every worker when the kvstore kept them in sync."""
    if placement(kv)[1] > 1:
        log.info("final weights sha256 %s", weights_digest(net))


def digest_arrays(arrays: dict[str, np.ndarray]) -> str:
    """Short sha256 over parameters by name: equal on workers whose weights are bit-identical."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(arrays[name].astype("float32").tobytes())
    return digest.hexdigest()[:16]


def weights_digest(net) -> str:
    """digest_arrays of the net's parameters (first device), as checkpoint.net_arrays names them."""
    return digest_arrays({name: param.data().asnumpy() for name, param in net._collect_params_with_prefix().items()})
