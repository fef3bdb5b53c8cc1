"""`lstmvision validate`: argparse glue for `lstmvision.validate.validate`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from lstmvision.cli._common import add_model_arguments

    add_model_arguments(p)
    p.add_argument("--data", help="ImageFolder tree (val/ or validation/ is used), a class folder, or MNIST idx "
                                  "files (the t10k test set); default: $LSTMVISION_DATA or Fashion-MNIST")
    p.add_argument("--limit-val", type=int, help="evaluate a fixed random subset of N images")
    p.add_argument("--limit", dest="limit_val", type=int, help=argparse.SUPPRESS)  # train's name is --limit-val
    p.add_argument("--results-file", help="also write the result as JSON to this file")
    p.add_argument("--strict-images", action="store_true", help="an unreadable image is an error")


def run(args: argparse.Namespace) -> int:
    from lstmvision.cli._common import model_from_args
    from lstmvision.commands.validate import validate
    from lstmvision.device import choose_device
    from lstmvision.weights import atomic_write

    model = model_from_args(args)
    device = choose_device(args.device, args.workers)
    metrics = validate(model, args.data, args.limit_val, args.batch_size, args.workers, device, args.amp,
                       args.img_size, args.crop_pct, args.interpolation, args.strict_images)
    result = dict(model=metrics.pop("model"), checkpoint=args.checkpoint or args.pretrained, **metrics)
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    if args.results_file:
        out = Path(args.results_file)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda p: Path(p).write_text(json.dumps(result, indent=2)))
        print(f"validate: results written to {out}")
    return 0
