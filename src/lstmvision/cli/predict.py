"""`lstmvision predict`: top-k labels with probabilities for image files or folders, or for the samples of a
dataset (`--data`: folders, idx files, `wds:`/`hfds:`/`hfids:` sources), through `lstmvision.Classifier`, which
applies the model's own preprocessing."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from lstmvision.cli._common import add_model_arguments

    add_model_arguments(p)
    p.add_argument("images", nargs="*", help="image files or folders (searched recursively)")
    p.add_argument("--data", help="instead of images: a dataset (folder, idx files, wds:..., hfds:..., hfids:...), "
                                  "its evaluation split")
    p.add_argument("--limit", type=int, help="with --data: the first N samples only")
    p.add_argument("--topk", "-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON (one object with a list of predictions)")
    p.add_argument("--strict-images", action="store_true", help="an unreadable image is an error")


def run(args: argparse.Namespace) -> int:
    from lstmvision.cli._common import check_counts
    from lstmvision.data.images import IMAGE_EXTENSIONS, list_images

    if args.topk < 1:
        raise ValueError(f"--topk must be at least 1, got {args.topk}")
    check_counts(args)
    if bool(args.data) == bool(args.images):
        raise ValueError("give image files or folders, or --data DATASET, not both" if args.data else
                         "nothing to predict: give image files or folders, or --data DATASET")
    if args.data:
        return predict_data(args)
    files: list[Path] = []
    for item in args.images:
        p = Path(item)
        if p.is_dir():
            files += list_images(p)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {' '.join(args.images)}")
    clf = classifier(args)
    results, skipped = clf.predict_files(files, args.topk, args.batch_size, args.strict_images)
    return report(args, clf, results, skipped)


def predict_data(args: argparse.Namespace) -> int:
    """Predictions for the samples of `--data`'s evaluation split."""
    from lstmvision.data import resolve_dataset

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    clf = classifier(args)
    dataset = resolve_dataset(args.data, "val", img_mode="L" if clf.in_chans == 1 else "RGB")
    results, skipped = clf.predict_dataset(dataset, args.topk, args.batch_size, args.strict_images, args.limit)
    return report(args, clf, results, skipped)


def classifier(args: argparse.Namespace):
    """The model of the command line as a `lstmvision.Classifier` (a classification model, or one clear error)."""
    from lstmvision.cli._common import check_task, model_from_args, warn_random_weights
    from lstmvision.device import choose_device
    from lstmvision.inference import Classifier

    model = model_from_args(args)
    check_task(model, "predict")
    warn_random_weights(model)
    return Classifier(model, device=choose_device(args.device, args.workers), img_size=args.img_size,
                      crop_pct=args.crop_pct, interpolation=args.interpolation)


def report(args: argparse.Namespace, clf, results: list, skipped: int) -> int:
    if skipped:
        print(f"predict: skipped {skipped} unreadable image(s)", file=sys.stderr)
    if args.json:
        print(json.dumps(dict(model=getattr(clf.model, "model_name", None), skipped=skipped, results=results), indent=2))
    else:
        for r in results:
            top = ", ".join(f"{p['label']} {100 * p['prob']:.1f}%" for p in r["predictions"])
            what = r["file"] if "file" in r else f"sample {r['sample']} ({r['label']})"
            print(f"{what}: {top}")
    if not results:
        raise ValueError("none of the images could be read")
    return 0
