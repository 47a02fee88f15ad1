"""LeNet: layer shapes of the classic 28x28 variant and the registry lookup."""
import mxnet as mx
import pytest

from research.nets import NETS, get_net


def test_lenet_shapes_and_parameter_count():
    net = get_net("lenet", classes=10)
    net.initialize()
    x = mx.nd.zeros((2, 1, 28, 28))
    feats = net.features(x)
    assert feats.shape == (2, 500)
    assert net(x).shape == (2, 10)
    # conv1 20*(25+1), conv2 50*(20*25+1), fc 500*(800+1), out 10*(500+1)
    expected = 520 + 25050 + 400500 + 5010
    assert sum(p.data().size for p in net.collect_params().values()) == expected


def test_hybridized_matches_imperative():
    net = get_net("lenet", classes=7)
    net.initialize(mx.init.Xavier())
    x = mx.nd.random.uniform(shape=(4, 1, 28, 28))
    before = net(x).asnumpy()
    net.hybridize(static_alloc=True, static_shape=True)
    assert abs(net(x).asnumpy() - before).max() < 1e-5


def test_unknown_net_lists_valid_names():
    with pytest.raises(KeyError, match="lenet"):
        get_net("lenet6", classes=10)
    assert "lenet" in NETS
