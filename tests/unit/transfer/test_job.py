"""The transfer job's checks before any heavy work: each names the recipe key to fix."""
import pytest

from research.config import recipe_from_dict
from research.transfer.features import TransferError
from research.transfer.job import check_transfer


def recipe(**changes):
    raw = {"name": "t", "task": "transfer",
           "net": {"name": "resnet50_v1", "classes": 2, "pretrained": "resnet50_v1"},
           "data": {"kind": "recordio", "train_rec": "train.rec", "val_rec": "train_val.rec"},
           "train": {"epochs": 1, "lr": 0.01, "batch_size": 32},
           "transfer": {"test_rec": ""}}
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw[section] = {**raw[section], key: value}
    return recipe_from_dict(raw)


def test_a_complete_recipe_passes():
    check_transfer(recipe())


@pytest.mark.parametrize("changes, message", [
    ({"net__pretrained": ""}, "needs net.pretrained: a gluoncv model-zoo name"),
    ({"data__mean": "rec"}, "data.mean 'rec': a pretrained backbone expects the mean/std it was trained with"),
    ({"transfer__test_rec": "/nope/test.rec"}, "transfer.test_rec: /nope/test.rec does not exist"),
    ({"transfer__class_names": ["cat", "dog", "fox"]}, "transfer.class_names has 3 names but net.classes is 2"),
    ({"transfer__layer": "stage4"}, "transfer.layer 'stage4'"),
    ({"transfer__cv_folds": 1}, "transfer.cv_folds >= 2"),
    ({"data": None}, "data.kind must be recordio"),
])
def test_bad_settings_are_named(changes, message):
    if "data" in changes:
        bad = recipe()
        bad.data = recipe_from_dict({"name": "d", "net": {"name": "lenet", "classes": 10},
                                     "data": {"kind": "digits"},
                                     "train": {"epochs": 1, "lr": 0.1, "batch_size": 8}}).data
    else:
        bad = recipe(**changes)
    with pytest.raises(TransferError, match=message.replace(".", r"\.").replace("(", r"\(")):
        check_transfer(bad)
