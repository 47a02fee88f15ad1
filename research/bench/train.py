"""Training images/s on synthetic data at a recipe's shape and batch, per device count: the project's
trainer, a bare hybridized loop on the same net (model speed without data), and GluonCV's model-zoo
net of the same architecture in the same bare loop (the peer), in alternating windows.
"""
from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import mxnet as mx
from mxnet import autograd, gluon

from ..config import NetConfig, Recipe, SyntheticData
from ..errors import UserError
from ..model.export import input_shape
from ..nets import gluoncv_zoo
from ..preflight import check_recipe
from ..training import precision
from ..training.checkpoint import TrainState
from ..training.lifecycle import Lifecycle
from ..training.loop import Setup, fit
from ..training.signals import StopRequest
from ..training.job import build_setup, global_batch_size, optimizer_params

# recipe net.name -> the GluonCV model-zoo net of the same architecture (the zoo's SqueezeNets are ReLU)
ZOO_PEERS = {"squeezenet1.0": "squeezenet1.0", "squeezenet1.1": "squeezenet1.1", "resnet50_v1": "resnet50_v1"}


def benchmark_train(recipe: Recipe, ctx_lists: list[list[mx.Context]], steps: int, warmup: int,
                    windows: int = 1) -> list[dict]:
    """Training images/s of the bare loop and of the project's trainer, per device set.

    Returns one row per entry of ctx_lists: {"devices", "global_batch", "bare_img_per_s",
    "trainer_img_per_s", "ratio", "peer", "peer_img_per_s", "bare_vs_peer", "trainer_vs_peer", "no_peer"};
    ratio = trainer / bare speed, the goal is >= 0.95; bare_vs_peer = our net / GluonCV's in the same bare
    loop (None, with the reason in no_peer, where the zoo has no such net). The `steps` after `warmup` are
    cut into `windows`; see `measure` for how they alternate.
    """
    if warmup < 1 or windows < 1 or steps < windows:
        raise UserError(f"benchmark: warmup ({warmup}) and windows ({windows}) must be >= 1 and "
                        f"steps ({steps}) at least one per window")
    synthetic = SyntheticData(data_shape=list(input_shape(recipe)))
    for ctxs in ctx_lists:          # the recipe's checks (float16 on a CPU...), not its data files
        check_recipe(dataclasses.replace(recipe, data=synthetic), ctxs)
    return [measure(recipe, ctxs, steps, warmup, windows) for ctxs in ctx_lists]


class BareLoop:
    """forward/backward/trainer.step and nothing else (no data loading, lr updates, metrics,
    logging) on device-resident random data: the ceiling any trainer can reach. `step(batch)`
    does the same on a real batch, for `plan`'s data and model together."""

    def __init__(self, setup: Setup):
        shape = (setup.global_batch, *input_shape(setup.recipe))
        dtype = setup.recipe.train.dtype
        x = mx.nd.random.uniform(-1, 1, shape).astype(dtype)
        y = mx.nd.random.randint(0, setup.recipe.net.classes, (setup.global_batch,)).astype("float32")
        self.xs = gluon.utils.split_and_load(x, setup.ctxs, even_split=False)
        self.ys = gluon.utils.split_and_load(y, setup.ctxs, even_split=False)
        self.setup = setup
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def step(self, batch: mx.io.DataBatch | None = None) -> list[mx.nd.NDArray]:
        """One update on the random data, or on `batch` (split over the devices as the loop does)."""
        setup, xs, ys = self.setup, self.xs, self.ys
        if batch is not None:
            xs = [x.astype(setup.recipe.train.dtype, copy=False)
                  for x in gluon.utils.split_and_load(batch.data[0], setup.ctxs, even_split=False)]
            ys = gluon.utils.split_and_load(batch.label[0], setup.ctxs, even_split=False)
        with autograd.record():
            losses = [self.loss_fn(setup.net(x), y) for x, y in zip(xs, ys)]
            scaled = precision.scale(losses, setup.trainer)      # train.amp: as the loop scales them
        autograd.backward(scaled)
        setup.trainer.step(setup.global_batch)
        return losses


def zoo_peer(net: NetConfig) -> tuple[str | None, str]:
    """(the GluonCV model-zoo name of the recipe's net, "") or (None, why the zoo has none)."""
    if net.name not in ZOO_PEERS:
        return None, f"GluonCV's model zoo has no {net.name}"
    if net.name.startswith("squeezenet") and net.activation != "relu":
        return None, f"GluonCV's model zoo has no {net.activation.upper()} {net.name} (its SqueezeNets are ReLU)"
    return ZOO_PEERS[net.name], ""


def build_peer(name: str, setup: Setup) -> tuple[Setup | None, str]:
    """GluonCV's `name` as our Setup's twin: same classes, devices, initialiser, dtype, hybridization,
    optimizer, kvstore and loss scaler (under train.amp the process-wide amp.init casts it as it casts
    ours). (None, why) when it cannot take the recipe's input shape."""
    recipe, train = setup.recipe, setup.recipe.train
    net = gluoncv_zoo().get_model(name, classes=recipe.net.classes)
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2), ctx=setup.ctxs)
    if train.dtype == "float16":
        net.cast("float16")
    if train.hybridize:
        net.hybridize(static_alloc=True, static_shape=True)
    per_device = (setup.global_batch // len(setup.ctxs), *input_shape(recipe))
    try:
        for ctx in setup.ctxs:
            net(mx.nd.zeros(per_device, ctx=ctx, dtype=train.dtype)).wait_to_read()
    except (mx.base.MXNetError, ValueError) as err:       # ValueError: "Deferred initialization failed ..."
        detail = str(err).strip().splitlines()[0].rsplit(": ", 1)[-1]     # e.g. "kernel size (13) exceeds input (3 ...)"
        return None, f"GluonCV's {name} does not take {'x'.join(map(str, per_device[1:]))} inputs: {detail}"
    trainer = gluon.Trainer(net.collect_params(), train.optimizer, optimizer_params(train, setup.base_lr),
                            kvstore=train.kvstore, update_on_kvstore=False if train.amp != "off" else None)
    precision.attach_scaler(trainer, train.amp)
    return dataclasses.replace(setup, net=net, trainer=trainer), ""


class RepeatIter(mx.io.DataIter):
    """One random batch served `num_batches` times: the trainer's work without any data cost."""

    def __init__(self, batch_size: int, shape: list[int], classes: int, num_batches: int):
        super().__init__(batch_size)
        x = mx.nd.random.uniform(-1, 1, (batch_size, *shape))
        y = mx.nd.random.randint(0, classes, (batch_size,)).astype("float32")
        self._batch = mx.io.DataBatch(data=[x], label=[y], pad=0)
        self.num_batches, self.num_samples = num_batches, num_batches * batch_size
        self._served = 0

    @property
    def provide_data(self):
        return [mx.io.DataDesc("data", self._batch.data[0].shape)]

    @property
    def provide_label(self):
        return [mx.io.DataDesc("softmax_label", self._batch.label[0].shape)]

    def reset(self) -> None:
        self._served = 0

    def next(self) -> mx.io.DataBatch:
        if self._served == self.num_batches:
            raise StopIteration
        self._served += 1
        return self._batch


def _synced_time() -> float:
    mx.nd.waitall()                  # MXNet runs asynchronously: the clock means nothing without a sync
    return time.perf_counter()


def measure(recipe: Recipe, ctxs: list[mx.Context], steps: int, warmup: int, windows: int) -> dict:
    """Windows of research.training.loop.fit as tools/train.py builds it, alternating with windows of
    the bare loop on the same net and trainer (no second copy in device memory) and of GluonCV's net of
    the same architecture in the same bare loop (build_peer), where its model zoo has one.

    The recipe's data is swapped for RepeatIter batches (build_setup gets a small synthetic section),
    and `fit(..., steps=N)` trains N steps and returns, inside the first epoch: the seam through which
    the trainer is measured, with its progress reports, stop check and lr updates, and no evaluation
    or checkpoint in the measured steps. The loops alternate under the same load (on a shared machine
    one loop alone swung 12-410 img/s between runs here), each window starting with the next one in
    turn. Each side's speed is the median over windows, a ratio the median of the per-window ratios.
    The syncs closing each window stop MXNet from overlapping Python work with the next window's
    compute, which, if anything, counts the trainer's extra Python work in full.
    """
    batch = global_batch_size(recipe.train, len(ctxs))
    synthetic = SyntheticData(data_shape=list(input_shape(recipe)), num_train=batch, num_val=batch)
    recipe = dataclasses.replace(recipe, data=synthetic, train=dataclasses.replace(recipe.train, epochs=1),
                                 tracking=dataclasses.replace(recipe.tracking, enabled=False))
    per_window = steps // windows
    peer_name, no_peer = zoo_peer(recipe.net)
    with tempfile.TemporaryDirectory(prefix="benchmark-") as run_dir:
        setup = build_setup(recipe, ctxs, Path(run_dir), recipe.train.kvstore)
        setup = dataclasses.replace(setup, train_iter=RepeatIter(batch, input_shape(recipe), recipe.net.classes,
                                                                 warmup + windows * per_window + 1))
        lifecycle = Lifecycle(Path(run_dir), recipe, ["benchmark"])    # not entered: no lock, no MLflow run
        state, stop = TrainState(recipe=recipe.to_dict()), StopRequest()   # a stop never requested
        sides = {"trainer": lambda n: fit(setup, state, lifecycle, stop, steps=n), "bare": BareLoop(setup).run}
        if peer_name:
            peer, no_peer = build_peer(peer_name, setup)
            if peer is not None:
                sides["peer"] = BareLoop(peer).run
        for run_steps in sides.values():
            run_steps(warmup)
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        for window in range(windows):
            names = list(sides)[window % len(sides):] + list(sides)[:window % len(sides)]
            for name in names:
                start = _synced_time()
                sides[name](per_window)
                seconds[name].append(_synced_time() - start)
    images = per_window * batch
    row = {"devices": ",".join(str(c) for c in ctxs), "global_batch": batch,
           "bare_img_per_s": images / statistics.median(seconds["bare"]),
           "trainer_img_per_s": images / statistics.median(seconds["trainer"]),
           "ratio": _median_ratio(seconds["bare"], seconds["trainer"]),
           "peer": peer_name if "peer" in seconds else None, "no_peer": no_peer,
           "peer_img_per_s": None, "bare_vs_peer": None, "trainer_vs_peer": None}
    if "peer" in seconds:
        row.update(peer_img_per_s=images / statistics.median(seconds["peer"]),
                   bare_vs_peer=_median_ratio(seconds["peer"], seconds["bare"]),
                   trainer_vs_peer=_median_ratio(seconds["peer"], seconds["trainer"]))
    return row


def _median_ratio(slower: list[float], faster: list[float]) -> float:
    """Median over windows of one side's time over the other's (> 1: `faster` was faster)."""
    return statistics.median(a / b for a, b in zip(slower, faster))


def device_sets(ctxs: list[mx.Context]) -> list[list[mx.Context]]:
    """Each device count up to the given devices: [gpu0], [gpu0, gpu1], ..."""
    return [ctxs[:count] for count in range(1, len(ctxs) + 1)]


def format_rows(rows: list[dict]) -> str:
    """The table tools/benchmark.py prints, and a line naming the peer (or why there is none)."""
    from tabulate import tabulate

    def figure(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"

    table = [[row["devices"], row["global_batch"], figure(row["bare_img_per_s"], 1),
              figure(row["trainer_img_per_s"], 1), figure(row["peer_img_per_s"], 1), figure(row["ratio"], 2),
              figure(row["bare_vs_peer"], 2), figure(row["trainer_vs_peer"], 2)] for row in rows]
    text = tabulate(table, headers=["devices", "batch", "bare img/s", "trainer img/s", "GluonCV img/s",
                                    "trainer/bare", "bare/GluonCV", "trainer/GluonCV"], disable_numparse=True)
    peers = {row["peer"] for row in rows} - {None}
    notes = {row["no_peer"] for row in rows if row["peer"] is None}
    if peers:
        text += (f"\nGluonCV: {', '.join(sorted(peers))} from its model zoo in the bare loop, at the same shape, batch, "
                 f"hybridization and optimizer, alternating with ours; bare/GluonCV compares the nets, > 1: ours faster.")
    for note in sorted(notes):
        text += f"\nno GluonCV column: {note}."
    return text
