"""Top-1/top-5 of a trained run on a .rec, centre crop and 10-crop:
python tools/evaluate.py runs/squeezenet_imagenet --rec data/imagenet/train_val.rec [--gpus 0,1]."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.errors import ExitCode, UserError, exit_status_help, tool_exit  # noqa: E402
from research.devices import set_cpu_threads  # noqa: E402  (before mxnet is imported)

set_cpu_threads()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Evaluate a trained net on a RecordIO file: top-1/top-5 with the centre crop (the "
                    "training loop's val pipeline) and with 10-crop oversampling (4 corners + centre and "
                    "their mirrors, softmax averaged). Prints a table and adds the figures to the MLflow run "
                    "that trained the net (val/top1_center, val/top5_center, val/top1_10crop, val/top5_10crop) "
                    "at the checkpoint's epoch.",
        epilog=exit_status_help(ExitCode.OK, (ExitCode.USER_ERROR, "a user error (no checkpoint, missing .rec, "
                                                                    "bad --gpus)")))
    parser.add_argument("source", help="a run directory written by tools/train.py (its newest checkpoint "
                                       "is used), one checkpoint file (.../checkpoints/step-*.ckpt, best.ckpt), "
                                       "or a recipe whose net.pretrained names the weights (e.g. "
                                       "recipes/squeezenet1.0_gluoncv.yaml: GluonCV's ImageNet weights)")
    parser.add_argument("--rec", required=True,
                        help="labeled .rec (with its .idx) to evaluate on, e.g. data/imagenet/train_val.rec")
    parser.add_argument("--gpus", default=None, help="comma-separated GPU ids, e.g. 0,1; omit for the CPU")
    parser.add_argument("--crops", default="1,10",
                        help="which evaluations: 1 (centre crop), 10 (10-crop) or 1,10 (default)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch over all devices "
                        "(10-crop runs 10 passes of this size; default 64)")
    parser.add_argument("--no-log", action="store_true", help="print only; do not write to MLflow")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        crops = sorted({int(c) for c in args.crops.split(",") if c.strip()})
        if not crops or set(crops) - {1, 10} or args.batch_size < 1:
            raise ValueError
    except ValueError:
        raise UserError(f"--crops {args.crops!r} --batch-size {args.batch_size}: crops are 1, 10 or 1,10 and the "
                        f"batch size a positive integer") from None
    from research.devices import get_contexts
    from research.evaluation.crops import evaluate_rec, load_trained, log_to_run

    ctxs = get_contexts(args.gpus)
    trained = load_trained(args.source, ctxs)
    metrics = evaluate_rec(trained, args.rec, ctxs, crops, args.batch_size)
    mid = " (mid-epoch checkpoint)" if trained.mid_epoch else ""
    print(f"{trained.recipe.net.name} from {trained.checkpoint}, epoch {trained.epoch}{mid}, on {args.rec}")
    print(f"{'':<12} {'top-1':>8} {'top-5':>8} {'images':>8}")
    for name, label in (("center", "centre crop"), ("10crop", "10-crop")):
        if f"val/top1_{name}" in metrics:
            print(f"{label:<12} {metrics[f'val/top1_{name}']:>8.2%} {metrics[f'val/top5_{name}']:>8.2%} "
                  f"{metrics[f'count_{name}']:>8}")
    if not args.no_log:
        run_id = log_to_run(trained, metrics, args.rec)
        if run_id:
            print(f"logged to MLflow run {run_id} at step {trained.epoch}")
    return 0


if __name__ == "__main__":
    tool_exit(main)
