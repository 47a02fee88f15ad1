"""SqueezeNet: the published parameter counts, hybridized == imperative, small inputs, 2 contexts == 1."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from research.nets import NETS, get_net


def count_parameters(net) -> int:
    return sum(int(np.prod(p.shape)) for p in net.collect_params().values())


def initialized(name: str, classes: int, size: int = 64):
    net = get_net(name, classes=classes)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, size, size)))          # deferred init: shapes become known here
    return net


@pytest.mark.parametrize("name, expected", [("squeezenet1.0", 1_248_424), ("squeezenet1.1", 1_235_496)])
def test_parameter_count_matches_the_published_figure(name, expected):
    assert name in NETS
    assert count_parameters(initialized(name, classes=1000)) == expected


@pytest.mark.parametrize("name", ["squeezenet1.0", "squeezenet1.1"])
def test_hybridized_output_equals_imperative(name):
    net = initialized(name, classes=10)
    x = mx.nd.random.uniform(-1, 1, (2, 3, 64, 64))
    imperative = net(x).asnumpy()                 # predict mode: dropout is the identity
    net.hybridize(static_alloc=True, static_shape=True)
    hybridized = net(x).asnumpy()
    assert imperative.shape == (2, 10)
    assert np.abs(imperative).max() > 0          # a dead (all-zero) output would match trivially
    np.testing.assert_allclose(hybridized, imperative, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size, side", [(227, 13), (224, 13), (64, 3)])
def test_features_shape_and_classifier_work_at_reference_and_small_sizes(size, side):
    net = initialized("squeezenet1.0", classes=7, size=size)
    x = mx.nd.zeros((1, 3, size, size))
    assert net.features(x).shape == (1, 512, side, side)
    assert net(x).shape == (1, 7)


def test_classifier_is_replaceable_output():
    net = initialized("squeezenet1.1", classes=1000)
    conv10 = [b for b in net.output._children.values() if isinstance(b, mx.gluon.nn.Conv2D)]
    assert len(conv10) == 1 and conv10[0].weight.shape == (1000, 512, 1, 1)
    # conv10 starts from N(0, 0.01) as in the Caffe release, not from the global Xavier init
    assert conv10[0].weight.data().asnumpy().std() == pytest.approx(0.01, rel=0.1)


def feature_gradients(ctxs, x) -> dict:
    mx.random.seed(0)
    net = get_net("squeezenet1.1", classes=5)
    net.initialize(mx.init.Xavier(), ctx=ctxs)
    net(x[:1].as_in_context(ctxs[0]))         # deferred init, from the seed: the same weights every call
    net.hybridize(static_alloc=True, static_shape=True)
    # net.features holds every layer but the classifier, whose dropout draws its masks per device;
    # train mode all the same: under record(train_mode=False) MXNet 1.9.1's oneDNN max-pool
    # backward returns wrong gradients (measured: 78% off the non-oneDNN result)
    with autograd.record():
        losses = [(net.features(part) ** 2).mean() * len(part) for part in gluon.utils.split_and_load(x, ctxs)]
    autograd.backward(losses)
    return {name: sum(g.asnumpy() for g in p.list_grad())
            for name, p in net.features._collect_params_with_prefix().items()}


def test_two_cpu_contexts_give_the_gradients_of_one():
    """No layer mixes the samples of a batch: split over 2 devices, the summed gradients are those of one."""
    x = mx.nd.random.uniform(-1, 1, (8, 3, 48, 48))
    one = feature_gradients([mx.cpu(0)], x)
    two = feature_gradients([mx.cpu(0), mx.cpu(1)], x)
    assert len(one) == 2 * (1 + 3 * 8)                     # conv1 and 8 fire modules, weight and bias each
    for name in one:
        assert np.linalg.norm(one[name]) > 0, name
        assert np.linalg.norm(two[name] - one[name]) <= 1e-4 * np.linalg.norm(one[name]), name


@pytest.mark.parametrize("name", ["squeezenet1.0", "squeezenet1.1"])
def test_elu_reaches_the_head_before_the_pool(name):
    """With ELU after conv10 a negative value can come out of the head; a ReLU head gives 0 at least."""
    outputs = {}
    for activation in ("relu", "elu"):
        net = get_net(name, classes=10, activation=activation, init="xavier")
        net.initialize()
        x = mx.nd.random.uniform(-1, 1, (2, 3, 64, 64))
        net(x)
        net.output[1].bias.set_data(mx.nd.full((10,), -3.0))   # conv10 pushed below zero
        outputs[activation] = net(x).asnumpy()
        assert count_parameters(net) == count_parameters(initialized(name, classes=10))
    assert outputs["relu"].min() >= 0
    assert outputs["elu"].max() < -0.5                         # ELU(z) for z near -3 is about -0.95


def test_xavier_init_is_mxnet_xavier_defaults_on_every_weight_conv10_included():
    net = get_net("squeezenet1.0", classes=1000, activation="elu", init="xavier")
    net.initialize(mx.init.Normal(100))                        # the global init: overridden on every weight
    net(mx.nd.zeros((1, 3, 64, 64)))
    for name, param in net._collect_params_with_prefix().items():
        if name.endswith("weight"):
            out_ch, in_ch, kh, kw = param.shape
            bound = np.sqrt(3 / ((in_ch * kh * kw + out_ch * kh * kw) / 2))   # uniform, avg, magnitude 3
            values = param.data().asnumpy()
            assert np.abs(values).max() <= bound and values.std() == pytest.approx(bound / np.sqrt(3), rel=0.1), name
