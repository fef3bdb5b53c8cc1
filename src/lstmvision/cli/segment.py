"""`lstmvision segment {train,validate,predict,scenes}`: semantic segmentation with UperNet on any backbone."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lstmvision.cli._common import add_overwrite_argument, add_scene_arguments
from lstmvision.cli.train import DEFAULT_RECIPES, add_train_arguments, run_task_training

ACTIONS = {
    "train": "train UperNet on a backbone (registered name or timm:NAME) through the training engine",
    "validate": "mIoU / aAcc / mAcc / per-class IoU of a trained segmenter (sliding window, optional TTA)",
    "predict": "segment image files or folders: class-index PNG and a coloured PNG per image",
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
    p.epilog = ("Default recipe upernet-small (CPU, Fashion-MNIST scenes); upernet-ade20k is the ViL paper's ADE20K protocol (§4.3). "
                "--model names the backbone; --initial-checkpoint PATH loads classification weights into it (head "
                "dropped), --pretrained the released weights of its tag (registered backbones). "
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
    add_overwrite_argument(p, "the files of an earlier --output")
    _add_tta(p)


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--checkpoint", required=True, help="a segment training run (its best/) or checkpoint folder")
    p.add_argument("--output", "-o", required=True,
                   help="folder for <stem>.png (class index per pixel) and <stem>_color.png; images of several "
                        "folders keep their folders below the one they share")
    add_overwrite_argument(p, "masks of an earlier run")
    p.add_argument("--strict-images", action="store_true", help="an unreadable image is an error (default: skipped)")
    _add_tta(p)
    p.epilog = ("Two images with one name (x.png, x.jpg) get x.png and x_2.png. Unreadable images are skipped "
                "and counted, as `lstmvision predict` does.")


def _add_scenes(p: argparse.ArgumentParser) -> None:
    add_scene_arguments(p, "ADE20K layout", train=2000, val=200, size=96)


def run(args: argparse.Namespace) -> int:
    return globals()[f"_run_{args.action}"](args)


def _run_train(args: argparse.Namespace) -> int:
    return run_task_training(args, "segment", DEFAULT_RECIPES["segment"], "segment train")


def _load(args: argparse.Namespace):
    from lstmvision.device import check_amp, choose_device
    from lstmvision.models.loading import create_model

    device = choose_device(args.device, getattr(args, "workers", 0))
    check_amp(args.amp, device)
    if any(s <= 0 for s in args.scales):
        raise ValueError(f"--scales must be positive, got {args.scales}")
    return create_model(args.checkpoint).eval(), device


def _run_validate(args: argparse.Namespace) -> int:
    from lstmvision.cli._common import weights_reads
    from lstmvision.commands.segment import save_examples, segmentation_table, validate_segmentation
    from lstmvision.outputs import check_output_folder, check_outputs, write_text

    for flag, least in (("limit_val", 1), ("crop", 1), ("stride", 1), ("examples", 0), ("workers", 0)):
        value = getattr(args, flag)
        if value is not None and value < least:
            kind = "a positive integer" if least else "0 or more"
            raise ValueError(f"--{flag.replace('_', '-')} must be {kind}, got {value}")
    if args.examples and not args.output:
        raise ValueError("--examples needs --output (the picture is written there)")
    if args.output:  # before the evaluation, not after it
        out = check_output_folder(args.output, "--output")
        written = [out / "segment_val.md", out / "segment_val.json"] + ([out / "examples.png"] if args.examples else [])
        check_outputs(written, [Path(args.data), *weights_reads(args)], args.overwrite)
    model, device = _load(args)
    result = validate_segmentation(model, args.data, device, args.amp, args.limit_val, args.scales, args.flip,
                                   args.crop, args.stride, args.base_size, args.workers, args.strict_images,
                                   args.examples)
    examples = result.pop("examples", None)
    result["checkpoint"] = args.checkpoint
    table = segmentation_table(result)
    print(table, end="")
    if args.output:
        write_text(out / "segment_val.md", table)
        write_text(out / "segment_val.json", json.dumps(result, indent=2))
        if examples:
            save_examples(examples, model, out / "examples.png", title=f"{getattr(model, 'label', '')}: mIoU "
                                                                       f"{result['miou']:.1f}")
        print(f"segment validate: written to {out}")
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    import sys

    from lstmvision.cli._common import weights_reads
    from lstmvision.commands.segment import check_mask_targets, mask_targets, predict_masks
    from lstmvision.data.images import IMAGE_EXTENSIONS, list_images
    from lstmvision.outputs import check_output_folder, outside

    missing = [p for p in args.images if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"image not found: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                    if len(missing) > 1 else ""))
    # not among the images: the next run would read the masks as images
    check_output_folder(args.output, "--output", [Path(p) for p in args.images if Path(p).is_dir()])
    files = [f for item in map(Path, args.images) for f in (outside(list_images(item), args.output)
                                                           if item.is_dir() else [item])]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {' '.join(args.images)}")
    # every output name before the model is loaded: no input replaced, no name twice, no earlier masks lost
    check_mask_targets(mask_targets(files, args.output), args.overwrite, weights_reads(args))
    model, device = _load(args)
    rows, skipped = predict_masks(model, files, device, args.output, args.amp, args.scales, args.flip,
                                  args.overwrite, args.strict_images)
    for row in rows:
        classes = ", ".join(f"{name} {pct}%" for name, pct in row["classes"])
        print(f"{row['image']} -> {row['mask']} ({classes})")
    if skipped:
        print(f"segment predict: skipped {skipped} unreadable image(s)", file=sys.stderr)
    if not rows:
        raise ValueError("none of the images could be read")
    return 0


def _run_scenes(args: argparse.Namespace) -> int:
    from lstmvision.cli._common import data_reads
    from lstmvision.data.scenes import make_scenes
    from lstmvision.outputs import check_output_folder

    for flag in ("train", "val", "size", "max_objects"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(args, flag)}")
    check_output_folder(args.output, "--output", data_reads(args.source))  # never inside the garments
    info = make_scenes(args.output, n_train=args.train, n_val=args.val, size=args.size, seed=args.seed,
                       source=args.source, max_objects=args.max_objects)
    print(f"segment scenes: {args.output} ({info.get('n_train', args.train)} training + "
          f"{info.get('n_val', args.val)} validation scenes, ADE20K layout)")
    return 0
