"""The workers' half of training on several machines: the kvstore, rank 0's position and weights on
every worker, and the recipe's lr schedule on the servers. The launcher is research/dist/nodes.py.

Imports mxnet only inside functions: the servers import this module (for ScheduleLR) before mxnet.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
from typing import TYPE_CHECKING

from ..config import RecipeError, TrainConfig
from .schedules import lr_at

if TYPE_CHECKING:
    import numpy as np

    from .checkpoint import TrainState
    from .loop import Setup

log = logging.getLogger(__name__)
DIST_KVSTORES = ("dist_sync", "dist_device_sync", "dist_async")
POSITION_KEY = 999_999          # kvstore key for rank 0's (epoch, batch, step); the Trainer uses 0..len(params)-1


def is_distributed(kvstore: str) -> bool:
    """True for the parameter-server kvstores that tools/launch_dist.py starts."""
    return kvstore in DIST_KVSTORES


class ScheduleLR:
    """The recipe's lr_at() as an optimizer lr_scheduler, for the optimizer copy the kvstore servers run.

    With update_on_kvstore (the default on dist kvstores) the servers update the weights with a pickled
    copy of the optimizer: trainer.set_learning_rate() on a worker never reaches them. The servers count
    updates per key: one per global step under dist_sync, one per worker push under dist_async.
    """

    def __init__(self, base_lr: float, train: TrainConfig, steps_per_epoch: int, updates_per_step: int = 1):
        self.base_lr, self.train = base_lr, train
        self.steps_per_epoch, self.updates_per_step = steps_per_epoch, updates_per_step

    def __call__(self, num_update: int) -> float:
        step = (num_update - 1) // self.updates_per_step     # MXNet counts an update before asking its lr
        return lr_at(step / self.steps_per_epoch, self.base_lr, self.train)


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


def prepare_workers(kv, setup: Setup, state: TrainState) -> None:
    """Before the first batch: rank 0's position and weights on every worker, the lr schedule on the servers.

    A worker whose run directory lacks rank 0's checkpoint (another machine) takes its epoch, batch and
    step, so that all run the same batches. The Trainer would send rank 0's weights only inside the first
    trainer.step, after each worker computed its first gradients with its own weights: done here instead.

    Raises:
        RecipeError: train.frozen_epochs (lr_mult changes on a worker never reach the servers' optimizer).
    """
    import mxnet as mx

    train, trainer = setup.recipe.train, setup.trainer
    if train.frozen_epochs:
        raise RecipeError("train.frozen_epochs does not work with a distributed kvstore: the servers' copy of "
                          "the optimizer never sees the lr_mult changes. Fine-tune with train.kvstore: device.")
    position = mx.nd.array([state.epoch, state.batch_in_epoch, state.step])    # float32: exact below 2**24 steps
    kv.broadcast(POSITION_KEY, position, out=position)
    epoch, batch, step = (int(value) for value in position.asnumpy())
    if (epoch, batch, step) != (state.epoch, state.batch_in_epoch, state.step):
        log.warning("rank %d: starting at rank 0's epoch %d, step %d; this worker's run directory says epoch %d, "
                    "step %d.%s", kv.rank, epoch, step, state.epoch, state.step,
                    " Unless that is --fresh, rank 0's machine lacks this run's newest checkpoint: stop the job and "
                    "put the run directory on a shared filesystem (docs/distributed.md)" if step < state.step else "")
        state.epoch, state.batch_in_epoch, state.step = epoch, batch, step
        state.epoch_totals = None    # its own checkpoint's sums belong to another position (this worker's
                                     # train figures are not logged: rank 0's are)
    local_batch = setup.local_batch
    updates_per_step = setup.num_workers if "async" in kv.type else 1
    optimizer = trainer.optimizer
    optimizer.lr_scheduler = ScheduleLR(setup.base_lr, train, setup.train_iter.num_samples // local_batch,
                                        updates_per_step)
    optimizer.begin_num_update = optimizer.num_update = state.step * updates_per_step
    optimizer.rescale_grad = trainer._scale / setup.global_batch   # as trainer.step(global_batch) sets it
    setup.lr_on_servers = True   # the loop leaves the lr to ScheduleLR: trainer.set_learning_rate would not reach them
    trainer._init_kvstore()      # pickles the optimizer, schedule included, to the servers
    trainer._init_params()       # kvstore.broadcast: rank 0's weights to every worker
    log.info("%s: %d workers x %d device(s), batch %d per worker, global batch %d, lr %.4g (recipe %.4g for "
             "batch %d); rank %d starts at epoch %d, step %d, weights sha256 %s", kv.type, setup.num_workers,
             len(setup.ctxs), local_batch, setup.global_batch, setup.base_lr, train.lr,
             train.base_batch_size or train.batch_size, kv.rank, epoch, step, weights_digest(setup.net))


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
