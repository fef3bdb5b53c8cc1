"""Argparse pieces shared by the subcommands: one vocabulary for naming a model and its weights everywhere.

`--model NAME` (a registered name or timm:NAME) with `--pretrained FILE|FOLDER` for its weights, or
`--checkpoint FOLDER` (a training run folder, whose best/ is used, or a checkpoint / save_pretrained folder).
Loading itself is `lstmvision.models.loading.load_model`.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lstmvision.constants import AMP_MODES

if TYPE_CHECKING:
    import torch


def add_weights_arguments(p: argparse.ArgumentParser, model_help: str = "registered model name or timm:NAME "
                          "(optional with --checkpoint)") -> None:
    p.add_argument("--model", "-m", help=model_help)
    p.add_argument("--pretrained", help="weights for --model: a weights file, or a run / checkpoint folder")
    p.add_argument("--checkpoint", help="a training run folder (uses best/, else last/) or a checkpoint folder")
    p.add_argument("--num-classes", type=int, help="classes of the weights (default: from the checkpoint)")
    p.add_argument("--in-chans", type=int, help="input channels (default: from the checkpoint)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Model, weights, preprocessing overrides and device of `validate` / `predict`."""
    add_weights_arguments(p)
    p.add_argument("--img-size", type=int, help="input size (default: the model's)")
    p.add_argument("--crop-pct", type=float, help="center-crop fraction (default: the model's)")
    p.add_argument("--interpolation", help="resize interpolation (default: the model's)")
    p.add_argument("--batch-size", "-b", type=int, default=128)
    p.add_argument("--workers", "-j", type=int, default=1, help="data-loader workers (CPU threads = the other cores)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--amp", choices=AMP_MODES, default="none")


def model_from_args(args: argparse.Namespace) -> "torch.nn.Module":
    """The model named by --model / --pretrained / --checkpoint (see the module docstring), in eval mode."""
    from lstmvision.models.loading import load_model

    if args.checkpoint and args.pretrained:
        raise ValueError("give either --checkpoint or --pretrained, not both")
    weights = args.checkpoint or args.pretrained
    spec = args.model or weights
    if spec is None:
        raise ValueError("give --model NAME (with --pretrained FILE|FOLDER for weights) or --checkpoint FOLDER")
    return load_model(spec, weights if args.model else None, args.num_classes, args.in_chans)


def add_analysis_arguments(p: argparse.ArgumentParser, limit: bool = True) -> None:
    """Data, preprocessing, device and output of the analysis commands (resolution-sweep, erf, robustness)."""
    p.add_argument("--data", required=True, help="dataset folder (ImageFolder tree with val/, or idx files)")
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


def analysis_specs(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(spec, pretrained) of every --checkpoint and --model (resolution-sweep, erf)."""
    if not args.checkpoint and not args.model:
        raise ValueError("give at least one --checkpoint PATH or --model NAME")
    if args.pretrained and len(args.model) != 1:
        raise ValueError("--pretrained goes with exactly one --model")
    return [(c, None) for c in args.checkpoint] + [(m, args.pretrained) for m in args.model]
