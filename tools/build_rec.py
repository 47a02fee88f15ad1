"""Pack images into RecordIO: python tools/build_rec.py SRC OUT_PREFIX [--layout ...] [--resize 256]."""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.errors import ExitCode, UserError, tool_exit  # noqa: E402

SHOWN = 20     # bad files printed; the report file lists them all


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write OUT_PREFIX.lst/.rec/.idx in im2rec's format (MXNet's ImageRecordIter and gluon's "
                    "ImageRecordDataset read them), OUT_PREFIX.classes.json (label -> class name), "
                    "OUT_PREFIX.mean.json (RGB mean/std of the images, for data.mean: rec) and "
                    "OUT_PREFIX.report.json (every converted or skipped file). Files keep a .partial "
                    "suffix until the build is complete.",
        epilog="Exit status: 0 done (bad files are converted or skipped and reported), 1 --verify found "
               "damaged records, 2 a user error (also an unwritable output or a full disk: the file is named "
               "and no .partial file is left).")
    parser.add_argument("src", type=Path, nargs="?", help="source folder of images")
    parser.add_argument("out_prefix", type=Path, nargs="?", help="output prefix, e.g. data/imagenet/train")
    parser.add_argument("--verify", type=Path, metavar="REC",
                        help="only check REC against its .idx (as training does before reading it) and list "
                             "every damaged record by index and byte offset")
    parser.add_argument("--layout", default="folders",
                        choices=["folders", "imagenet-train", "imagenet-val", "dogs-vs-cats"],
                        help="folders: SRC/<class>/<image>, labels by sorted folder name (default); "
                             "imagenet-train: SRC/<synset>/<image>; imagenet-val: flat SRC with --ground-truth; "
                             "dogs-vs-cats: cat.N.jpg/dog.N.jpg -> 0/1, or the test folder N.jpg -> "
                             "record id N, label -1")
    parser.add_argument("--resize", type=int, default=0,
                        help="resize the shorter side to this many pixels (0: keep; clean JPEGs keep their bytes)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded images (default 95)")
    parser.add_argument("--holdout", type=int, default=0,
                        help="hold out this many images, stratified by class, into OUT_PREFIX_val.* (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the record order and the hold-out (default 0)")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes (default: one per core)")
    parser.add_argument("--ground-truth", type=Path, help="imagenet-val: LOC_val_solution.csv, a file of one "
                        "synset per line, or ILSVRC2012_validation_ground_truth.txt (with --synset-order)")
    parser.add_argument("--synset-order", type=Path,
                        help="imagenet-val: the synsets in ILSVRC2012_ID order, one per line (from meta.mat)")
    parser.add_argument("--classes", type=Path, help="imagenet-val: the train build's OUT_PREFIX.classes.json, "
                        "whose label order to follow (default: sorted synsets, as imagenet-train gives)")
    parser.add_argument("--synset-words", type=Path,
                        help="'n01440764 tench, Tinca tinca' lines (LOC_synset_mapping.txt): human class names")
    parser.add_argument("--follow-links", action="store_true",
                        help="pack what symbolic links leading out of SRC point to (default: refuse them; links "
                             "that stay inside SRC are followed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.verify is None and args.out_prefix is None:
        parser.error("SRC and OUT_PREFIX are required (or --verify REC)")
    return args


def verify(rec: Path) -> int:
    from research.data.verify import remember, stamp, walk

    idx = rec.with_suffix(".idx")
    for path in (rec, idx):
        if not path.is_file():
            raise UserError(f"--verify: {path} not found")
    stamps = [stamp(rec), stamp(idx)]
    try:
        damage, labels = walk(rec, idx)
    except UserError as err:            # an .idx that is not one: bad lines, empty, past the end of the .rec
        raise UserError(f"--verify: {err}") from None
    print_some(map(str, damage), len(damage))
    if damage:
        print(f"{rec}: {len(damage)} damaged record(s); copy it again or rebuild it with tools/build_rec.py")
        return ExitCode.FAILED           # as its --help says: 1, --verify found damaged records
    remember(rec, idx, labels, stamps)
    print(f"{rec}: {labels.records} records, none damaged, labels {labels.low[0]:g} to {labels.high[0]:g} "
          f"(RecordIO keeps no checksum of the image bytes: this checks the record framing and headers)")
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.verify is not None:
        return verify(args.verify)
    from research.data.build import build_rec

    for option in ("ground_truth", "synset_order", "classes", "synset_words"):
        path = getattr(args, option)
        if path is not None and not path.is_file():
            raise UserError(f"--{option.replace('_', '-')} {path}: file not found")
    # A LayoutError or UserError (an unwritable output, a full disk: partials removed) is one line, exit 2.
    result = build_rec(args.src, args.out_prefix, args.layout, args.resize, args.quality, args.holdout,
                       args.seed, args.workers, args.ground_truth, args.synset_order, args.classes,
                       args.synset_words, progress=not args.quiet, follow_links=args.follow_links)
    for prefix, count in result.sets.items():
        print(f"wrote {prefix}.rec: {count} images")
    for kind, entries in (("converted", result.converted), ("skipped", result.skipped)):
        print(f"{kind}: {len(entries)} file(s)")
        print_some((f"{entry['file']}: {entry['problem']}" for entry in entries), len(entries))
    print(f"report: {result.report}")
    return 0



def print_some(lines, count: int) -> None:
    """The first SHOWN lines, indented, then how many more there are."""
    for line in itertools.islice(lines, SHOWN):
        print(f"  {line}")
    if count > SHOWN:
        print(f"  ... {count - SHOWN} more")

if __name__ == "__main__":
    tool_exit(main)
