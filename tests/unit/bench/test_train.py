"""tools/benchmark.py train: our trainer, the bare loop and GluonCV's zoo net alternate at the recipe's shape."""
import math

import mxnet as mx
import pytest

from research.bench.train import benchmark_train, format_rows
from research.config import recipe_from_dict


def recipe(net: dict, shape: list[int]):
    return recipe_from_dict({"name": "bench", "net": {"classes": 10, **net}, "data": {"kind": "synthetic", "data_shape": shape},
                             "train": {"epochs": 1, "lr": 0.01, "batch_size": 2}})


def test_gluoncvs_squeezenet_is_measured_beside_ours():
    rows = benchmark_train(recipe({"name": "squeezenet1.1"}, [3, 224, 224]), [[mx.cpu()]], steps=2, warmup=1, windows=2)
    row = rows[0]
    assert row["peer"] == "squeezenet1.1" and row["global_batch"] == 2
    for key in ("bare_img_per_s", "trainer_img_per_s", "peer_img_per_s", "ratio", "bare_vs_peer", "trainer_vs_peer"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    table = format_rows(rows)
    assert "GluonCV img/s" in table and f"{row['bare_vs_peer']:.2f}" in table and "squeezenet1.1 from its model zoo" in table


@pytest.mark.parametrize("net, shape, reason", [
    ({"name": "squeezenet1.0", "activation": "elu"}, [3, 32, 32],
     "GluonCV's model zoo has no ELU squeezenet1.0 (its SqueezeNets are ReLU)"),
    ({"name": "lenet"}, [1, 28, 28], "GluonCV's model zoo has no lenet"),
    ({"name": "squeezenet1.0"}, [3, 64, 64], "GluonCV's squeezenet1.0 does not take 3x64x64 inputs: kernel size (13) exceeds"),
])
def test_no_peer_says_why(net, shape, reason):
    rows = benchmark_train(recipe(net, shape), [[mx.cpu()]], steps=1, warmup=1, windows=1)
    assert rows[0]["peer"] is None and rows[0]["bare_vs_peer"] is None and rows[0]["trainer_img_per_s"] > 0
    assert f"no GluonCV column: {reason}" in format_rows(rows)
