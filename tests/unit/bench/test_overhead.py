"""The checkpoint/tracking cost benchmark measures real writes of the recipe's net (that MLflow calls are queued
off the loop's thread is tests/unit/tracking/test_tracker.py's; no timing is asserted here)."""
from pathlib import Path

from research.config import load_recipe
from research.bench.overhead import benchmark_overhead

REPO = Path(__file__).resolve().parents[3]


def test_overhead_figures_for_lenet(tmp_path):
    result = benchmark_overhead(load_recipe(REPO / "recipes/lenet_digits.yaml"), repeats=2, track=True)
    # LeNet has 431,080 float32 weights; weights + momentum make a file of about 3.4 MB
    assert 3.0 < result["checkpoint_mb"] < 4.0
    assert 0 < result["checkpoint_loop_s"] <= result["checkpoint_total_s"]      # the wait for the disk comes after
    assert all(result[key] > 0 for key in ("checkpoint_sync_s", "tracking_loop_s", "tracking_store_s", "report_loop_s"))
