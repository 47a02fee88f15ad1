"""A run's MLflow name says what differs from its recipe file."""
from research.config import load_recipe
from research.tracking.names import label, run_name

QUICKSTART = "recipes/lenet_digits.yaml"


def test_a_run_is_named_by_its_set_values(repo):
    recipe = load_recipe(repo / QUICKSTART, ["train.lr=0.05", "train.epochs=3", "train.lr_steps=[1,2]"])
    assert run_name(recipe) == "epochs=3 lr=0.05 lr_steps=[1,2]"         # the recipe file's key order
    assert run_name(load_recipe(repo / QUICKSTART, ["train.lr=0.02"])) == "lenet_digits"   # the file's own value
    assert run_name(load_recipe(repo / QUICKSTART, ["train.wd=1e-5"])) == "wd=1e-05"


def test_keys_that_share_their_last_part_are_named_in_full():
    assert label({"train.seed": 1, "transfer.seed": 2, "train.lr": 1e6}) == "train.seed=1 transfer.seed=2 lr=1e+06"
