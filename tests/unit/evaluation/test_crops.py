"""10-crop and centre-crop evaluation against a numpy reference on a generated lossless .rec."""
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from research.evaluation.crops import crop_offsets, evaluate_crops, load_trained, predict_batches, topk_correct

REPO = Path(__file__).resolve().parents[3]
HEIGHT, WIDTH, CROP = 40, 48, (32, 36)
CLASSES = 4
COUNT = 50


def write_png_rec(path, images: np.ndarray, labels: np.ndarray) -> None:
    """images (N, H, W, 3) uint8 RGB; PNG so that decoding gives the exact pixels back."""
    writer = mx.recordio.MXIndexedRecordIO(str(path) + ".idx", str(path), "w")
    for i, (image, label) in enumerate(zip(images, labels)):
        header = mx.recordio.IRHeader(0, float(label), i, 0)
        writer.write_idx(i, mx.recordio.pack_img(header, image[:, :, ::-1], img_fmt=".png"))  # cv2 is BGR
    writer.close()


def linear_net(weight: np.ndarray, ctx) -> nn.HybridBlock:
    """logits = W . pixels: a different answer for every window and for its mirror."""
    net = nn.HybridSequential()
    net.add(nn.Flatten(), nn.Dense(CLASSES, in_units=weight.shape[1]))
    net.initialize(ctx=ctx)
    net[1].weight.set_data(mx.nd.array(weight))
    return net


def reference_probs(images: np.ndarray, weight: np.ndarray, views: list[np.ndarray]) -> np.ndarray:
    """Average softmax of W . view over the given views, in numpy (float64)."""
    total = 0
    for view in views:
        logits = view.reshape(len(view), -1).astype(np.float64) @ weight.T
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        total = total + exp / exp.sum(axis=1, keepdims=True)
    return total / len(views)


def numpy_views(images: np.ndarray, crops: int) -> list[np.ndarray]:
    """The windows written out by hand: centre ((H-h)//2, (W-w)//2), 4 corners, mirrors."""
    (h, w), x = CROP, images.transpose(0, 3, 1, 2)       # NHWC -> NCHW
    top, left = (HEIGHT - h) // 2, (WIDTH - w) // 2
    windows = [x[:, :, top:top + h, left:left + w]]
    if crops == 10:
        windows += [x[:, :, :h, :w], x[:, :, :h, -w:], x[:, :, -h:, :w], x[:, :, -h:, -w:]]
        windows += [window[:, :, :, ::-1] for window in windows]
    return windows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (COUNT, HEIGHT, WIDTH, 3)).astype(np.uint8)
    labels = rng.randint(0, CLASSES, COUNT)
    path = tmp_path_factory.mktemp("rec") / "val.rec"
    write_png_rec(path, images, labels)
    weight = rng.normal(0, 2e-4, (CLASSES, 3 * CROP[0] * CROP[1])).astype(np.float32)
    return path, images, labels, weight


def batches(path, batch_size: int = 16):
    # 50 images in batches of 16: the last batch is padded by 14, which must not be counted
    return mx.io.ImageRecordIter(path_imgrec=str(path), data_shape=(3, HEIGHT, WIDTH), batch_size=batch_size,
                                 shuffle=False, round_batch=True, preprocess_threads=1, verbose=False)


@pytest.mark.parametrize("crops", [1, 10])
@pytest.mark.parametrize("ctxs", [[mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]], ids=["1ctx", "2ctx"])
def test_every_image_gets_the_average_softmax_of_its_crops(dataset, crops, ctxs):
    path, images, labels, weight = dataset
    net = linear_net(weight, ctxs)
    out = list(predict_batches(net, batches(path), ctxs, CROP, crops))
    probs = np.concatenate([p for p, _ in out])
    seen_labels = np.concatenate([y for _, y in out])
    assert probs.shape == (COUNT, CLASSES)                       # 50 in, 50 predictions out
    np.testing.assert_array_equal(seen_labels, labels)
    expected = reference_probs(images, weight, numpy_views(images, crops))
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
    if crops == 10:   # the check can tell 10 crops from the centre alone
        centre_only = reference_probs(images, weight, numpy_views(images, 1))
        assert np.abs(centre_only - expected).max() > 1e-3


def test_top1_top5_fractions_count_each_image_once(dataset):
    path, images, labels, weight = dataset
    net = linear_net(weight, [mx.cpu()])
    result = evaluate_crops(net, batches(path, batch_size=16), [mx.cpu()], CROP, crops=10)
    expected = reference_probs(images, weight, numpy_views(images, 10))
    assert result["count"] == COUNT
    assert result["top1"] == pytest.approx(np.mean(expected.argmax(axis=1) == labels))
    assert result["top5"] == 1.0                                  # 4 classes: always in the top 5


def test_topk_correct():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 0])
    assert topk_correct(probs, labels, 1) == 1
    assert topk_correct(probs, labels, 2) == 2
    assert topk_correct(probs, labels, 5) == 3


def test_crops_larger_than_the_image_are_refused():
    assert crop_offsets(256, 256, 227, 227, 10)[4] == (29, 29)
    with pytest.raises(ValueError, match="larger than"):
        crop_offsets(200, 256, 227, 227, 1)
    with pytest.raises(ValueError, match="1 or 10"):
        crop_offsets(256, 256, 227, 227, 5)


def test_a_recipe_with_pretrained_weights_evaluates_those_weights(tmp_path):
    """tools/evaluate.py recipes/squeezenet1.0_gluoncv.yaml: GluonCV's file (random weights here), head included."""
    from gluoncv.model_zoo import get_model

    theirs = get_model("squeezenet1.1", classes=1000)
    theirs.initialize(mx.init.Xavier())
    x = mx.nd.random.uniform(-2, 2, (2, 3, 224, 224))
    expected = theirs(x).asnumpy()
    theirs.save_parameters(str(tmp_path / "squeezenet1.1.params"))
    recipe = (REPO / "recipes/squeezenet1.1_gluoncv.yaml").read_text()
    (tmp_path / "eval.yaml").write_text(recipe.replace("pretrained: squeezenet1.1", f"pretrained: {tmp_path}/squeezenet1.1.params"))
    trained = load_trained(tmp_path / "eval.yaml", [mx.cpu()])
    np.testing.assert_allclose(trained.net(x).asnumpy(), expected, rtol=1e-5, atol=1e-5)
    assert trained.recipe.data.data_shape == [3, 224, 224] and trained.run_id is None
