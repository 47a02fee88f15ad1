"""Logistic regression on backbone features: C chosen by stratified k-fold cross-validation
(log loss, all cores), a held-out report, and the Kaggle submission file.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, classification_report, log_loss
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .. import atomic


def make_classifier(C: float = 1.0) -> Pipeline:
    """Standardised features, then L2 logistic regression (lbfgs converges on them in few steps)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))


def grid_search(x: np.ndarray, y: np.ndarray, cs: list[float], cv_folds: int, seed: int) -> GridSearchCV:
    """Fit one classifier per C and fold (n_jobs=-1); the best by mean log loss is refit on all of x."""
    search = GridSearchCV(
        make_classifier(), {"logisticregression__C": list(cs)},
        scoring={"log_loss": "neg_log_loss", "accuracy": "accuracy"}, refit="log_loss",
        cv=StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed), n_jobs=-1)
    return search.fit(x, y)


def best_c(search: GridSearchCV) -> float:
    return float(search.best_params_["logisticregression__C"])


def cv_table(search: GridSearchCV) -> list[dict]:
    """One row per C: mean and std over folds of log loss and accuracy, fit time, rank."""
    res = search.cv_results_
    return [{"C": float(c),
             "mean_log_loss": -float(res["mean_test_log_loss"][i]), "std_log_loss": float(res["std_test_log_loss"][i]),
             "mean_accuracy": float(res["mean_test_accuracy"][i]), "std_accuracy": float(res["std_test_accuracy"][i]),
             "mean_fit_s": float(res["mean_fit_time"][i]), "rank": int(res["rank_test_log_loss"][i])}
            for i, c in enumerate(res["param_logisticregression__C"])]


def write_csv(rows: list[dict], path: Path) -> Path:
    with atomic.writing(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def holdout_report(model: Pipeline, x: np.ndarray, y: np.ndarray, class_names: list[str],
                   clip: float) -> dict:
    """Accuracy, log loss (raw and clipped as in the submission) and per-class precision/recall/F1."""
    proba = model.predict_proba(x)
    labels = list(range(len(class_names)))
    clipped = np.clip(proba, clip, 1 - clip)
    clipped /= clipped.sum(axis=1, keepdims=True)
    predicted = proba.argmax(axis=1)
    per_class = classification_report(y, predicted, labels=labels, target_names=class_names,
                                      output_dict=True, zero_division=0)
    return {"accuracy": accuracy_score(y, predicted),
            "log_loss": log_loss(y, clipped, labels=labels),
            "log_loss_unclipped": log_loss(y, proba, labels=labels),
            "per_class": {name: per_class[name] for name in class_names},
            "text": classification_report(y, predicted, labels=labels, target_names=class_names,
                                          digits=4, zero_division=0)}


def write_submission(path: Path, ids: np.ndarray, proba: np.ndarray, clip: float,
                     class_names: list[str]) -> Path:
    """Kaggle CSV sorted by id: `id,label` with label = P(class 1) for two classes, else one column a class.

    Probabilities are clipped to [clip, 1 - clip]: one confident mistake costs log loss
    -log(clip) instead of infinity.
    """
    order = np.argsort(ids, kind="stable")
    proba = np.clip(proba[order], clip, 1 - clip)
    header = ["id", "label"] if len(class_names) == 2 else ["id", *class_names]
    columns = proba[:, 1:] if len(class_names) == 2 else proba
    with atomic.writing(path) as tmp, open(tmp, "w", newline="") as handle:   # never a half-written submission
        writer = csv.writer(handle)
        writer.writerow(header)
        for kaggle_id, row in zip(ids[order], columns):
            writer.writerow([int(kaggle_id), *(f"{p:.6f}" for p in row)])
    return path
