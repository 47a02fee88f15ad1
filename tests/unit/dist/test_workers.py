"""The workers' half on several machines: the recipe's lr schedule reaches the kvstore servers."""
from __future__ import annotations

import json
import pickle
import socket
import sys
import textwrap
from functools import partial
from pathlib import Path

import mxnet as mx
import pytest

from research.config import TrainConfig
from research.dist.nodes import launch
from research.dist.workers import ScheduleLR
from research.training.schedules import lr_at

PY = sys.executable
REPO = Path(__file__).resolve().parents[3]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_schedule_lr_follows_lr_at_through_pickling_and_mxnet_counting():
    train = TrainConfig(epochs=4, lr=0.1, batch_size=32, lr_schedule="cosine", warmup_epochs=0.5)
    lr_at_epoch = partial(lr_at, base_lr=0.2, train=train)
    schedule = pickle.loads(pickle.dumps(ScheduleLR(lr_at_epoch, steps_per_epoch=10), 0))   # as set_optimizer sends it
    # MXNet's optimizer counts the update (num_update = step + 1) before asking its lr
    optimizer = mx.optimizer.SGD(learning_rate=0.2, momentum=0.0, wd=0.0)
    optimizer.lr_scheduler = schedule
    resume_at = 17                                      # what prepare_workers sets on resume
    optimizer.begin_num_update = optimizer.num_update = resume_at
    weight, grad = mx.nd.ones((1,)), mx.nd.ones((1,))
    for step in range(resume_at, resume_at + 5):
        before = weight.asscalar()
        optimizer.update(0, weight, grad, None)
        assert before - weight.asscalar() == pytest.approx(lr_at(step / 10, 0.2, train), rel=1e-5)
    # dist_async: every worker's push is one update
    two = ScheduleLR(lr_at_epoch, steps_per_epoch=10, updates_per_step=2)
    assert [two(n) for n in (1, 2, 3)] == [schedule(1), schedule(1), schedule(2)]


WORKER = """\
    import json, sys
    from functools import partial
    sys.path.insert(0, {repo!r})
    import research  # before mxnet: a CUDA build's libraries come from the pip wheels it loads
    import mxnet as mx
    from mxnet import autograd, gluon
    from research.config import TrainConfig
    from research.dist.workers import ScheduleLR, create_kvstore
    from research.training.schedules import lr_at

    kv = create_kvstore("dist_sync")
    net = gluon.nn.Dense(1, in_units=1, use_bias=False)
    net.initialize(mx.init.One())
    trainer = gluon.Trainer(net.collect_params(), "sgd", {{"learning_rate": 1.0}}, kvstore=kv)
    if {fixed}:     # the fix: lr 1.0 for step 0, then 0 (a step drop with factor 0 after one step)
        train = TrainConfig(epochs=2, lr=1.0, batch_size=1, lr_steps=[1], lr_factor=0.0)
        trainer.optimizer.lr_scheduler = ScheduleLR(partial(lr_at, base_lr=1.0, train=train), steps_per_epoch=1)
    weights = []
    for step in range(2):
        if not {fixed} and step == 1:
            trainer.set_learning_rate(0.0)    # what the loop did every step
        with autograd.record():
            loss = net(mx.nd.ones((1, 1))).sum()
        loss.backward()
        trainer.step(1)
        weights.append(float(net.weight.data().asscalar()))
    print("RESULT", json.dumps(weights), flush=True)
    """


@pytest.mark.parametrize("fixed", [False, True])
def test_worker_lr_changes_reach_the_servers_only_through_the_schedule(tmp_path, capfd, fixed):
    """The trap: with update_on_kvstore the servers run a pickled optimizer copy."""
    script = write(tmp_path / "worker.py", WORKER.format(repo=str(REPO), fixed=fixed))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert launch(["localhost"], [PY, str(script)], num_servers=1, port=port, timeout=120) == 0
    line = next(line for line in capfd.readouterr().out.splitlines() if "RESULT" in line)
    first, second = json.loads(line.split("RESULT", 1)[1])
    assert first == pytest.approx(0.0)                   # w = 1 - lr 1.0 * grad 1
    if fixed:
        assert second == pytest.approx(first)            # lr 0 reached the servers: no change
    else:
        assert second == pytest.approx(-1.0)             # set_learning_rate(0) did not: the servers used lr 1.0
