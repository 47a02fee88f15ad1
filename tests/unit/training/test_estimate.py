"""The arithmetic behind `plan`'s and the trainer's epoch time, ETA and cost."""
import pytest

from research.training.estimate import bottleneck, epoch_seconds, run_estimate
from research.bench.plan import format_plan


def test_reference_rates_give_the_reference_epoch_times():
    # ImageNet train at batch 128: 152 img/s on a K80 and 763 on a V100 are the reference's 140 and 28 min
    assert epoch_seconds(1_281_167, 128, 152) / 60 == pytest.approx(140.5, abs=0.1)
    assert epoch_seconds(1_281_167, 128, 763) / 60 == pytest.approx(28.0, abs=0.1)


def test_epoch_counts_full_batches_only():
    assert epoch_seconds(1000, 128, 64.0) == 7 * 128 / 64.0       # 1000 images: 7 full batches


def test_run_time_and_cost_for_the_epochs_left():
    full = run_estimate(1_281_167, 128, 152, epochs=80, price_per_hour=3.06)
    assert full["run_s"] == pytest.approx(80 * full["epoch_s"])
    assert full["run_s"] / 3600 == pytest.approx(187.3, abs=0.1)           # 80 x 140.5 min
    assert full["cost"] == pytest.approx(full["run_s"] / 3600 * 3.06)      # about $573
    resumed = run_estimate(1_281_167, 128, 152, epochs=80, price_per_hour=3.06, done_epochs=70)
    assert resumed["run_s"] == pytest.approx(10 * full["epoch_s"])
    assert run_estimate(1000, 100, 10.0, epochs=2)["cost"] is None


def test_bottleneck_names_the_slower_side_and_the_idle_share():
    data_bound = bottleneck(data_img_per_s=300, model_img_per_s=600, together_img_per_s=270)
    assert data_bound == {"bottleneck": "data", "margin": 2.0, "devices_idle": pytest.approx(0.55)}
    model_bound = bottleneck(data_img_per_s=900, model_img_per_s=300, together_img_per_s=310)
    assert model_bound == {"bottleneck": "devices", "margin": 3.0, "devices_idle": 0.0}


def test_the_text_prints_the_json_figures():
    figures = {"recipe": "r", "devices": "gpu(0)", "cores": 8, "load_average": 0.5, "global_batch": 128, "epoch_images": 1_281_167,
               "epochs": 80, "seconds_per_figure": 20.0, "data_img_per_s": 512.3, "model_img_per_s": 763.4,
               "together_img_per_s": 498.7, "data_busy_cores": 7.9, "bottleneck": "data", "margin": 1.49,
               "devices_idle": 0.347, "epoch_s": 2567.0, "run_s": 205360.0, "cost": 174.56,
               "price_per_hour": 3.06, "reference_min_per_epoch": {"K80": 140.0, "V100": 28.0}, "lift": "more cores"}
    text = format_plan(figures)
    for part in ("512.3 img/s", "763.4 img/s", "498.7 img/s", "bottleneck: the data pipeline", "idle 35%",
                 "epoch 42m47s", "80 epochs 57h02m", "$174.56 at $3.06/h", "K80 140 min, V100 28 min",
                 "to lift it: more cores"):
        assert part in text, (part, text)


@pytest.mark.parametrize("threads, busy, load, expected", [
    (1, 0.9, 0.5, "data.preprocess_threads: 0 (now 1 of 2 cores)"),
    (0, 0.3, 11.0, "other processes hold them (load average 11.0)"),
    (0, 0.3, 0.5, "a faster disk"),
    (0, 1.9, 0.5, "smaller images to decode (tools/build_rec.py --resize 63"),
])
def test_lift_hint_for_a_decode_bound_recipe(threads, busy, load, expected):
    import mxnet as mx

    from helpers import REPO
    from research.config import load_recipe
    from research.bench.plan import lift_hint

    recipe = load_recipe(REPO / "recipes/smoke/squeezenet_tiny.yaml", [f"data.preprocess_threads={threads}"])
    figures = {"bottleneck": "data", "margin": 2.0, "cores": 2, "data_busy_cores": busy, "load_average": load}
    assert expected in lift_hint(recipe, [mx.cpu()], figures)
