"""The optimizer's state (momentum, Adam's moments, update counts) as named arrays and JSON, read from and
written into a gluon.Trainer's updaters directly: MXNet's own Trainer.save_states/load_states pickle it,
and a pickle runs code when it is loaded.

One updater's state stands for all devices: with synchronous updates every device applies the same
aggregated gradient, so the per-device states are identical (and save_states keeps one: apache/mxnet#15918).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mxnet import gluon
    from mxnet.optimizer import Updater

PREFIX = "optimizer/"        # array names: optimizer/<index>/<n>, the n-th array of parameter <index>'s state


class OptimizerStateError(ValueError):
    """Saved optimizer state that does not fit this trainer's parameters."""


def _updaters(trainer: gluon.Trainer) -> list[Updater] | None:
    """The updaters holding the state (one per device, or the local kvstore's); None where the distributed
    kvstore's servers hold it, out of a worker's reach."""
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()
    if trainer._update_on_kvstore:
        if "dist" in trainer._kvstore.type:
            return None
        return [trainer._kvstore._updater]
    return trainer._updaters


def optimizer_state(trainer: gluon.Trainer) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """(layout, arrays): the state copied off the devices (a sync), or None where the servers hold it.

    layout: {"states": [[index, shape]...], "num_update": N, "update_counts": [[device, [[index, count]...]]...]},
    where a shape is null (no state), an array's name, or a list of shapes (a tuple state, e.g. Adam's
    mean and variance, or multi-precision's float32 weight and momentum)."""
    updaters = _updaters(trainer)
    if updaters is None:
        return None
    updater, arrays = updaters[0], {}

    def flatten(state, name: str):
        if state is None:
            return None
        if isinstance(state, (tuple, list)):
            return [flatten(part, f"{name}/{n}") for n, part in enumerate(state)]
        arrays[name] = state.asnumpy()
        return name

    optimizer = updater.optimizer
    layout = {"states": [[index, flatten(state, f"{PREFIX}{index}")] for index, state in updater.states.items()],
              "num_update": int(optimizer.num_update),
              "update_counts": [[device, [[index, int(n)] for index, n in counts.items()]]
                                for device, counts in optimizer._all_index_update_counts.items()]}
    return layout, arrays


def load_optimizer_state(trainer: gluon.Trainer, layout: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Give every updater of `trainer` the saved state, as new arrays that it moves to each weight's device at
    its first update (as Updater.set_states leaves them). The optimizer itself stays the one the recipe built:
    its lr, wd and momentum are the recipe's; only its update counts (Adam's bias correction) are restored.

    Raises:
        OptimizerStateError: the state names parameters or shapes this trainer does not have.
    """
    import mxnet as mx

    updaters = _updaters(trainer)
    if updaters is None:
        return
    params = trainer._params

    def build(shape, index):
        if shape is None:
            return None
        if isinstance(shape, list):
            return tuple(build(part, index) for part in shape)
        return mx.nd.array(arrays[shape], dtype=arrays[shape].dtype)

    for updater in updaters:
        states = {}
        for index, shape in layout["states"]:
            if not isinstance(index, int) or not 0 <= index < len(params):
                raise OptimizerStateError(f"optimizer state for parameter {index!r}, but the net has {len(params)}")
            states[index] = build(shape, index)
            _check_shapes(states[index], params[index])
        updater.states, updater.states_synced = states, dict.fromkeys(states, False)
    optimizer = updaters[0].optimizer
    optimizer.num_update = int(layout["num_update"])
    optimizer._all_index_update_counts = {int(device): {index: int(n) for index, n in counts}
                                          for device, counts in layout["update_counts"]} or {0: {}}
    optimizer._set_current_context(next(iter(optimizer._all_index_update_counts)))


def _check_shapes(state, param) -> None:
    parts = state if isinstance(state, tuple) else (state,)
    for part in parts:
        if part is not None and not isinstance(part, tuple) and tuple(part.shape) != tuple(param.shape):
            raise OptimizerStateError(f"optimizer state of shape {tuple(part.shape)} for parameter {param.name} of "
                                      f"shape {tuple(param.shape)}")
