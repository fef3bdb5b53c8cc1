"""`lstmvision validate`: top-1, top-5 and loss of a model on a dataset's validation split."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from lstmvision.cli._common import add_model_arguments

    add_model_arguments(p)
    p.add_argument("--data", help="ImageFolder tree (val/ or validation/ is used), a class folder, or MNIST idx "
                                  "files (the t10k test set); default: $LSTMVISION_DATA or Fashion-MNIST")
    p.add_argument("--limit", type=int, help="evaluate a fixed random subset of N images")
    p.add_argument("--results-file", default="validate_results.json", help="where the JSON result is written")
    p.add_argument("--strict-images", action="store_true", help="an unreadable image is an error")


def run(args: argparse.Namespace) -> int:
    import torch

    from lstmvision.data import BadImageCounter, build_loader, create_eval_transform, limit, resolve_dataset
    from lstmvision.engine.evaluate import evaluate
    from lstmvision.cli._common import data_settings, device_of, load_model
    from lstmvision.weights import atomic_write

    if args.batch_size < 1:
        raise ValueError("--batch-size must be a positive integer")
    model = load_model(args)
    device = device_of(args)
    s = data_settings(model, args)
    class_names = getattr(model, "class_names", None)
    ds = resolve_dataset(args.data, "val", img_mode=s["img_mode"], class_names=class_names)
    if model.num_classes < len(ds.class_names):
        raise ValueError(f"the data has {len(ds.class_names)} classes but the model predicts {model.num_classes}")
    ds = limit(ds, args.limit)
    tf = create_eval_transform(s["input_size"], s["mean"], s["std"], s["crop_pct"], s["interpolation"])
    loader = build_loader(ds, tf, args.batch_size, training=False, workers=args.workers)
    t0 = time.time()
    bad = BadImageCounter(strict=args.strict_images)
    m = evaluate(model.to(device), loader, device, args.amp, bad=bad)
    result = dict(
        model=getattr(model, "model_name", type(model).__name__), checkpoint=args.checkpoint or args.pretrained,
        data=str(args.data or "default (Fashion-MNIST)"), images=m["count"], skipped=m["skipped"],
        top1=round(m["top1"], 4), top1_err=round(100 - m["top1"], 4), top5=round(m["top5"], 4),
        top5_err=round(100 - m["top5"], 4), loss=round(m["loss"], 6),
        param_count=round(sum(p.numel() for p in model.parameters()) / 1e6, 4), img_size=s["input_size"][-1],
        crop_pct=s["crop_pct"], interpolation=s["interpolation"], time_s=round(time.time() - t0, 2),
    )
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    out = Path(args.results_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda p: Path(p).write_text(json.dumps(result, indent=2)))
    print(f"validate: results written to {out}")
    del torch
    return 0
