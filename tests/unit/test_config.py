"""Recipe loading: every shipped recipe validates; errors name the file, the key and a fix."""
from pathlib import Path

import pytest

from research.config import RecipeError, load_recipe, recipe_from_dict, dump_recipe
import yaml

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted(REPO.glob("recipes/**/*.yaml"))
MINIMAL = """
net: {name: lenet, classes: 10}
data: {kind: digits}
train: {epochs: 10, lr: 0.1, batch_size: 64, lr_steps: [5]}
"""


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(MINIMAL)
    return path


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    assert recipe.name
    assert recipe_from_dict(yaml.safe_load(dump_recipe(recipe))).to_dict() == recipe.to_dict()


def test_name_defaults_to_file_stem_and_defaults_fill_in(recipe_file):
    recipe = load_recipe(recipe_file)
    assert recipe.name == "tiny"
    assert recipe.train.momentum == 0.9 and recipe.data.size == 28
    assert recipe.flat()["train.lr"] == 0.1


def test_unknown_key_names_file_path_and_closest(recipe_file):
    recipe_file.write_text(MINIMAL.replace("lr: 0.1", "lr: 0.1, momentun: 0.8"))
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe_file)
    message = str(err.value)
    assert str(recipe_file) in message and "train.momentun" in message and "train.momentum" in message


def test_wrong_type_names_expected_type(recipe_file):
    recipe_file.write_text(MINIMAL.replace("epochs: 10", "epochs: ten"))
    with pytest.raises(RecipeError, match=r"train.epochs: expected int, got 'ten'"):
        load_recipe(recipe_file)


def test_bool_is_not_accepted_as_number(recipe_file):
    with pytest.raises(RecipeError, match="expected float"):
        load_recipe(recipe_file, ["train.lr=true"])


def test_overrides_are_yaml_typed_and_validated(recipe_file):
    recipe = load_recipe(recipe_file, ["train.lr=0.05", "train.lr_steps=[3, 7]", "data.size=32"])
    assert recipe.train.lr == 0.05 and recipe.train.lr_steps == [3, 7] and recipe.data.size == 32
    with pytest.raises(RecipeError, match=r"--set train.lrr=1.*unknown key 'train.lrr'.*'train.lr'"):
        load_recipe(recipe_file, ["train.lrr=1"])
    with pytest.raises(RecipeError, match="expected section.key=value"):
        load_recipe(recipe_file, ["train.lr"])


def test_choices_suggest_the_closest_value(recipe_file):
    with pytest.raises(RecipeError, match=r"train.kvstore = 'devise' is not one of .*Did you mean 'device'"):
        load_recipe(recipe_file, ["train.kvstore=devise"])
    with pytest.raises(RecipeError, match=r"data.kind = 'recordo'.*'recordio'"):
        load_recipe(recipe_file, ["data.kind=recordo"])


def test_every_choice_is_read_from_its_field(recipe_file):
    """The valid values a message lists are the ones declared on the field (typing.Literal)."""
    import typing
    from research.config import NetConfig, Recipe, TrainConfig
    checked = []
    for cls, section in ((TrainConfig, "train"), (NetConfig, "net"), (Recipe, "")):
        for name, tp in typing.get_type_hints(cls).items():
            if typing.get_origin(tp) is typing.Literal:
                key = f"{section}.{name}" if section else name
                with pytest.raises(RecipeError, match=rf"{key} = 'bogus' is not one of "
                                                      rf"{', '.join(typing.get_args(tp))}\."):
                    load_recipe(recipe_file, [f"{key}=bogus"])
                checked.append(key)
    assert {"task", "net.activation", "train.kvstore", "train.optimizer", "train.dtype"} <= set(checked)


def test_data_kind_selects_the_schema(recipe_file):
    with pytest.raises(RecipeError, match=r"unknown key 'data.size'"):
        load_recipe(recipe_file, ["data.size=32", "data.kind=mnist"])
    recipe = load_recipe(recipe_file, ["data={kind: mnist, root: /tmp/m}"])
    assert recipe.data.root == "/tmp/m"


def test_missing_required_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL.replace("lr: 0.1, ", ""))
    with pytest.raises(RecipeError, match=r"missing required key 'train.lr'"):
        load_recipe(path)


def test_semantic_checks(recipe_file):
    with pytest.raises(RecipeError, match="lr_steps"):
        load_recipe(recipe_file, ["train.lr_steps=[12]"])
    with pytest.raises(RecipeError, match="train.batch_size must be positive"):
        load_recipe(recipe_file, ["train.batch_size=0"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("net: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


def test_exponent_without_dot_is_a_float(recipe_file):
    """PyYAML reads 1e-4 as a string (YAML 1.1); a user writing it means the number."""
    recipe = load_recipe(recipe_file, ["train.wd=1e-4", "train.lr=2E-2"])
    assert recipe.train.wd == 1e-4 and recipe.train.lr == 0.02
    with pytest.raises(RecipeError, match="expected int"):
        load_recipe(recipe_file, ["train.epochs=1e3"])


@pytest.mark.parametrize("name", ["", "../..", "a/b", ".hidden", "two words"])
def test_name_must_be_a_safe_folder_name(recipe_file, name):
    recipe_file.write_text(f"name: {name!r}\n" + MINIMAL)
    with pytest.raises(RecipeError, match="not a safe run name"):
        load_recipe(recipe_file)


def test_key_written_twice_names_both_lines(recipe_file):
    recipe_file.write_text(MINIMAL + "train: {epochs: 3, lr: 0.1, batch_size: 64}\n")
    with pytest.raises(RecipeError, match=r"tiny.yaml: key 'train' is written twice, on lines 4 and 5"):
        load_recipe(recipe_file)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_nan_and_inf_are_refused_for_float_keys(recipe_file, value):
    with pytest.raises(RecipeError, match="train.lr: expected a finite number"):
        load_recipe(recipe_file, [f"train.lr={value}"])
    with pytest.raises(RecipeError, match="data.val_fraction: expected a finite number"):
        load_recipe(recipe_file, [f"data.val_fraction={value}"])


def test_net_activation_and_init_are_squeezenet_choices(recipe_file):
    recipe = load_recipe(recipe_file, ["net.name=squeezenet1.0", "net.activation=elu", "net.init=xavier"])
    assert (recipe.net.activation, recipe.net.init) == ("elu", "xavier")
    with pytest.raises(RecipeError, match="net.activation = 'gelu' is not one of relu, elu"):
        load_recipe(recipe_file, ["net.name=squeezenet1.0", "net.activation=gelu"])
    with pytest.raises(RecipeError, match="apply to SqueezeNet only.*'lenet'"):
        load_recipe(recipe_file, ["net.activation=elu"])


def test_train_amp_reads_a_bare_off_and_refuses_what_it_cannot_run(recipe_file):
    import mxnet as mx

    from research.errors import UserError
    from research.preflight import check_recipe

    recipe_file.write_text(MINIMAL.replace("lr_steps: [5]", "lr_steps: [5], amp: off"))   # YAML 1.1: off is false
    assert load_recipe(recipe_file).train.amp == "off"
    assert load_recipe(recipe_file, ["train.amp=off"]).train.amp == "off"
    assert load_recipe(recipe_file, ["train.amp=bfloat16"]).train.amp == "bfloat16"
    with pytest.raises(RecipeError, match="train.amp = 'bf16' is not one of off, float16, bfloat16. Did you mean 'bfloat16'"):
        load_recipe(recipe_file, ["train.amp=bf16"])
    with pytest.raises(RecipeError, match="train.amp float16 with train.dtype float16: choose one"):
        load_recipe(recipe_file, ["train.amp=float16", "train.dtype=float16"])
    with pytest.raises(RecipeError, match="train.amp with train.kvstore dist_sync is not supported"):
        load_recipe(recipe_file, ["train.amp=bfloat16", "train.kvstore=dist_sync"])
    with pytest.raises(UserError, match="train.amp float16 needs GPUs"):
        check_recipe(load_recipe(recipe_file, ["train.amp=float16"]), [mx.cpu()])
    with pytest.raises(UserError, match="train.amp bfloat16 runs on CPUs only"):
        check_recipe(load_recipe(recipe_file, ["train.amp=bfloat16"]), [mx.gpu(0)])
