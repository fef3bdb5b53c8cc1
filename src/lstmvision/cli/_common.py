"""Loading a trained model for `validate` / `predict`: `--checkpoint` (run or checkpoint folder) or
`--model` + `--pretrained`."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", help="registered model name (optional with --checkpoint)")
    p.add_argument("--pretrained", help="weights file or saved folder (with --model)")
    p.add_argument("--checkpoint", help="a run folder (uses best/) or a checkpoint folder written by train")
    p.add_argument("--num-classes", type=int, help="classes of the weights (default: from the checkpoint)")
    p.add_argument("--in-chans", type=int, help="input channels (default: from the checkpoint)")
    p.add_argument("--img-size", type=int, help="input size (default: the model's)")
    p.add_argument("--crop-pct", type=float, help="center-crop fraction (default: the model's)")
    p.add_argument("--interpolation", help="resize interpolation (default: the model's)")
    p.add_argument("--batch-size", "-b", type=int, default=128)
    p.add_argument("--workers", "-j", type=int, default=1, help="data-loader workers (CPU threads = the other cores)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")


def checkpoint_folder(path: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_file():
        path = path.parent
    if (path / "config.json").is_file():
        return path
    for name in ("best", "last", ".last.old"):
        if (path / name / "config.json").is_file():
            return path / name
    raise FileNotFoundError(f"{path} holds no checkpoint (expected config.json + model.safetensors, or best/)")


def load_model(args: argparse.Namespace) -> torch.nn.Module:
    from lstmvision.models import create_model

    if args.checkpoint and args.pretrained:
        raise ValueError("give either --checkpoint or --pretrained, not both")
    if not args.checkpoint and not args.model:
        raise ValueError("give --checkpoint PATH, or --model NAME (with --pretrained PATH)")
    kw = {}
    if args.in_chans:
        kw["in_chans"] = args.in_chans
    if args.checkpoint:
        model = create_model(args.model, pretrained=checkpoint_folder(args.checkpoint), num_classes=args.num_classes,
                             **kw)
    else:
        model = create_model(args.model, pretrained=args.pretrained, num_classes=args.num_classes, **kw)
    return model.eval()


def device_of(args: argparse.Namespace) -> torch.device:
    from lstmvision.runtime import cpu_threads, resolve_device

    torch.set_num_threads(cpu_threads(args.workers))  # CPU only; oversubscription is very slow for LSTMs
    return resolve_device(args.device)


def data_settings(model: torch.nn.Module, args: argparse.Namespace) -> dict:
    """Eval preprocessing of `model` (its pretrained_cfg, channels matched), with the command's overrides."""
    from lstmvision.inference import data_config

    if args.amp == "fp16" and device_of(args).type == "cpu":
        raise ValueError("--amp fp16 needs a CUDA GPU; use --amp bf16 or --amp none on CPU")
    cfg = data_config(model, args.img_size, args.crop_pct, args.interpolation)
    return dict(input_size=tuple(cfg["input_size"]), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"],
                img_mode="L" if cfg["input_size"][0] == 1 else "RGB")
