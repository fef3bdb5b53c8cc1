"""`lstmvision segment {train,validate,predict,scenes}`: semantic segmentation with UperNet on any backbone."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lstmvision.cli.train import add_train_arguments, list_recipes, print_config, resolve_args, run_training
from lstmvision.engine.recipes import RECIPES

ACTIONS = {
    "train": "train UperNet on a backbone (registered name or timm:NAME) through the training engine",
    "validate": "mIoU / aAcc / mAcc / per-class IoU of a trained segmenter (sliding window, optional TTA)",
    "predict": "segment image files: class-index PNG and a coloured PNG per image",
    "scenes": "write the Fashion-MNIST scenes segmentation set (ADE20K layout) from a seed",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in ACTIONS.items():
        q = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        globals()[f"_add_{name}"](q)


def _add_train(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p, segment=True)
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(task="segment")
    p.epilog = ("Default recipe upernet-small (CPU, Fashion-MNIST scenes); upernet-ade20k is vision-lstm.md §4.3. "
                "--model names the backbone; --pretrained loads classification weights into it. "
                "Distributed: torchrun --nproc-per-node N -m lstmvision segment train ...")


def _add_tta(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scales", type=float, nargs="+", default=[1.0],
                   help="test scales (multi-scale: 0.75 1.0 1.25 1.5 1.75); default 1.0")
    p.add_argument("--flip", action="store_true", help="also average the horizontally flipped image")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")


def _add_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a segment training run (its best/) or checkpoint folder")
    p.add_argument("--data", required=True, help="ADE20K-layout or images/ + masks/ folder (its validation split)")
    p.add_argument("--limit-val", type=int, help="evaluate a fixed random subset of N images")
    p.add_argument("--crop", type=int, help="sliding-window crop (default: the training crop)")
    p.add_argument("--stride", type=int, help="sliding-window stride (default: the training setting)")
    p.add_argument("--base-size", type=int, nargs=2, metavar=("LONG", "SHORT"),
                   help="resize images to fit this scale first (default: the training setting)")
    p.add_argument("--workers", "-j", type=int, default=0)
    p.add_argument("--strict-images", action="store_true", help="an unreadable image or bad mask is an error")
    p.add_argument("--output", "-o", help="write segment_val.md, segment_val.json (and examples.png) here")
    p.add_argument("--examples", type=int, default=0, help="draw the first N images: image | truth | prediction")
    _add_tta(p)


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--checkpoint", required=True, help="a segment training run (its best/) or checkpoint folder")
    p.add_argument("--output", "-o", required=True, help="folder for <stem>.png and <stem>_color.png")
    _add_tta(p)


def _add_scenes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", required=True, help="folder to write (ADE20K layout)")
    p.add_argument("--source", help="Fashion-MNIST idx folder (default: $LSTMVISION_DATA or the Debian package)")
    p.add_argument("--train", type=int, default=2000, help="training scenes (default %(default)s)")
    p.add_argument("--val", type=int, default=200, help="validation scenes (default %(default)s)")
    p.add_argument("--size", type=int, default=96, help="scene side in pixels (default %(default)s)")
    p.add_argument("--max-objects", type=int, default=4, help="garments per scene, at most (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    return globals()[f"_run_{args.action}"](args)


def _run_train(args: argparse.Namespace) -> int:
    if args.list_recipes:
        list_recipes("segment")
        return 0
    if not args.recipe:
        args.recipe = "upernet-small"
    cfg = resolve_args(args)
    if RECIPES[cfg["recipe"]].get("task") != "segment":
        raise ValueError(f"recipe {cfg['recipe']!r} is a classification recipe; use `lstmvision train` "
                         "(segmentation recipes: upernet-small, upernet-ade20k)")
    if args.print_config:
        print_config(cfg)
        return 0
    return run_training(cfg, "segment train")


def _load(args: argparse.Namespace):
    from lstmvision.device import check_amp, choose_device
    from lstmvision.models.loading import load_model

    device = choose_device(args.device, getattr(args, "workers", 0))
    check_amp(args.amp, device)
    if any(s <= 0 for s in args.scales):
        raise ValueError(f"--scales must be positive, got {args.scales}")
    return load_model(args.checkpoint), device


def _run_validate(args: argparse.Namespace) -> int:
    from lstmvision.commands.segment import save_examples, segmentation_table, validate_segmentation
    from lstmvision.weights import atomic_write

    for flag in ("limit_val", "crop", "stride", "examples"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "examples" else 1):
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    if args.examples and not args.output:
        raise ValueError("--examples needs --output (the picture is written there)")
    model, device = _load(args)
    result = validate_segmentation(model, args.data, device, args.amp, args.limit_val, args.scales, args.flip,
                                   args.crop, args.stride, args.base_size, args.workers, args.strict_images,
                                   args.examples)
    examples = result.pop("examples", None)
    result["checkpoint"] = args.checkpoint
    table = segmentation_table(result)
    print(table, end="")
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "segment_val.md", lambda p: Path(p).write_text(table))
        atomic_write(out / "segment_val.json", lambda p: Path(p).write_text(json.dumps(result, indent=2)))
        if examples:
            save_examples(examples, model, out / "examples.png", title=f"{getattr(model, 'label', '')}: mIoU "
                                                                       f"{result['miou']:.1f}")
        print(f"segment validate: written to {out}")
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from lstmvision.commands.segment import predict_masks

    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"image not found: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                    if len(missing) > 1 else ""))
    model, device = _load(args)
    for row in predict_masks(model, args.images, device, args.output, args.amp, args.scales, args.flip):
        classes = ", ".join(f"{name} {pct}%" for name, pct in row["classes"])
        print(f"{row['image']} -> {row['mask']} ({classes})")
    return 0


def _run_scenes(args: argparse.Namespace) -> int:
    from lstmvision.data.segmentation import make_scenes

    for flag in ("train", "val", "size", "max_objects"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(args, flag)}")
    info = make_scenes(args.output, n_train=args.train, n_val=args.val, size=args.size, seed=args.seed,
                       source=args.source, max_objects=args.max_objects)
    print(f"segment scenes: {args.output} ({info.get('n_train', args.train)} training + "
          f"{info.get('n_val', args.val)} validation scenes, ADE20K layout)")
    return 0
