"""Top-1, top-5 and loss of a model on a dataset's validation split, with the model's own eval preprocessing."""
from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.nn as nn

from lstmvision.data.classification import create_eval_transform
from lstmvision.data.images import BadImageCounter
from lstmvision.data.loaders import build_loader, limit
from lstmvision.data.sources import resolve_dataset
from lstmvision.device import resolve_device
from lstmvision.inference import data_config
from lstmvision.tasks.classify import evaluate


def validate(model: nn.Module, data: str | os.PathLike | None = None, limit_val: int | None = None,
             batch_size: int = 128, workers: int = 1, device: torch.device | None = None, amp: str = "none",
             img_size: int | None = None, crop_pct: float | None = None, interpolation: str | None = None,
             strict_images: bool = False) -> dict[str, Any]:
    """Evaluate `model` on the validation split of `data` (ImageFolder tree, class folder or MNIST idx files;
    None: $LSTMVISION_DATA or Fashion-MNIST), on a fixed random subset of `limit_val` images if given: always
    drawn with seed 0, as `lstmvision train --limit-val N` draws its validation images, so the two agree.

    Preprocessing is the model's `pretrained_cfg` (channels matched) with `img_size`, `crop_pct` and
    `interpolation` overriding it. Returns the metrics and the settings used.
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size}")
    task = (getattr(model, "pretrained_cfg", None) or {}).get("task")
    if task in ("segment", "detect"):
        kind = "a segmentation model (UperNet)" if task == "segment" else "a detection model"
        raise ValueError(f"{getattr(model, 'label', None) or 'the model'} is {kind}, not a classifier: use "
                         f"`lstmvision {task} validate`")
    device = device or resolve_device(None)
    if amp == "fp16" and device.type == "cpu":
        raise ValueError("--amp fp16 needs a CUDA GPU; use --amp bf16 or --amp none on CPU")
    cfg = data_config(model, img_size, crop_pct, interpolation)
    input_size = tuple(cfg["input_size"])
    ds = resolve_dataset(data, "val", img_mode="L" if input_size[0] == 1 else "RGB",
                         class_names=getattr(model, "class_names", None))
    if model.num_classes < len(ds.class_names):
        raise ValueError(f"the data has {len(ds.class_names)} classes but the model predicts {model.num_classes}")
    ds = limit(ds, limit_val, seed=0)
    tf = create_eval_transform(input_size, tuple(cfg["mean"]), tuple(cfg["std"]), cfg["crop_pct"],
                               cfg["interpolation"])
    loader = build_loader(ds, tf, batch_size, training=False, workers=workers)
    t0 = time.time()
    m = evaluate(model.to(device), loader, device, amp, bad=BadImageCounter(strict=strict_images))
    return dict(
        model=getattr(model, "model_name", type(model).__name__),
        data=str(data or "default (Fashion-MNIST)"), images=m["count"], skipped=m["skipped"],
        top1=round(m["top1"], 4), top1_err=round(100 - m["top1"], 4), top5=round(m["top5"], 4),
        top5_err=round(100 - m["top5"], 4), loss=round(m["loss"], 6),
        param_count=round(sum(p.numel() for p in model.parameters()) / 1e6, 4), img_size=input_size[-1],
        crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"], time_s=round(time.time() - t0, 2),
    )
