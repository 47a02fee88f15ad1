"""The transfer job: cached backbone features -> grid-searched logistic regression -> held-out
report -> Kaggle submission, all in one MLflow run.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from .. import atomic
from ..cli import Resume
from ..config import Recipe, RecordData
from ..data.recordio import check_labels, open_record_files, read_record_headers
from ..metrics import VAL_ACCURACY, VAL_LOG_LOSS, VAL_TOP1
from ..tracking import Tracker, run_url, ui_command
from ..training.lifecycle import Lifecycle
from ..training.modes import Modes
from . import classifier
from .cache import cache_key, cache_path, load_features, save_features
from .features import (Features, TransferError, check_test_ids, extract_features, feature_block, load_backbone,
                       parse_layer, weights_id)

log = logging.getLogger("research.transfer")
SPLITS = {"data.train_rec": "train", "data.val_rec": "val", "transfer.test_rec": "test"}   # recipe key -> split


def check_transfer(recipe: Recipe) -> None:
    """Cheap checks before any heavy work; raises TransferError naming the recipe key to fix."""
    cfg, data, origin = recipe.transfer, recipe.data, recipe.source or "recipe"
    if not isinstance(data, RecordData):
        raise TransferError(f"{origin}: task transfer reads its labeled images from data.train_rec and "
                            f"data.val_rec: data.kind must be recordio, not {data.kind}.")
    if isinstance(data.mean, str):
        raise TransferError(f"{origin}: data.mean '{data.mean}': a pretrained backbone expects the mean/std it "
                            f"was trained with (ImageNet: [123.68, 116.779, 103.939] / [58.393, 57.12, 57.375]).")
    if not recipe.net.pretrained:
        raise TransferError(f"{origin}: task transfer needs net.pretrained: a gluoncv model-zoo name (e.g. "
                            f"resnet50_v1) or a .params file (--set net.pretrained=PATH).")
    if cfg.test_rec and not Path(cfg.test_rec).is_file():
        raise TransferError(f"{origin}: transfer.test_rec: {cfg.test_rec} does not exist. Build it with "
                            f"tools/build_rec.py, or --set transfer.test_rec='' to skip the submission.")
    if len(cfg.class_names) != recipe.net.classes:
        raise TransferError(f"{origin}: transfer.class_names has {len(cfg.class_names)} names but net.classes "
                            f"is {recipe.net.classes}.")
    if cfg.cv_folds < 2 or not cfg.cs or min(cfg.cs) <= 0 or not 0 < cfg.clip < 0.5 or cfg.batch_size <= 0:
        raise TransferError(f"{origin}: need transfer.cv_folds >= 2, a non-empty transfer.cs of positive "
                            f"values, 0 < transfer.clip < 0.5 and transfer.batch_size > 0.")
    parse_layer(cfg.layer)


def run_transfer(recipe: Recipe, ctxs: list, output_dir: str | Path, tracker: Tracker) -> dict:
    """Run the whole job; returns the metrics and the paths written (also in output_dir/results.json)."""
    check_transfer(recipe)
    cfg, output_dir, start = recipe.transfer, Path(output_dir), time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    feats, metrics = get_features(recipe, ctxs, tracker)
    train, val = feats["train"], feats["val"]
    _check_labels(train, recipe.data.train_rec, cfg.class_names, cfg.cv_folds)
    _check_labels(val, recipe.data.val_rec, cfg.class_names, 1)

    t = time.perf_counter()
    search = classifier.grid_search(train.x, train.labels, cfg.cs, cfg.cv_folds, cfg.seed)
    metrics["time/grid_search_s"] = time.perf_counter() - t
    best_c = classifier.best_c(search)
    table = classifier.cv_table(search)
    best = next(row for row in table if row["C"] == best_c)
    metrics.update({"cv/best_C": best_c, "cv/best_log_loss": best["mean_log_loss"],
                    "cv/best_accuracy": best["mean_accuracy"]})
    cv_csv = classifier.write_csv(table, output_dir / "cv_results.csv")
    log.info("cross-validation (%d folds) over C %s: best C %g, log loss %.4f, accuracy %.4f",
             cfg.cv_folds, cfg.cs, best_c, best["mean_log_loss"], best["mean_accuracy"])

    report = classifier.holdout_report(search.best_estimator_, val.x, val.labels, cfg.class_names, cfg.clip)
    metrics.update({VAL_ACCURACY: report["accuracy"], VAL_TOP1: report["accuracy"],   # top1: as compare reads runs
                    VAL_LOG_LOSS: report["log_loss"],
                    "val/log_loss_unclipped": report["log_loss_unclipped"]})
    for name, scores in report["per_class"].items():
        metrics.update({f"val/{name}_{key}": scores[key] for key in ("precision", "recall", "f1-score")})
    report_txt = output_dir / "val_report.txt"
    atomic.write_text(report_txt, report["text"])
    log.info("held-out (%d images of %s): accuracy %.4f, log loss %.4f\n%s", len(val.x), recipe.data.val_rec,
             report["accuracy"], report["log_loss"], report["text"])

    paths = {"cv_results": str(cv_csv), "val_report": str(report_txt)}
    if "test" in feats:
        t = time.perf_counter()
        # The submission model sees every labeled image: train and held-out, at the C chosen on train.
        final = classifier.make_classifier(best_c).fit(np.concatenate([train.x, val.x]),
                                                       np.concatenate([train.labels, val.labels]))
        proba = final.predict_proba(feats["test"].x)
        submission = classifier.write_submission(output_dir / cfg.submission, feats["test"].ids, proba,
                                                 cfg.clip, cfg.class_names)
        metrics["time/final_fit_s"] = time.perf_counter() - t
        paths["submission"] = str(submission)
        log.info("submission: %s (%d images)", submission, len(proba))
    metrics["time/total_s"] = time.perf_counter() - start
    results_json = output_dir / "results.json"
    atomic.write_text(results_json, json.dumps({"metrics": metrics, "paths": paths}, indent=1))
    tracker.log_metrics(metrics, step=0)
    for path in (*paths.values(), results_json):
        tracker.log_artifact(path)
    return {**metrics, **paths}


def get_features(recipe: Recipe, ctxs: list, tracker: Tracker) -> tuple[dict[str, Features], dict]:
    """Features of train, val (and test) images: from the cache, else extracted (backbone loaded once)."""
    cfg, data = recipe.transfer, recipe.data
    sources = {"data.train_rec": data.train_rec, "data.val_rec": data.val_rec,
               **({"transfer.test_rec": cfg.test_rec} if cfg.test_rec else {})}
    weights = weights_id(recipe.net.pretrained)
    metrics, feats, todo = {}, {}, {}
    for key, rec in sources.items():
        files = open_record_files(rec, key)        # bad files are named before any heavy work
        if SPLITS[key] == "test":
            check_test_ids(*read_record_headers(files), rec)
        else:
            check_labels(files, recipe.net.classes, key)
        cache = cache_key(recipe.net.name, weights, cfg.layer, rec, data.data_shape, data.resize, data.mean,
                          data.std, labeled=SPLITS[key] != "test")
        path = cache_path(cfg.cache_dir, cache)
        feats[SPLITS[key]] = load_features(path, cache)
        if feats[SPLITS[key]] is None:
            todo[key] = (cache, path)
        else:
            log.info("%s features: read from the cache %s", rec, path)
    tracker.set_tags({f"feature_cache.{SPLITS[key]}": "miss" if key in todo else "hit" for key in sources})
    if todo:
        t = time.perf_counter()
        net = load_backbone(recipe.net.name, recipe.net.pretrained, ctxs)
        block = feature_block(net, cfg.layer, data.data_shape, ctxs[0])
        metrics["time/load_backbone_s"] = time.perf_counter() - t
        for key, (cache, path) in todo.items():
            split = SPLITS[key]
            feats[split] = extract_features(block, sources[key], key, ctxs, data, cfg.batch_size,
                                            labeled=split != "test")
            save_features(path, cache, feats[split])
            metrics[f"time/extract_{split}_s"] = feats[split].seconds
        images = sum(len(feats[SPLITS[key]].x) for key in todo)
        metrics["speed/extract_img_per_s"] = images / sum(feats[SPLITS[key]].seconds for key in todo)
    tracker.log_params({"features.weights": weights, "features.dim": feats["train"].x.shape[1],
                        **{f"features.{split}_images": len(f.x) for split, f in feats.items()}})
    return feats, metrics


def _check_labels(feats: Features, rec: str, class_names: list[str], min_per_class: int) -> None:
    classes, counts = np.unique(feats.labels, return_counts=True)
    valid = set(range(len(class_names)))
    if not set(classes.tolist()) <= valid:
        raise TransferError(f"{rec} has labels {classes.tolist()}; transfer.class_names {class_names} allows "
                            f"0..{len(class_names) - 1}. Is it an unlabeled (test) .rec?")
    if len(classes) < len(valid) or counts.min() < min_per_class:
        found = dict(zip(classes.tolist(), counts.tolist()))
        raise TransferError(f"{rec}: images per label {found}; every class in {class_names} needs at least "
                            f"{max(min_per_class, 1)} (transfer.cv_folds {min_per_class} for the train set).")


def run_transfer_job(recipe: Recipe, ctxs: list, run_dir: Path, argv: list[str], resume: Resume = "auto",
                     interactive: bool = False) -> int:
    """tools/train.py's entry for task transfer: the run directory's lifecycle (lock, run.json,
    status.json, one MLflow run), the job, the exit status. `resume` "fresh" sets the old run aside first;
    the job itself always starts over (its features are cached)."""
    check_transfer(recipe)
    with Lifecycle(Path(run_dir), recipe, argv, Modes(resume, interactive)) as lifecycle:
        tracker = lifecycle.start_tracking(ctxs, tags={"task": "transfer"})
        lifecycle.figures = {"task": "transfer"}
        lifecycle.write_status("running")
        results = run_transfer(recipe, ctxs, lifecycle.run_dir, tracker)
        lifecycle.figures.update(val_top1=results[VAL_ACCURACY], val_log_loss=results[VAL_LOG_LOSS])
        lifecycle.finish()
    print(f"\nheld-out accuracy {results['val/accuracy']:.4f}, log loss {results['val/log_loss']:.4f} "
          f"(best C {results['cv/best_C']:g}). Run directory: {run_dir}")
    if "submission" in results:
        print(f"Kaggle submission: {results['submission']}")
    if tracker.enabled:
        print(f"MLflow run {tracker.run_id}. Open the UI with:\n  {ui_command()}\nthen browse "
              f"{run_url(tracker.run_id, tracker.experiment_id)}")
    return lifecycle.exit_code
