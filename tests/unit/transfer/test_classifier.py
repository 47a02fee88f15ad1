"""Classifier: C chosen by cross-validation, a held-out report, a Kaggle submission file."""
import csv

import numpy as np

from research.transfer import classifier


def blobs(n: int, seed: int, dim: int = 16):
    rng = np.random.RandomState(seed)
    y = np.arange(n) % 2
    return rng.normal(size=(n, dim)) + 1.5 * y[:, None], y


def test_grid_search_then_held_out_report(tmp_path):
    x, y = blobs(200, 0)
    search = classifier.grid_search(x, y, cs=[0.001, 0.1, 10.0], cv_folds=4, seed=0)
    table = classifier.cv_table(search)
    assert [row["C"] for row in table] == [0.001, 0.1, 10.0]
    best = min(table, key=lambda row: row["mean_log_loss"])
    assert classifier.best_c(search) == best["C"] and best["rank"] == 1
    with open(classifier.write_csv(table, tmp_path / "cv.csv")) as handle:
        assert len(list(csv.DictReader(handle))) == 3
    x_val, y_val = blobs(100, 1)
    report = classifier.holdout_report(search.best_estimator_, x_val, y_val, ["cat", "dog"], clip=0.005)
    assert report["accuracy"] > 0.95 and report["log_loss"] < 0.2
    assert set(report["per_class"]) == {"cat", "dog"} and report["per_class"]["dog"]["support"] == 50
    assert "precision" in report["text"]


def test_submission_sorted_by_id_and_clipped(tmp_path):
    ids = np.array([12, 3, 7])
    proba = np.array([[0.0, 1.0], [0.8, 0.2], [0.4, 0.6]])
    path = classifier.write_submission(tmp_path / "s.csv", ids, proba, clip=0.01, class_names=["cat", "dog"])
    rows = list(csv.reader(open(path)))
    assert rows == [["id", "label"], ["3", "0.200000"], ["7", "0.600000"], ["12", "0.990000"]]


def test_submission_with_more_classes_has_a_column_each(tmp_path):
    path = classifier.write_submission(tmp_path / "s.csv", np.array([2, 1]), np.full((2, 3), 1 / 3), 0.005,
                                       ["a", "b", "c"])
    assert open(path).readline().strip() == "id,a,b,c"
