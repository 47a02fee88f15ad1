"""A run's MLflow name says what differs from its recipe file."""
from research.config import load_recipe
from research.tracking.names import FOLDER_NAME_MAX, folder_name, label, model_name, run_name

QUICKSTART = "recipes/lenet_digits.yaml"


def test_a_run_is_named_by_its_set_values(repo):
    recipe = load_recipe(repo / QUICKSTART, ["train.lr=0.05", "train.epochs=3", "train.lr_steps=[1,2]"])
    assert run_name(recipe) == "epochs=3 lr=0.05 steps=[1,2]"             # the recipe file's key order
    assert run_name(load_recipe(repo / QUICKSTART, ["train.lr=0.02"])) == "lenet_digits"   # the file's own value
    assert run_name(load_recipe(repo / QUICKSTART, ["train.wd=1e-5"])) == "wd=1e-05"


def test_keys_that_share_their_last_part_are_named_in_full():
    assert label({"train.seed": 1, "transfer.seed": 2, "train.lr": 1e6}) == "train.seed=1 transfer.seed=2 lr=1e+06"


def test_names_fit_the_runs_table_and_models_take_them():
    # the quickstart's sweep: 'lr=0.02 warmup_epochs=0' showed as 'lr=0.02 warmup...' for two of its four trials
    names = {label({"train.lr": lr, "train.warmup_epochs": w}, short=True) for lr in ("0.01", "0.02") for w in (0, 1)}
    assert names == {"lr=0.01 warmup=0", "lr=0.01 warmup=1", "lr=0.02 warmup=0", "lr=0.02 warmup=1"}
    assert label({"train.lr_steps": [1, 2], "sched.lr_steps": [3]}, short=True) == \
        "train.lr_steps=[1,2] sched.lr_steps=[3]"                       # two that would read alike: in full
    assert model_name("lenet_digits", "lr=0.05 warmup=1") == "lenet_digits lr=0\u00b705 warmup=1"   # MLflow: no '.'
    assert model_name("lenet_digits", "lenet_digits") == "lenet_digits"


def test_folder_names_are_shell_friendly_and_stay_under_the_file_systems_limit():
    assert folder_name({"train.lr": 0.01, "train.lr_steps": [5, 10]}) == "lr-0.01_lr_steps-5-10"
    # a long override (a weights file's path) and many keys: the name was 249 characters, near the 255-byte limit
    many = {"net.pretrained": "/home/user/" + "very/" * 30 + "lenet-0000.params", "train.lr": 0.05, "train.seed": 3}
    other = {**many, "train.seed": 4}
    assert len(folder_name(many)) == FOLDER_NAME_MAX and folder_name(many).startswith("pretrained--home-user-very-")
    assert folder_name(many) != folder_name(other)            # the cut names still tell the values apart
    assert folder_name(many) == folder_name(dict(many))        # and the same command finds its folder again
