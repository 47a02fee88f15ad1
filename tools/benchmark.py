"""Measure speed: python tools/benchmark.py plan recipes/squeezenet_imagenet.yaml [--gpus 0] [--price-per-hour 3.06]."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.devices import set_cpu_threads  # noqa: E402  (before mxnet is imported, as tools/train.py)
from research.errors import UserError, tool_exit  # noqa: E402

set_cpu_threads()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure speed. 'plan': before a long run, the recipe's data alone, model alone and both "
                    "together on these devices, the bottleneck, epoch and run time and cost (docs/long-runs.md). "
                    "'train': the trainer against a bare hybridized forward/backward/step loop on synthetic data at the recipe's shape and batch, per device "
                    "count (model speed, without data), and GluonCV's model-zoo net of the same architecture in that loop. 'data': the recipe's RecordIO train pipeline (decode + "
                    "augment) against a bare ImageRecordIter, per decode-thread count: compare with the "
                    "images/s the GPUs train at to know whether they will starve. 'checkpoint': seconds an "
                    "epoch end spends on checkpoints and MLflow for the recipe's net. 'rec': tools/build_rec.py against "
                    "MXNet's tools/im2rec.py packing the same folder, alternating.",
        epilog="Exit status: 0 done, 2 a user error (bad recipe, missing .rec). Figures on a shared or "
               "busy machine are noisy: run twice.")
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="data / model / together img/s, bottleneck, run time and cost")
    plan.add_argument("recipe", help="recipe YAML: its data, net, batch, augmentation and epochs are used")
    plan.add_argument("--gpus", default=None, help="GPU ids as for tools/train.py, e.g. 0,1; omit for the CPU")
    plan.add_argument("--price-per-hour", type=float, default=None, help="machine price, e.g. 3.06, for the cost")
    plan.add_argument("--seconds", type=float, default=60.0, help="total measuring time, a third per figure "
                                                                 "(default 60; model setup comes on top)")
    plan.add_argument("--epoch-images", type=int, default=None,
                      help="images per epoch instead of the train set's (e.g. 1281167 on a small sample of ImageNet)")
    plan.add_argument("--format", choices=("text", "json"), default="text", help="json: the figures for scripts")
    plan.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a recipe value, e.g. --set data.preprocess_threads=4; repeatable")
    data = commands.add_parser("data", help="decode + augment images/s of the recipe's train data")
    data.add_argument("recipe", help="recipe YAML with data.kind: recordio")
    data.add_argument("--threads", default="1,2,4,0",
                      help="comma-separated decode-thread counts to try; 0 = one per core (default 1,2,4,0)")
    data.add_argument("--seconds", type=float, default=10.0, help="seconds measured per row (default 10)")
    data.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a recipe value, e.g. --set train.batch_size=64; repeatable")
    train = commands.add_parser("train", help="trainer vs bare loop vs GluonCV's net, images/s per device count, "
                                              "synthetic data")
    train.add_argument("recipe", help="recipe YAML (its net, batch and data_shape are used; its data is not read)")
    train.add_argument("--gpus", default=None, help="GPU ids, e.g. 0,1: measures 1, then 2 ... devices; "
                                                  "omit for the CPU")
    train.add_argument("--steps", type=int, default=40, help="measured steps per device count (default 40)")
    train.add_argument("--warmup", type=int, default=5, help="steps before measuring (default 5)")
    train.add_argument("--windows", type=int, default=4,
                       help="the steps alternate between trainer and bare loop in this many windows (default 4)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe value, e.g. --set train.batch_size=32; repeatable")
    ckpt = commands.add_parser("checkpoint", help="checkpoint and MLflow cost per epoch end for the recipe's net")
    ckpt.add_argument("recipe", help="recipe YAML (its net and class count are used)")
    ckpt.add_argument("--repeats", type=int, default=5, help="measurements per figure (default 5)")
    ckpt.add_argument("--epoch-seconds", type=float, default=0.0,
                      help="an epoch's duration to express the cost as a share of (e.g. 1680 for SqueezeNet on a V100)")
    rec = commands.add_parser("rec", help="tools/build_rec.py vs MXNet's im2rec.py on a folder: seconds and ratio")
    rec.add_argument("src", help="folder of class sub-folders of images (as tools/build_rec.py --layout folders)")
    rec.add_argument("--resize", type=int, default=256, help="shorter side, as both tools' --resize (default 256)")
    rec.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    rec.add_argument("--workers", type=int, default=2, help="our --workers and im2rec's --num-thread (default 2)")
    rec.add_argument("--repeats", type=int, default=2, help="runs of each tool, alternating (default 2)")
    return parser.parse_args(argv)


def run_plan(args: argparse.Namespace) -> int:
    import json
    import time

    from tqdm import tqdm

    from research.config import load_recipe
    from research.devices import get_contexts
    from research.bench.plan import format_plan, plan

    recipe, ctxs = load_recipe(args.recipe, args.overrides), get_contexts(args.gpus)
    start = time.perf_counter()
    with tqdm(total=round(args.seconds), desc="plan: measuring", unit="s", disable=None) as bar:
        def on_progress() -> None:          # the bar follows the clock
            bar.update(min(round(time.perf_counter() - start), bar.total) - bar.n)
        figures = plan(recipe, ctxs, args.seconds, args.price_per_hour, args.epoch_images, on_progress)
    print(json.dumps(figures, indent=1) if args.format == "json" else format_plan(figures))
    return 0


def run_data(args: argparse.Namespace) -> int:
    from research.config import load_recipe
    from research.bench.data import benchmark_data

    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--threads {args.threads!r}: expected integers such as 1,2,4") from None
    recipe = load_recipe(args.recipe, args.overrides)
    rows = benchmark_data(recipe, threads, args.seconds)
    print(f"{'pipeline':<16} {'threads':>7} {'instances':>9} {'decode_thr':>10} {'img/s':>8} "
          f"{'img/s/thread':>12} {'img/cpu_s':>9}")
    for row in rows:
        print(f"{row['pipeline']:<16} {row['threads']:>7} {row['instances']:>9} {row['decode_threads']:>10} "
              f"{row['img_per_s']:>8.0f} {row['img_per_s_per_thread']:>12.0f} {row['img_per_cpu_s']:>9.0f}")
    print("img/cpu_s: images per CPU-second used by this process = images/s per fully busy core.")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from research.config import load_recipe
    from research.devices import get_contexts
    from research.bench.train import benchmark_train, device_sets, format_rows

    recipe = load_recipe(args.recipe, args.overrides)
    rows = benchmark_train(recipe, device_sets(get_contexts(args.gpus)), args.steps, args.warmup, args.windows)
    print(format_rows(rows))
    print("trainer/bare: the full trainer (splitting, lr, metrics, progress) over a bare loop; goal >= 0.95.")
    return 0


def run_checkpoint(args: argparse.Namespace) -> int:
    from research.config import load_recipe
    from research.bench.overhead import benchmark_overhead

    result = benchmark_overhead(load_recipe(args.recipe), repeats=args.repeats)
    print(f"checkpoint: {result['checkpoint_mb']:.1f} MB; {result['checkpoint_loop_s'] * 1000:.1f} ms on the "
          f"training thread, {result['checkpoint_total_s'] * 1000:.1f} ms until on disk (background write)")
    print(f"MLflow: {result['tracking_loop_s'] * 1000:.2f} ms on the training thread per epoch's metrics, "
          f"{result['tracking_store_s'] * 1000:.1f} ms in the store (background)")
    print(f"in-epoch report (status.json + MLflow iter/, queued): {result['report_loop_s'] * 1000:.2f} ms on the "
          f"training thread every train.log_every batches")
    if args.epoch_seconds:
        share = (result["checkpoint_loop_s"] + result["tracking_loop_s"]) / args.epoch_seconds
        print(f"= {100 * share:.4f}% of a {args.epoch_seconds:.0f} s epoch")
    return 0


def run_rec(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from research.bench.rec import benchmark_rec

    result = benchmark_rec(args.src, args.resize, args.quality, args.workers, args.repeats)
    rows = [[name, ", ".join(f"{t:.1f}" for t in result[f"{key}_s"]), ", ".join(f"{t:.1f}" for t in result[f"{key}_cpu_s"]),
             result[f"{key}_images"], f"{result[f'{key}_mb']:.1f}"]
            for name, key in (("im2rec.py (MXNet)", "im2rec"), ("tools/build_rec.py", "ours"))]
    print(tabulate(rows, headers=["packer", "seconds", "CPU seconds", "images", "MB"]))
    print(f"ours / im2rec speed: {result['ratio']:.2f} wall, {result['cpu_ratio']:.2f} CPU (medians; > 1: ours is "
          f"faster). --resize {args.resize} --quality {args.quality}, {args.workers} workers; im2rec's time leaves "
          f"out its --list step.")
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    commands = {"plan": run_plan, "data": run_data, "train": run_train, "checkpoint": run_checkpoint, "rec": run_rec}
    return commands[args.command](args)


if __name__ == "__main__":
    tool_exit(main)
