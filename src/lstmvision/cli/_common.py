"""Argparse pieces shared by the subcommands: one vocabulary for naming a model and its weights everywhere, as
timm's train.py / validate.py spell it.

`--model/-m NAME` (a registered name or timm:NAME) with `--pretrained` (the released weights of the name's tag:
sequencer2d_s -> sequencer2d_s.in1k, downloaded or from the cache) or `--initial-checkpoint FILE|FOLDER` (a weights
file, or a save_pretrained / training run folder), or `--checkpoint FOLDER` (a training run folder, whose best/ is
used, or a checkpoint / save_pretrained folder). `--input-size C H W` sets the input channels and size together;
`--img-size N` is the square shortcut. Loading itself is `lstmvision.models.loading.create_model`.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmvision.constants import AMP_MODES, TASK_MODELS

if TYPE_CHECKING:
    import torch

PRETRAINED_HELP = ("the released weights of the model's tag (sequencer2d_s: sequencer2d_s.in1k; downloaded or from "
                   "the cache; list: `lstmvision models --pretrained`)")
INITIAL_CHECKPOINT_HELP = "weights for --model: a weights file, or a save_pretrained / training run folder"


def add_weights_arguments(p: argparse.ArgumentParser, model_help: str = "registered model name or timm:NAME "
                          "(optional with --checkpoint)") -> None:
    p.add_argument("--model", "-m", help=model_help)
    p.add_argument("--pretrained", action="store_true", help=PRETRAINED_HELP)
    p.add_argument("--initial-checkpoint", metavar="PATH", help=INITIAL_CHECKPOINT_HELP)
    p.add_argument("--checkpoint", metavar="PATH",
                   help="a training run folder (uses best/, else last/) or a checkpoint folder")
    p.add_argument("--num-classes", type=int, help="classes of the weights (default: from the checkpoint)")
    p.add_argument("--in-chans", type=int, help="input channels (default: from the checkpoint)")


def add_input_size_arguments(p: argparse.ArgumentParser, what: str = "input size (default: the model's)") -> None:
    """`--input-size C H W` and its square shortcut `--img-size N` (both may be given when they agree)."""
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"),
                   help=f"input channels and size; {what}")
    p.add_argument("--img-size", type=int, help=f"square {what}")


def resolve_input_size(args: argparse.Namespace, square: bool = True) -> None:
    """Fold `--input-size C H W` into `args.in_chans` and `args.img_size` (an int; (H, W) when H != W, which only
    commands that are not `square` take), with one error where it disagrees with --img-size or --in-chans."""
    size = getattr(args, "input_size", None)
    if size is None:
        return
    chans, h, w = size
    if min(size) < 1:
        raise ValueError(f"--input-size takes positive C H W, got {chans} {h} {w}")
    if args.img_size is not None and (h, w) != (args.img_size, args.img_size):
        raise ValueError(f"--input-size {chans} {h} {w} and --img-size {args.img_size} disagree; give one")
    if getattr(args, "in_chans", None) is not None and args.in_chans != chans:
        raise ValueError(f"--input-size {chans} {h} {w} and --in-chans {args.in_chans} disagree; give one")
    if h != w and square:
        raise ValueError(f"--input-size {chans} {h} {w}: this command takes square inputs (H = W)")
    args.in_chans = chans
    args.img_size = h if h == w else (h, w)
    args.input_size = None  # folded: a second call changes nothing


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Model, weights, preprocessing overrides and device of `validate` / `predict`."""
    add_weights_arguments(p)
    add_input_size_arguments(p)
    p.add_argument("--crop-pct", type=float, help="center-crop fraction (default: the model's)")
    p.add_argument("--interpolation", help="resize interpolation (default: the model's)")
    p.add_argument("--batch-size", "-b", type=int, default=128)
    p.add_argument("--workers", "-j", type=int, default=1, help="data-loader workers (CPU threads = the other cores)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--amp", choices=AMP_MODES, default="none")


def check_weights_flags(checkpoint: Any, model: Any, pretrained: bool, initial: str | None) -> None:
    """At most one source of weights; --pretrained needs a model name."""
    if pretrained and initial:
        raise ValueError("give either --pretrained (the released weights of the model's tag) or --initial-checkpoint "
                         "PATH, not both")
    if checkpoint and (pretrained or initial):
        given = "--pretrained" if pretrained else "--initial-checkpoint"
        raise ValueError(f"give either --checkpoint or {given}, not both (--checkpoint holds its own weights)")
    if pretrained and not model:
        raise ValueError("--pretrained loads the released weights of --model NAME: give the model name")
    for name in ([model] if isinstance(model, str) else model or []) if pretrained else []:
        check_released(name)


def check_released(name: str) -> None:
    """--pretrained with a registered model that has no released weights: one error before anything is built
    (timm:NAME, hf-hub: and folders are left to the loader)."""
    from lstmvision.models.registry import is_model, released_tag, split_tag

    if is_model(split_tag(name)[0]):
        released_tag(name)


def model_from_args(args: argparse.Namespace) -> "torch.nn.Module":
    """The model named by --model / --pretrained / --initial-checkpoint / --checkpoint (see the module docstring),
    in eval mode; `args.img_size` / `args.in_chans` also take `--input-size`."""
    from lstmvision.models.loading import create_model

    resolve_input_size(args)
    check_weights_flags(args.checkpoint, args.model, args.pretrained, args.initial_checkpoint)
    weights = args.checkpoint or args.initial_checkpoint or (True if args.pretrained else None)
    spec = args.model or weights
    if spec is None:
        raise ValueError("give --model NAME (with --pretrained, or --initial-checkpoint FILE|FOLDER for weights) or "
                         "--checkpoint FOLDER")
    return create_model(spec, weights if args.model else None, args.num_classes, args.in_chans).eval()


def warn_random_weights(model: Any, what: str = "no --pretrained, --initial-checkpoint or --checkpoint") -> None:
    """One warning when `model` has random weights (`weights_source` None): its outputs mean nothing."""
    if getattr(model, "weights_source", None) is None:
        name = getattr(model, "label", None) or getattr(model, "model_name", None) or type(model).__name__
        warnings.warn(f"{name} has random weights ({what}): its outputs mean nothing", UserWarning, stacklevel=2)


def check_counts(args: argparse.Namespace) -> None:
    """--batch-size of at least 1 and --workers of at least 0 (where the command has them), as one error line."""
    batch = getattr(args, "batch_size", None)
    if batch is not None and batch < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch}")
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {workers}")


def check_task(model: Any, command: str) -> None:
    """Refuse a segmentation or detection model (`pretrained_cfg['task']` 'segment' / 'detect') in a
    classification command, in one line that names the command to use instead."""
    task = (getattr(model, "pretrained_cfg", None) or {}).get("task")
    if task in TASK_MODELS:
        name = getattr(model, "label", None) or getattr(model, "model_name", None) or "the model"
        use = f"`lstmvision {task} {command}`" if command in ("validate", "predict") else None
        raise ValueError(f"{name} is {TASK_MODELS[task]}, not a classifier: `lstmvision {command}` takes "
                         "classification models" + (f"; use {use}" if use else ""))


def add_overwrite_argument(p: argparse.ArgumentParser, what: str = "outputs") -> None:
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace {what} of an earlier run (a file this command reads is never replaced)")


def data_reads(data: str | None) -> list[Path]:
    """The data folder or file a command reads (`--data`, also `wds:`/`hfds:`/`hfids:` sources; the default
    Fashion-MNIST folder when None)."""
    from lstmvision.data.sources import data_root

    try:
        root = data_root(data)
    except (OSError, ValueError):  # no default data here: the command itself reports it
        return []
    return [root] if root is not None else []


def weights_reads(args: argparse.Namespace) -> list[Path]:
    """The checkpoint files and folders a command loads (--checkpoint, --initial-checkpoint): never outputs."""
    from lstmvision.outputs import checkpoint_reads

    paths = [getattr(args, "checkpoint", None), getattr(args, "initial_checkpoint", None)]
    paths = [q for p in paths for q in (p if isinstance(p, list) else [p])]
    return [r for p in paths for r in checkpoint_reads(p)]


def add_scene_arguments(p: argparse.ArgumentParser, layout: str, train: int, val: int, size: int) -> None:
    """The options of `segment scenes` and `detect scenes` (Fashion-MNIST garments on canvases, seeded)."""
    p.add_argument("--output", "-o", required=True, help=f"folder to write ({layout})")
    p.add_argument("--source", help="Fashion-MNIST idx folder (default: $LSTMVISION_DATA or the Debian package)")
    p.add_argument("--train", type=int, default=train, help="training scenes (default %(default)s)")
    p.add_argument("--val", type=int, default=val, help="validation scenes (default %(default)s)")
    p.add_argument("--size", type=int, default=size, help="scene side in pixels (default %(default)s)")
    p.add_argument("--max-objects", type=int, default=4, help="garments per scene, at most (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)


def add_analysis_arguments(p: argparse.ArgumentParser, limit: bool = True) -> None:
    """Data, preprocessing, device and output of the analysis commands (resolution-sweep, erf, robustness)."""
    p.add_argument("--data", required=True, help="dataset folder (ImageFolder tree with val/, or idx files) or an "
                                                 "hfds: dataset")
    p.add_argument("--split", default="val", choices=["val", "train"], help="which split to evaluate (default val)")
    if limit:
        p.add_argument("--limit", type=int, help="use a fixed random subset of this many images")
    p.add_argument("--batch-size", "-b", type=int, default=64)
    p.add_argument("--workers", "-j", type=int, default=0)
    p.add_argument("--crop-pct", type=float, default=1.0, help="centre-crop fraction at each size (default 1.0)")
    p.add_argument("--interpolation", default="bicubic", choices=["bilinear", "bicubic", "nearest"])
    p.add_argument("--num-classes", type=int, help="classes of the model (for --model / timm: specs)")
    p.add_argument("--in-chans", type=int, help="input channels (for --model / timm: specs)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", "-o", required=True, help="output folder")
    add_overwrite_argument(p, "the report of an earlier run in --output")


def analysis_reads(args: argparse.Namespace) -> list[Path]:
    """What an analysis command reads: its data, checkpoints and weights (never replaced by its report)."""
    data = getattr(args, "data", None)
    return ([Path(data)] if data else []) + weights_reads(args)


def add_analysis_models(p: argparse.ArgumentParser, checkpoint_help: str = "trained model folders "
                        "(save_pretrained / training run / best/)") -> None:
    """--checkpoint PATH... and --model NAME... with their weights (resolution-sweep, erf)."""
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="PATH", help=checkpoint_help)
    p.add_argument("--model", "-m", nargs="+", default=[], metavar="NAME",
                   help="registered names or timm:NAME (random init unless --pretrained / --initial-checkpoint)")
    p.add_argument("--pretrained", action="store_true", help="every --model with " + PRETRAINED_HELP)
    p.add_argument("--initial-checkpoint", metavar="PATH",
                   help="weights for a single --model: a weights file, or a save_pretrained / training run folder")


def analysis_specs(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(spec, pretrained) of every --checkpoint and --model (resolution-sweep, erf): pretrained is None, True (the
    tag's released weights) or a path."""
    if not args.checkpoint and not args.model:
        raise ValueError("give at least one --checkpoint PATH or --model NAME")
    if args.pretrained and args.initial_checkpoint:
        raise ValueError("give either --pretrained (the released weights of the models' tags) or "
                         "--initial-checkpoint PATH, not both")
    if args.pretrained and not args.model:
        raise ValueError("--pretrained loads the released weights of each --model NAME: give model names")
    if args.initial_checkpoint and len(args.model) != 1:
        raise ValueError("--initial-checkpoint goes with exactly one --model")
    if args.pretrained:
        for name in args.model:
            check_released(name)
    weights = args.initial_checkpoint or (True if args.pretrained else None)
    return [(c, None) for c in args.checkpoint] + [(m, weights) for m in args.model]
