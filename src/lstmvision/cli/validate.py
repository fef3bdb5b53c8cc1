"""`lstmvision validate`: argparse glue for `lstmvision.commands.validate.validate`."""
from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

RESULTS_FORMATS = (".csv", ".json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from lstmvision.cli._common import add_model_arguments, add_overwrite_argument

    add_model_arguments(p)
    p.add_argument("--data", help="ImageFolder tree (val/ or validation/ is used), a class folder, MNIST idx "
                                  "files (the t10k test set), or wds:/hfds:/hfids: shards (their validation split, "
                                  "or hfds:DIR:SPLIT); default: $LSTMVISION_DATA or Fashion-MNIST")
    p.add_argument("--limit-val", type=int, help="evaluate a fixed random subset of N images (the same N images "
                                                 "as `train --limit-val N`)")
    p.add_argument("--limit", dest="limit_val", type=int, help=argparse.SUPPRESS)  # train's name is --limit-val
    p.add_argument("--results-file", metavar="PATH",
                   help="also write the result to PATH: CSV (one header row, one result row) if it ends in .csv, "
                        "JSON if .json")
    p.add_argument("--strict-images", action="store_true", help="an unreadable image is an error")
    add_overwrite_argument(p, "an existing --results-file")


def check_results_file(args: argparse.Namespace, reads: list[Path]) -> Path | None:
    """--results-file, refused before any evaluation when its format is unknown, it cannot be written, it would
    replace one of `reads` (the data, the checkpoint) or, without --overwrite, an existing file."""
    from lstmvision.outputs import check_outputs

    if not args.results_file:
        return None
    out = Path(args.results_file)
    if out.suffix.lower() not in RESULTS_FORMATS:
        raise ValueError(f"--results-file {out}: the name must end in .csv or .json (the format written)")
    check_outputs([out], reads, args.overwrite)
    return out


def results_text(result: dict[str, Any], suffix: str) -> str:
    if suffix.lower() == ".json":
        return json.dumps(result, indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(result), lineterminator="\n")
    writer.writeheader()
    writer.writerow(result)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    from lstmvision.cli._common import (
        check_counts,
        check_task,
        data_reads,
        model_from_args,
        warn_random_weights,
        weights_reads,
    )
    from lstmvision.commands.validate import validate
    from lstmvision.device import choose_device
    from lstmvision.outputs import write_text

    check_counts(args)
    out = check_results_file(args, data_reads(args.data) + weights_reads(args))
    model = model_from_args(args)
    check_task(model, "validate")
    warn_random_weights(model)
    device = choose_device(args.device, args.workers)
    metrics = validate(model, args.data, args.limit_val, args.batch_size, args.workers, device, args.amp,
                       args.img_size, args.crop_pct, args.interpolation, args.strict_images)
    weights = args.checkpoint or args.initial_checkpoint or getattr(model, "weights_source", None)
    result = dict(model=metrics.pop("model"), checkpoint=weights, **metrics)
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    if out is not None:
        write_text(out, results_text(result, out.suffix))
        print(f"validate: results written to {out}")
    return 0
