"""Checkpoints: atomic, self-checking, restorable onto another number of devices."""
import errno
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from research.nets import get_net
from research.training import checkpoint
from research.training.checkpoint import CheckpointError, TrainState


def make(ctxs, seed=0):
    mx.random.seed(seed)
    net = get_net("lenet", classes=10)
    net.initialize(mx.init.Xavier(), ctx=ctxs)
    net.hybridize(static_alloc=True, static_shape=True)
    for ctx in ctxs:
        net(mx.nd.zeros((8 // len(ctxs), 1, 28, 28), ctx=ctx))
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.05, "momentum": 0.9},
                            kvstore="device")
    return net, trainer


def step(net, trainer, ctxs, seed):
    rng = np.random.RandomState(seed)
    x = mx.nd.array(rng.rand(8, 1, 28, 28))
    y = mx.nd.array(rng.randint(0, 10, 8))
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    xs, ys = gluon.utils.split_and_load(x, ctxs), gluon.utils.split_and_load(y, ctxs)
    with autograd.record():
        losses = [loss_fn(net(a), b) for a, b in zip(xs, ys)]
    autograd.backward(losses)
    trainer.step(8)


@pytest.mark.parametrize("before, after", [(1, 2), (2, 1)])
def test_resume_on_another_number_of_devices_continues_exactly(tmp_path, before, after):
    ctxs_a = [mx.cpu(i) for i in range(before)]
    ctxs_b = [mx.cpu(i) for i in range(after)]
    net, trainer = make(ctxs_a)
    for i in range(3):
        step(net, trainer, ctxs_a, i)
    checkpoint.save_checkpoint(tmp_path, TrainState(epoch=1, step=3), net, trainer)
    step(net, trainer, ctxs_a, 3)                          # the uninterrupted continuation
    expected = checkpoint.net_arrays(net)

    net2, trainer2 = make(ctxs_b, seed=99)                 # other initial weights: all must come from the file
    path, content = checkpoint.find_latest(tmp_path)
    state = checkpoint.restore(content, net2, trainer2)
    assert (state.epoch, state.step) == (1, 3)
    step(net2, trainer2, ctxs_b, 3)                        # momentum restored: same update as uninterrupted
    for name, value in checkpoint.net_arrays(net2).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_damaged_files_are_detected_and_skipped(tmp_path, caplog):
    net, trainer = make([mx.cpu()])
    first = checkpoint.save_checkpoint(tmp_path, TrainState(step=1), net, trainer)
    second = checkpoint.save_checkpoint(tmp_path, TrainState(step=2), net, trainer)
    blob = bytearray(second.read_bytes())
    blob[-10] ^= 0xFF
    second.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        checkpoint.load_checkpoint(second)
    second.write_bytes(bytes(blob[:len(blob) // 2]))
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load_checkpoint(second)
    path, content = checkpoint.find_latest(tmp_path)
    assert path == first and content["state"].step == 1
    assert f"skipping checkpoint: {second} is truncated" in caplog.text


def test_keeps_last_k_and_best(tmp_path):
    net, trainer = make([mx.cpu()])
    for i in range(1, 6):
        checkpoint.save_checkpoint(tmp_path, TrainState(step=i), net, trainer, keep_last=2, is_best=i == 2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-0000000004.ckpt",
                                                                       "step-0000000005.ckpt"]
    assert checkpoint.load_checkpoint(tmp_path / "best.ckpt")["state"].step == 2


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    net, trainer = make([mx.cpu()])
    good = checkpoint.save_checkpoint(tmp_path, TrainState(step=1), net, trainer)

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(CheckpointError, match=r"No space left on device.*Earlier checkpoints .* are intact"):
        checkpoint.save_checkpoint(tmp_path, TrainState(step=2), net, trainer)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]      # no temp file, no half file
    assert checkpoint.find_latest(tmp_path)[1]["state"].step == 1


def test_background_writer_reports_errors_and_its_future_says_when_the_file_is_on_disk(tmp_path):
    net, trainer = make([mx.cpu()])
    writer = checkpoint.CheckpointWriter(tmp_path / "ok", keep_last=3)
    assert writer.save(TrainState(step=7), net, trainer).result() == tmp_path / "ok" / "step-0000000007.ckpt"
    assert checkpoint.load_checkpoint(tmp_path / "ok" / "step-0000000007.ckpt")["state"].step == 7
    assert writer.failed is None
    (tmp_path / "blocked").write_text("a file where the folder should be")
    writer = checkpoint.CheckpointWriter(tmp_path / "blocked", keep_last=3)
    write = writer.save(TrainState(step=8), net, trainer)
    writer.wait()
    assert isinstance(write.exception(), CheckpointError) and writer.failed is write.exception()
    assert "checkpoint not saved: could not write" in str(writer.failed)
    writer.close()