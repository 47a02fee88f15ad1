"""Backbone weights for fine-tuning: everything but the head, from a .params file or the model zoo,
with errors that say what to do."""
import mxnet as mx
import numpy as np
import pytest

from research.nets import get_net
from research.nets.pretrained import PretrainedError, load_pretrained


@pytest.fixture
def lenet_file(tmp_path):
    """A LeNet with a 10-class head, trained weights stand-in, saved with save_parameters."""
    net = get_net("lenet", classes=10)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 28, 28)))
    net.save_parameters(str(tmp_path / "lenet.params"))
    return net, tmp_path / "lenet.params"


def test_backbone_is_copied_to_every_context_and_the_head_is_not(lenet_file):
    source, path = lenet_file
    net = get_net("lenet", classes=2)                         # the new head: 2 classes
    ctxs = [mx.cpu(0), mx.cpu(1)]
    net.initialize(mx.init.Xavier(), ctx=ctxs)                # as the trainer does, before loading
    loaded = load_pretrained(net, str(path), ctxs)
    assert loaded and not any(name.startswith("output.") for name in loaded)
    x = mx.nd.random.uniform(shape=(2, 3, 28, 28))
    expected = source.features(x).asnumpy()
    for ctx in ctxs:
        assert np.allclose(net.features(x.as_in_context(ctx)).asnumpy(), expected, atol=1e-5)
    assert net(x).shape == (2, 2)


def test_uninitialised_net_is_initialised_on_the_contexts(lenet_file):
    _, path = lenet_file
    net = get_net("lenet", classes=3)
    load_pretrained(net, str(path), [mx.cpu()])
    assert net(mx.nd.zeros((1, 3, 28, 28))).shape == (1, 3)


def test_other_architecture_is_refused(lenet_file):
    _, path = lenet_file
    net = get_net("squeezenet1.1", classes=2)
    net.initialize()
    with pytest.raises(PretrainedError, match="does not fit this net.*same architecture"):
        load_pretrained(net, str(path))


def test_file_with_prefixed_names_is_refused(tmp_path, lenet_file):
    source, _ = lenet_file
    source.collect_params().save(str(tmp_path / "prefixed.params"))
    net = get_net("lenet", classes=2)
    net.initialize()
    with pytest.raises(PretrainedError, match=r"collect_params\(\).save\(\).*net.save_parameters\(path\)"):
        load_pretrained(net, str(tmp_path / "prefixed.params"))


def test_missing_file_is_named(tmp_path):
    net = get_net("lenet", classes=2)
    with pytest.raises(PretrainedError, match="weights file not found: .*absent.params"):
        load_pretrained(net, str(tmp_path / "absent.params"))


def test_zoo_weights_absent_offline_say_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    monkeypatch.setenv("MXNET_GLUON_REPO", "http://127.0.0.1:9/")     # refuses at once: nothing is downloaded
    net = get_net("resnet50_v1", classes=2)
    with pytest.raises(PretrainedError) as err:
        load_pretrained(net, "resnet50_v1")
    message = str(err.value)
    assert f"{tmp_path}/models/resnet50_v1-cc729d95.params does not exist" in message
    assert "--set net.pretrained=PATH.params" in message


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_gluoncv_squeezenet_weights_give_gluoncv_outputs(tmp_path, version):
    """GluonCV's model (random weights standing in for the zoo's), saved, loaded into ours: same logits."""
    from gluoncv.model_zoo import get_model

    mx.random.seed(0)
    theirs = get_model(f"squeezenet{version}", classes=1000)
    theirs.initialize(mx.init.Xavier())
    for name, param in theirs.collect_params().items():       # non-zero biases: a swapped bias would show
        if name.endswith("bias"):
            param.initialize(mx.init.Uniform(0.1), force_reinit=True)
    x = mx.nd.random.uniform(-1, 1, (2, 3, 224, 224))        # GluonCV ends in a 13x13 pool: 224 px only
    expected = theirs(x).asnumpy()
    theirs.save_parameters(str(tmp_path / f"squeezenet{version}.params"))
    ours = get_net(f"squeezenet{version}", classes=1000)
    loaded = load_pretrained(ours, str(tmp_path / f"squeezenet{version}.params"), [mx.cpu()])
    assert len(loaded) == len(theirs.collect_params().keys())       # the head too: the same 1,000 classes
    assert np.abs(expected).max() > 1e-2                       # dead logits would match trivially
    np.testing.assert_allclose(ours(x).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_without_gluoncv_the_error_says_how_to_install_it(monkeypatch):
    import sys

    from research.errors import UserError
    from research.nets import get_net

    monkeypatch.setitem(sys.modules, "gluoncv", None)          # as in a venv where it was not installed
    with pytest.raises(UserError, match=r"gluoncv is not installed .*pip install --no-deps gluoncv==0.10.5.post0"):
        get_net("resnet50_v1", classes=2)
