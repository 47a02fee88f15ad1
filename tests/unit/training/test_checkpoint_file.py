"""The checkpoint file: arrays and JSON only; the earlier pickled files read without running what they hold."""
import random

import mxnet as mx
import numpy as np
import pytest
from helpers import LEGACY_FIXTURE, checkpoint_carrying_code

from research.training import checkpoint, checkpoint_file
from research.training.checkpoint import CheckpointError, CheckpointRefused
from research.training.legacy_checkpoint import ndarray_from_bytes


def test_arrays_and_document_round_trip_exactly():
    arrays = {"params/conv.weight": np.random.rand(4, 3, 3, 3).astype(np.float32),
              "optimizer/0": np.arange(5, dtype=np.float16), "numpy_rng/keys": np.arange(624, dtype=np.uint32)}
    document = {"state": {"epoch": 3, "history": [{"val/top1": np.float32(0.5)}]}, "optimizer": None}
    payload, legacy = checkpoint_file.open_payload(checkpoint_file.encode(arrays, document))
    got, doc = checkpoint_file.read_payload(payload)
    assert not legacy
    assert doc == {"state": {"epoch": 3, "history": [{"val/top1": 0.5}]}, "optimizer": None}
    for name, value in arrays.items():
        assert got[name].dtype == value.dtype and np.array_equal(got[name], value)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "uint8", "int32", "int8", "int64"])
@pytest.mark.parametrize("shape", [(2, 3), (1,), (2, 1, 3, 2), ()])
def test_mxnet_array_bytes_read_in_python_as_mxnet_writes_them(dtype, shape):
    value = np.random.RandomState(0).rand(*shape) * 100
    array = mx.nd.array(value, dtype=dtype) if shape else mx.nd.array([value], dtype=dtype).reshape(())
    read = ndarray_from_bytes(bytes(array.__getstate__()["handle"]))
    assert read.dtype == array.dtype and read.shape == array.shape and np.array_equal(read, array.asnumpy())


def test_a_checkpoint_of_the_earlier_format_reads_with_its_momentum():
    content = checkpoint.load_checkpoint(LEGACY_FIXTURE)
    assert (content["state"].epoch, content["state"].step) == (1, 26)
    layout, arrays = content["optimizer"]
    assert layout["num_update"] == 26 and len(layout["states"]) == len(content["params"])
    momentum = [arrays[name] for _, name in layout["states"]]
    assert all(m.dtype == np.float32 for m in momentum) and any(np.abs(m).sum() > 0 for m in momentum)
    assert sorted(m.shape for m in momentum) == sorted(p.shape for p in content["params"].values())


@pytest.mark.parametrize("layer", ["outer", "optimizer"])
def test_a_checkpoint_carrying_code_is_refused_and_nothing_runs(tmp_path, layer):
    marker = tmp_path / "ran"
    path = checkpoint_carrying_code(tmp_path / "checkpoints" / "step-0000000099.ckpt", marker, layer)
    with pytest.raises(CheckpointRefused, match="asks for posix.system") as refused:
        checkpoint.load_checkpoint(path)
    assert str(path) in str(refused.value) and "--fresh" in str(refused.value)
    with pytest.raises(CheckpointRefused):                 # refused, not skipped for an older one
        checkpoint.find_latest(path.parent)
    assert not marker.exists()


def test_damaged_bytes_give_a_checkpoint_error_never_a_crash(tmp_path):
    """Byte flips and cuts behind a recomputed header: every outcome is a CheckpointError or a clean read."""
    arrays = {"params/w": np.random.rand(64, 8).astype(np.float32), "numpy_rng/keys": np.zeros(624, np.uint32)}
    document = {"state": {"epoch": 1}, "optimizer": None, "numpy_rng": ["MT19937", 0, 0, 0.0], "loss_scaler": None}
    payload = checkpoint_file.encode(arrays, document)[checkpoint_file.HEAD:]
    rng, outcomes = random.Random(0), set()
    for _ in range(300):
        damaged = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(min(len(damaged), 400))] = rng.randrange(256)      # the header's bytes mostly
        damaged = bytes(damaged[:rng.choice([len(damaged), rng.randrange(len(damaged))])])
        blob = checkpoint_file.MAGIC + len(damaged).to_bytes(8, "little")
        blob += __import__("hashlib").sha256(damaged).digest() + damaged
        (tmp_path / "x.ckpt").write_bytes(blob)
        try:
            checkpoint.load_checkpoint(tmp_path / "x.ckpt")
            outcomes.add("read")
        except CheckpointError:
            outcomes.add("refused")
    assert "refused" in outcomes
