"""Exported models: MXNet and ONNX give the net's outputs, class names travel with them, and
tools/predict.py's preprocessing gives what the recipe's validation data gives."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest
from helpers import run_tool
from mxnet import gluon

from research.config import load_recipe, recipe_from_dict
from research.errors import UserError
from research.model.export import class_names, deployable_recipe, export_model
from research.nets import get_net
from research.model.predict import Predictor, find_model, preprocess, read_image

REPO = Path(__file__).resolve().parents[3]


def ready_net(name: str, classes: int, shape: tuple[int, ...]) -> gluon.HybridBlock:
    """An initialised, hybridized net that has run forward once, as the trainer leaves it."""
    mx.random.seed(0)
    net = get_net(name, classes=classes)
    net.initialize(mx.init.Xavier(magnitude=2))
    net.hybridize(static_alloc=True, static_shape=True)
    net(mx.nd.zeros((2, *shape)))
    return net


def digits_recipe(**overrides):
    return load_recipe(REPO / "recipes" / "lenet_digits.yaml", [f"{k}={v}" for k, v in overrides.items()])


def synthetic_squeezenet_recipe():
    return recipe_from_dict({"name": "sq_synth", "net": {"name": "squeezenet1.1", "classes": 7},
                             "data": {"kind": "synthetic", "data_shape": [3, 64, 64]},
                             "train": {"epochs": 1, "lr": 0.01, "batch_size": 4}})


@pytest.mark.parametrize("make_recipe", [digits_recipe, synthetic_squeezenet_recipe], ids=["lenet", "squeezenet1.1"])
def test_mxnet_and_onnx_exports_reproduce_the_net(tmp_path, make_recipe):
    import onnxruntime as ort

    recipe = make_recipe()
    shape = (1, 28, 28) if recipe.net.name == "lenet" else (3, 64, 64)
    net = ready_net(recipe.net.name, recipe.net.classes, shape)
    written = export_model(net, tmp_path / "model", recipe)
    assert all(path.is_file() and path.stat().st_size > 0 for path in written)
    x = np.random.RandomState(0).uniform(0, 1, (3, *shape)).astype(np.float32)
    expected = net(mx.nd.array(x)).asnumpy()

    files = find_model(tmp_path / "model")
    loaded = gluon.SymbolBlock.imports(str(files.symbol), ["data"], str(files.params))
    np.testing.assert_array_equal(loaded(mx.nd.array(x)).asnumpy(), expected)

    onnx_path = tmp_path / "model" / f"{recipe.net.name}.onnx"
    assert onnx_path in written
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["data"]      # weights are not inputs
    got = session.run(None, {"data": x})[0]                         # batch 3: the batch axis is free
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)


def test_digits_export_names_the_ten_digits_and_keeps_the_recipe(tmp_path):
    recipe = digits_recipe()
    export_model(ready_net("lenet", 10, (1, 28, 28)), tmp_path, recipe)
    assert json.loads((tmp_path / "classes.json").read_text()) == [str(d) for d in range(10)]
    assert load_recipe(tmp_path / "recipe.yaml").to_dict() == recipe.to_dict()


def test_onnx_failure_only_warns(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ImportError("onnx is too new")
    monkeypatch.setattr(mx.onnx, "export_model", broken)
    with caplog.at_level(logging.WARNING):
        written = export_model(ready_net("lenet", 10, (1, 28, 28)), tmp_path, digits_recipe())
    names = {path.name for path in written}
    assert {"lenet-symbol.json", "lenet-0000.params", "classes.json"} <= names
    assert not (tmp_path / "lenet.onnx").exists()
    assert "ONNX export failed" in caplog.text and "onnx is too new" in caplog.text


# -- predict ------------------------------------------------------------------------------------
def test_digits_image_preprocesses_back_to_the_training_array(tmp_path):
    from research.data.digits import load_digits

    _, _, x_val, _ = load_digits()
    original = x_val[0, 0]                                            # (28, 28) in [0, 1]
    cv2.imwrite(str(tmp_path / "digit.png"), np.round(original * 255).astype(np.uint8))
    x = preprocess(read_image(tmp_path / "digit.png", 1), digits_recipe())
    assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], original, atol=0.5 / 255 + 1e-6)
    # A colour image of another size becomes one grayscale channel at the net's size.
    cv2.imwrite(str(tmp_path / "big.jpg"), np.full((90, 120, 3), 200, np.uint8))
    big = preprocess(read_image(tmp_path / "big.jpg", 1), digits_recipe())
    assert big.shape == (1, 1, 28, 28) and abs(float(big.mean()) - 200 / 255) < 0.01


def test_find_model_accepts_run_dir_model_dir_prefix_and_symbol_file(tmp_path):
    export_model(ready_net("lenet", 10, (1, 28, 28)), tmp_path / "run" / "model", digits_recipe())
    model = tmp_path / "run" / "model"
    for ref in (tmp_path / "run", model, model / "lenet", model / "lenet-symbol.json"):
        files = find_model(ref)
        assert files.symbol == model / "lenet-symbol.json" and files.params == model / "lenet-0000.params"
        assert files.recipe == model / "recipe.yaml" and files.classes == model / "classes.json"
    with pytest.raises(UserError, match=str(tmp_path / "run" / "nothing")):
        find_model(tmp_path / "run" / "nothing")


def test_predictor_ranks_classes_by_name(tmp_path):
    net = ready_net("lenet", 10, (1, 28, 28))
    export_model(net, tmp_path / "model", digits_recipe())
    image = np.random.RandomState(1).randint(0, 255, (28, 28), np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), image)
    (top,) = Predictor(tmp_path / "model").predict([tmp_path / "x.png"], k=5)
    probs = mx.nd.softmax(net(mx.nd.array(image[None, None] / 255.0))).asnumpy()[0]
    assert [name for name, _ in top] == [str(i) for i in np.argsort(-probs)[:5]]
    np.testing.assert_allclose([p for _, p in top], np.sort(probs)[::-1][:5], rtol=1e-5)


# -- RecordIO: class map and the val pipeline ---------------------------------------------------
@pytest.fixture(scope="module")
def small_rec(tmp_path_factory) -> Path:
    """A RecordIO build of 3 classes x 4 images (48x40 px, shorter side kept) by tools/build_rec's library."""
    from research.data.build import build_rec

    root = tmp_path_factory.mktemp("rec")
    rng = np.random.RandomState(0)
    for name in ("cat", "dog", "fox"):
        (root / "src" / name).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(root / "src" / name / f"{i}.jpg"), rng.randint(0, 255, (40, 48, 3), np.uint8))
    build_rec(root / "src", root / "pets", workers=1, progress=False)
    return root / "pets.rec"


def rec_recipe(rec: Path, **data):
    return recipe_from_dict({"name": "pets", "net": {"name": "squeezenet1.1", "classes": 3},
                             "data": {"kind": "recordio", "train_rec": str(rec), "val_rec": str(rec),
                                      "data_shape": [3, 32, 32], "mean": "rec", **data},
                             "train": {"epochs": 1, "lr": 0.01, "batch_size": 4}})


def test_recordio_export_names_classes_and_resolves_the_mean(small_rec):
    recipe = rec_recipe(small_rec)
    assert class_names(recipe) == ["cat", "dog", "fox"]
    stats = json.loads(small_rec.with_suffix(".mean.json").read_text())
    deployable = deployable_recipe(recipe).data
    assert deployable.mean == stats["mean"] and deployable.resize == 40      # every image was built at 40


@pytest.mark.parametrize("resize", [-1, 36])
def test_predict_preprocessing_matches_the_val_iterator(small_rec, resize):
    from research.data.recordio import get_rec_iterators

    recipe = rec_recipe(small_rec, resize=resize)
    _, val_iter = get_rec_iterators(recipe.data, 4, 3)
    batch = next(iter(val_iter)).data[0].asnumpy()
    record = mx.recordio.MXIndexedRecordIO(str(small_rec.with_suffix(".idx")), str(small_rec), "r")
    try:
        keys = sorted(record.keys)[:4]
        images = [cv2.cvtColor(mx.recordio.unpack_img(record.read_idx(k))[1], cv2.COLOR_BGR2RGB) for k in keys]
    finally:
        record.close()
    ours = np.concatenate([preprocess(image, recipe) for image in images])
    assert ours.shape == batch.shape
    np.testing.assert_allclose(ours, batch, atol=1e-4)      # same crop, bilinear resize and normalisation


def test_a_half_written_model_file_is_one_line_naming_it_everywhere_it_is_loaded(tmp_path, env):
    """tools/predict.py (exit 2), Run.predict and the MLflow model's load all say which file is damaged."""
    from types import SimpleNamespace

    import research
    from research.tracking.logged_model import ImageClassifier

    run_dir = tmp_path / "run"
    export_model(ready_net("lenet", 10, (1, 28, 28)), run_dir / "model", digits_recipe())
    (run_dir / "recipe.yaml").write_text((run_dir / "model" / "recipe.yaml").read_text())
    params = run_dir / "model" / "lenet-0000.params"
    params.write_bytes(params.read_bytes()[:params.stat().st_size // 2])          # cut short by a copy
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((28, 28), np.uint8))
    proc = run_tool("predict.py", run_dir, tmp_path / "x.png", env=env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert f"{params} cannot be read" in proc.stderr and "Invalid NDArray file format" in proc.stderr
    with pytest.raises(UserError, match=f"{params} cannot be read"):
        research.load_run(run_dir).predict([tmp_path / "x.png"])
    with pytest.raises(UserError, match=f"{params} cannot be read"):
        ImageClassifier().load_context(SimpleNamespace(artifacts={"model": str(run_dir / "model")}))
