"""Feature cache: a second run reads what the first wrote; a file made by another model is refused."""
import os

import numpy as np
import pytest

from research.transfer.cache import cache_key, cache_path, load_features, save_features
from research.transfer.features import Features, TransferError

IMAGENET = dict(data_shape=[3, 224, 224], resize=256, mean=[123.68, 116.779, 103.939], std=[58.393, 57.12, 57.375])


@pytest.fixture
def rec(tmp_path):
    path = tmp_path / "train.rec"
    path.write_bytes(b"records")
    return str(path)


def test_round_trip(tmp_path, rec):
    key = cache_key("resnet50_v1", "zoo resnet50_v1-cc729d95.params", "features", rec, **IMAGENET)
    path = cache_path(tmp_path / "cache", key)
    assert load_features(path, key) is None
    feats = Features(x=np.random.rand(4, 8).astype(np.float32), labels=np.array([0, 1, 1, 0]), ids=np.zeros(0))
    save_features(path, key, feats)
    back = load_features(path, key)
    assert np.array_equal(back.x, feats.x) and back.labels.tolist() == [0, 1, 1, 0]
    assert [p.name for p in path.parent.iterdir()] == [path.name]          # no temporary file left


def test_key_changes_with_model_layer_data_preprocessing_and_kind(tmp_path, rec):
    base = cache_key("resnet50_v1", "zoo a", "features", rec, **IMAGENET)
    others = [cache_key("resnet18_v1", "zoo a", "features", rec, **IMAGENET),
              cache_key("resnet50_v1", "file sha1 b", "features", rec, **IMAGENET),
              cache_key("resnet50_v1", "zoo a", "features[:-2]", rec, **IMAGENET),
              cache_key("resnet50_v1", "zoo a", "features", rec, **dict(IMAGENET, resize=288)),
              cache_key("resnet50_v1", "zoo a", "features", rec, **IMAGENET, labeled=False)]   # ids, not labels
    os.utime(rec, ns=(1, 1))
    others.append(cache_key("resnet50_v1", "zoo a", "features", rec, **IMAGENET))    # the .rec was rebuilt
    paths = {cache_path(tmp_path, key) for key in [base, *others]}
    assert len(paths) == 7


def test_cache_made_by_another_model_is_refused(tmp_path, rec):
    mine = cache_key("resnet50_v1", "file sha1 aaa", "features", rec, **IMAGENET)
    theirs = cache_key("resnet50_v1", "file sha1 bbb", "features", rec, **IMAGENET)
    path = cache_path(tmp_path, mine)
    save_features(path, theirs, Features(x=np.zeros((1, 2), np.float32), labels=np.zeros(1), ids=np.zeros(0)))
    with pytest.raises(TransferError, match=r"made by another model \(weights: 'file sha1 bbb' in the cache, "
                                            r"'file sha1 aaa' in this run\)\. Delete the file"):
        load_features(path, mine)
