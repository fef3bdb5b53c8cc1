"""`lstmvision detect {train,validate,predict,scenes}`: object detection and instance segmentation with
torchvision's detectors on any backbone, on COCO-layout data."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lstmvision.cli._common import add_overwrite_argument, add_scene_arguments
from lstmvision.cli.train import DEFAULT_RECIPES, add_train_arguments, run_task_training

ACTIONS = {
    "train": "train Faster R-CNN, RetinaNet, FCOS or Mask R-CNN on a backbone (registered name or timm:NAME)",
    "validate": "COCO box AP (and mask AP for Mask R-CNN) of a trained detector on a COCO split",
    "predict": "a COCO results JSON for a split or for image files, and pictures of the detections",
    "scenes": "write the Fashion-MNIST detection scenes (COCO layout, boxes and instance masks) from a seed",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in ACTIONS.items():
        q = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        globals()[f"_add_{name}"](q)


def _add_train(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p, detect=True)
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(task="detect")
    p.epilog = ("Default recipe detect-small (CPU, Fashion-MNIST scenes); detect-cpu samples fewer proposals and RoIs "
                "(faster on a small CPU); maskrcnn-coco-1x is the 1x COCO schedule. "
                "--data is a COCO-layout folder (annotations/instances_<split>.json, <split>/). --model names the "
                "backbone; --initial-checkpoint PATH loads classification weights into it (head dropped) or "
                "fine-tunes a detector checkpoint (the whole detector; new class outputs if the classes differ), "
                "--pretrained the released weights of its tag (registered backbones). "
                "Distributed: torchrun --nproc-per-node N -m lstmvision detect train ...")


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a detect training run (its best/) or checkpoint folder")
    p.add_argument("--workers", "-j", type=int, default=0, help="data-loader workers")
    p.add_argument("--strict-images", action="store_true", help="an unreadable image is an error (default: skipped)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")


def _add_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="COCO-layout folder (annotations/instances_<split>.json, <split>/)")
    p.add_argument("--split", help="the split to evaluate (default: the run's --val-split, e.g. val2017)")
    p.add_argument("--limit-val", type=int, help="evaluate a fixed random subset of N images (as train's)")
    p.add_argument("--results-file", metavar="PATH",
                   help="also write the result to PATH: CSV (one header row, one result row) if it ends in .csv, "
                        "JSON if .json")
    add_overwrite_argument(p, "an existing --results-file")
    _add_run_arguments(p)


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="*", help="image files or folders (searched recursively); or --data and --split")
    p.add_argument("--data", help="COCO-layout folder: predict its --split instead of image files")
    p.add_argument("--split", help="the split of --data (default: the run's --val-split, e.g. val2017)")
    p.add_argument("--limit", type=int, help="with --data: a fixed random subset of N images (seed 0)")
    p.add_argument("--output", "-o", metavar="FILE.json",
                   help="COCO results file: image_id, category_id (the data's own ids), bbox (x, y, w, h), score "
                        "and for Mask R-CNN segmentation (RLE); image files also get file_name")
    p.add_argument("--save-vis", metavar="DIR", help="draw the detections on each image into DIR/<stem>.png")
    p.add_argument("--vis-threshold", type=float, default=0.3, help="lowest score drawn (default %(default)s)")
    add_overwrite_argument(p)
    _add_run_arguments(p)


def _add_scenes(p: argparse.ArgumentParser) -> None:
    add_scene_arguments(p, "COCO layout: train2017, val2017", train=1000, val=100, size=128)


def run(args: argparse.Namespace) -> int:
    return globals()[f"_run_{args.action}"](args)


def _run_train(args: argparse.Namespace) -> int:
    return run_task_training(args, "detect", DEFAULT_RECIPES["detect"], "detect train")


def _check_counts(args: argparse.Namespace, *flags: str) -> None:
    for flag in flags:
        value = getattr(args, flag, None)
        least = 0 if flag == "workers" else 1
        if value is not None and value < least:
            kind = "0 or more" if least == 0 else "a positive integer"
            raise ValueError(f"--{flag.replace('_', '-')} must be {kind}, got {value}")


def _load(args: argparse.Namespace):
    from lstmvision.commands.detect import check_detector
    from lstmvision.device import check_amp, choose_device
    from lstmvision.models.loading import create_model

    device = choose_device(args.device, args.workers)
    check_amp(args.amp, device)
    model = create_model(args.checkpoint).eval()
    check_detector(model)
    return model, device


def _run_validate(args: argparse.Namespace) -> int:
    from lstmvision.cli._common import weights_reads
    from lstmvision.cli.validate import check_results_file, results_text
    from lstmvision.commands.detect import detection_table, validate_detection
    from lstmvision.outputs import write_text

    _check_counts(args, "limit_val", "workers")
    out = check_results_file(args, [Path(args.data), *weights_reads(args)])
    model, device = _load(args)
    result = validate_detection(model, args.data, device, args.split, args.amp, args.limit_val, args.workers,
                                args.strict_images)
    result["checkpoint"] = args.checkpoint
    print(detection_table(result), end="")
    if out is not None:
        write_text(out, results_text(result, out.suffix))
        print(f"detect validate: results written to {out}")
    return 0


def _predict_inputs(args: argparse.Namespace) -> list[Path]:
    """The image files to predict (none with --data), refused in one line when missing or mixed with --data."""
    from lstmvision.data.images import IMAGE_EXTENSIONS, list_images
    from lstmvision.outputs import check_output_folder, outside

    if args.data and args.images:
        raise ValueError("give image files or --data (with --split), not both")
    if not args.data and not args.images:
        raise ValueError("give image files or folders, or --data DIR (with --split) to predict a COCO split")
    if args.data:
        return []
    missing = [p for p in args.images if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"image not found: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                    if len(missing) > 1 else ""))
    if args.save_vis:  # not the images' folder: the next run would read the pictures as images
        check_output_folder(args.save_vis, "--save-vis", [Path(p) for p in args.images if Path(p).is_dir()])
    # a folder's images, not the pictures of an earlier run written inside it
    files = [f for item in map(Path, args.images) for f in (outside(list_images(item), args.save_vis)
                                                           if item.is_dir() else [item])]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {' '.join(args.images)}")
    return files


def _predict_reads(args: argparse.Namespace, files: list[Path]) -> list[Path]:
    """What `detect predict` reads: the data folder or the image files and folders, and the checkpoint."""
    from lstmvision.cli._common import weights_reads

    return [*([Path(args.data)] if args.data else [*files, *map(Path, args.images)]), *weights_reads(args)]


def _check_results_output(args: argparse.Namespace, reads: list[Path]) -> Path | None:
    """--output: a .json name that replaces nothing the command reads and no earlier results without
    --overwrite."""
    from lstmvision.outputs import check_outputs

    if args.output is None:
        return None
    out = Path(args.output)
    if out.suffix.lower() != ".json":
        raise ValueError(f"--output {out}: a COCO results file is JSON; give a name ending in .json")
    check_outputs([out], reads, args.overwrite)
    return out


def _run_predict(args: argparse.Namespace) -> int:
    from lstmvision.commands.detect import predict_files, predict_split
    from lstmvision.outputs import check_output_folder, write_text

    _check_counts(args, "limit", "workers")
    if not 0 <= args.vis_threshold <= 1:
        raise ValueError(f"--vis-threshold must be in [0, 1], got {args.vis_threshold}")
    if args.output is None and args.save_vis is None:
        raise ValueError("give --output FILE.json (COCO results) and/or --save-vis DIR (pictures)")
    if args.limit is not None and not args.data:
        raise ValueError("--limit goes with --data (a split); give fewer image files instead")
    files = _predict_inputs(args)
    reads = _predict_reads(args, files)
    out = _check_results_output(args, reads)
    if args.save_vis:
        check_output_folder(args.save_vis, "--save-vis", [r for r in reads if r.is_dir()])
    model, device = _load(args)
    if args.data:
        results, n, skipped = predict_split(model, args.data, device, args.split, args.amp, args.limit, args.workers,
                                            args.strict_images, args.save_vis, args.overwrite, args.vis_threshold)
    else:
        results, n, skipped = predict_files(model, files, device, args.amp, args.strict_images, args.save_vis,
                                            args.overwrite, args.vis_threshold)
    if skipped:
        print(f"detect predict: skipped {skipped} unreadable image(s)", file=sys.stderr)
    if not n:
        raise ValueError("none of the images could be read")
    if out is not None:
        write_text(out, json.dumps(results))
    where = " and ".join(str(p) for p in (out, args.save_vis) if p)
    print(f"detect predict: {len(results)} detections on {n} images -> {where}")
    return 0


def _run_scenes(args: argparse.Namespace) -> int:
    from lstmvision.cli._common import data_reads
    from lstmvision.data.scenes import make_detection_scenes
    from lstmvision.outputs import check_output_folder

    for flag in ("train", "val", "max_objects"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(args, flag)}")
    if args.size < 32:
        raise ValueError(f"--size must be at least 32, got {args.size}")
    check_output_folder(args.output, "--output", data_reads(args.source))  # never inside the garments
    info = make_detection_scenes(args.output, n_train=args.train, n_val=args.val, size=args.size, seed=args.seed,
                                 source=args.source, max_objects=args.max_objects)
    counts = info.get("counts", {})
    print(f"detect scenes: {args.output} (" + ", ".join(
        f"{split}: {c['images']} images, {c['instances']} instances" for split, c in counts.items()) + "; COCO layout)")
    return 0
