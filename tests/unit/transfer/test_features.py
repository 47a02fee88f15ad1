"""Feature extraction: ids and labels stay with their images over several contexts; backbones load
from a .params file by NETS or model-zoo name; bad test files are refused with a clear message."""
import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import HybridBlock, nn

from research.config import RecordData
from research.errors import UserError
from research.nets import get_net
from research.transfer.features import (TransferError, extract_features, feature_block, load_backbone,
                                        weights_id)

# mean 0 / std 1: a grey level g becomes the feature value g
PLAIN = RecordData(train_rec="x.rec", val_rec="x.rec", data_shape=[3, 16, 16], resize=18,
                   mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])


class MeanColour(HybridBlock):
    """A stand-in backbone: .features is the identity, so the pooled feature is the mean colour."""

    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.features = nn.HybridSequential()
            self.features.add(nn.Activation("relu"))


def test_test_ids_stay_with_their_images_over_two_contexts(tmp_path, write_rec, grey):
    ids = [907, 3, 55, 12, 1000, 7, 42, 8, 19, 64, 2]              # 11 images: the last batch of 4 is padded
    level = {i: 10 + 20 * n for n, i in enumerate(sorted(ids))}
    rec = write_rec(tmp_path / "test", [(i, -1, grey(level[i])) for i in ids])
    block = feature_block(MeanColour(), "features", PLAIN.data_shape, mx.cpu(0))
    feats = extract_features(block, str(rec), "transfer.test_rec", [mx.cpu(0), mx.cpu(1)], PLAIN,
                             batch_size=2, labeled=False)
    assert feats.ids.tolist() == ids and feats.x.shape == (11, 3) and feats.labels.size == 0
    assert np.abs(feats.x[:, 0] - [level[i] for i in ids]).max() < 4   # each id kept its own image
    assert feats.img_per_s > 0


def test_labels_stay_with_their_images(tmp_path, write_rec, grey):
    labels = [0, 1, 1, 0, 1, 0, 0]
    rec = write_rec(tmp_path / "train", [(n, y, grey(60 + 120 * y)) for n, y in enumerate(labels)])
    block = feature_block(MeanColour(), "features", PLAIN.data_shape, mx.cpu())
    feats = extract_features(block, str(rec), "data.train_rec", [mx.cpu()], PLAIN, batch_size=4, labeled=True)
    assert feats.labels.tolist() == labels and feats.ids.size == 0
    assert np.abs(feats.x[:, 1] - (60 + 120 * np.array(labels))).max() < 4


def test_test_rec_without_ids_is_refused(tmp_path, write_rec, grey):
    rec = write_rec(tmp_path / "test", [(0, -1, grey(100)) for _ in range(5)])
    block = feature_block(MeanColour(), "features", PLAIN.data_shape, mx.cpu())
    with pytest.raises(TransferError, match="no distinct ids.*id 0 appears 5 times.*--layout dogs-vs-cats"):
        extract_features(block, str(rec), "transfer.test_rec", [mx.cpu()], PLAIN, batch_size=4, labeled=False)


def test_labeled_rec_given_as_test_is_refused(tmp_path, write_rec, grey):
    rec = write_rec(tmp_path / "train", [(n, n % 2, grey(100)) for n in range(6)])
    block = feature_block(MeanColour(), "features", PLAIN.data_shape, mx.cpu())
    with pytest.raises(TransferError, match="is it a train .rec"):
        extract_features(block, str(rec), "transfer.test_rec", [mx.cpu()], PLAIN, batch_size=4, labeled=False)


def test_layer_selects_a_prefix_of_features():
    net = get_net("lenet", classes=2)
    net.initialize()
    block = feature_block(net, "features[:1]", [3, 16, 16], mx.cpu())      # conv1 only: 20 maps, pooled
    assert block(mx.nd.zeros((2, 3, 16, 16))).shape == (2, 20)
    with pytest.raises(TransferError, match="transfer.layer 'conv1'"):
        feature_block(net, "conv1", [3, 16, 16], mx.cpu())


@pytest.mark.parametrize("name", ["lenet", "cifar_resnet20_v1"])      # a NETS name, a model-zoo name
def test_backbone_loads_a_params_file_whatever_its_head(tmp_path, name):
    from research.transfer.features import build_backbone
    source = build_backbone(name, classes=5)                # saved with another head than the backbone's
    source.initialize(mx.init.Xavier())
    x = mx.nd.random.uniform(shape=(2, 3, 32, 32))
    source(x)                                               # finishes deferred initialisation
    expected = source.features(x).asnumpy()
    source.save_parameters(str(tmp_path / "w.params"))
    net = load_backbone(name, str(tmp_path / "w.params"), [mx.cpu()])
    assert np.allclose(net.features(x).asnumpy(), expected, atol=1e-5)


def test_weights_id_follows_the_file_content(tmp_path):
    path = tmp_path / "w.params"
    path.write_bytes(b"one")
    first = weights_id(str(path))
    path.write_bytes(b"two")
    assert weights_id(str(path)) != first
    assert weights_id("resnet50_v1") == "zoo resnet50_v1-cc729d95.params"
    with pytest.raises(TransferError, match="net.pretrained: file not found"):
        weights_id(str(tmp_path / "absent.params"))


def test_damaged_test_rec_is_refused_before_mxnet_reads_it(tmp_path, write_rec, grey):
    rec = write_rec(tmp_path / "test", [(i, -1, grey(100)) for i in range(6)])
    with open(rec, "r+b") as f:                  # the 4th record's header zeroed, as a bad copy leaves it
        f.seek(int((tmp_path / "test.idx").read_text().splitlines()[3].split()[1]))
        f.write(b"\0" * 8)
    block = feature_block(MeanColour(), "features", PLAIN.data_shape, mx.cpu())
    with pytest.raises(UserError, match=r"transfer.test_rec: .*test.rec is damaged, record 3 \(id 3\) at byte \d+"):
        extract_features(block, str(rec), "transfer.test_rec", [mx.cpu()], PLAIN, batch_size=4, labeled=False)
