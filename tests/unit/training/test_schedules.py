"""lr schedules: the values a user would check at the boundaries."""
import math

import pytest

from research.config import TrainConfig
from research.training.schedules import lr_at, scaled_lr


def make(**kw):
    return TrainConfig(epochs=kw.pop("epochs", 80), lr=0.01, batch_size=128, **kw)


def test_reference_step_schedule():
    train = make(lr_steps=[50, 65, 75])
    assert lr_at(0, 0.01, train) == 0.01
    assert lr_at(49.99, 0.01, train) == 0.01
    assert lr_at(50, 0.01, train) == pytest.approx(1e-3)
    assert lr_at(70, 0.01, train) == pytest.approx(1e-4)
    assert lr_at(79.5, 0.01, train) == pytest.approx(1e-5)


def test_warmup_is_linear_then_schedule():
    train = make(lr_schedule="cosine", warmup_epochs=5, epochs=105)
    assert lr_at(0, 0.4, train) == 0
    assert lr_at(2.5, 0.4, train) == pytest.approx(0.2)
    assert lr_at(5, 0.4, train) == pytest.approx(0.4)
    assert lr_at(55, 0.4, train) == pytest.approx(0.2)
    assert lr_at(105, 0.4, train) == pytest.approx(0, abs=1e-12)


def test_poly_and_constant():
    assert lr_at(40, 1.0, make(lr_schedule="poly", lr_power=2.0)) == pytest.approx(0.25)
    assert lr_at(79, 1.0, make(lr_schedule="constant")) == 1.0


def test_cosine_is_monotone():
    train = make(lr_schedule="cosine")
    values = [lr_at(e / 10, 1.0, train) for e in range(0, 800)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert math.isclose(values[0], 1.0)


def test_linear_scaling_rule():
    assert scaled_lr(make(), 256) == pytest.approx(0.02)
    assert scaled_lr(make(base_batch_size=256), 256) == pytest.approx(0.01)
