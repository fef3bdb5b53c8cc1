"""Segmentation models after training: validate (mIoU, aAcc, mAcc, per-class IoU), predict masks for image files,
and draw image | ground truth | prediction pictures. Training is `lstmvision.engine` with task 'segment'."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from lstmvision.data import BadImageCounter, build_loader, limit, open_image
from lstmvision.data.segmentation import SegEvalTransform, SegmentationDataset
from lstmvision.device import autocast_context
from lstmvision.models.upernet import segment_logits
from lstmvision.tasks.segment import default_stride, evaluate_segmentation
from lstmvision.weights import atomic_write


def settings(model: nn.Module, crop: int | None = None, stride: int | None = None,
             base_size: Sequence[int] | None = None) -> dict[str, Any]:
    """Evaluation settings: the model's own (saved at training time) with the given overrides."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    crop = int(crop or cfg.get("input_size", (3, 512, 512))[-1])

    return dict(crop=crop, stride=int(stride or cfg.get("seg_stride") or default_stride(crop)),
                base_size=tuple(base_size or cfg.get("seg_base_size") or (2048, 512)),
                mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))), std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                in_chans=int(cfg.get("input_size", (3,))[0]))


def check_segmenter(model: nn.Module) -> None:
    if (getattr(model, "pretrained_cfg", None) or {}).get("task") != "segment":
        raise ValueError(f"{getattr(model, 'label', 'the model')} is not a segmentation model: train one with "
                         "`lstmvision segment train`")


def validate_segmentation(model: nn.Module, data: str | os.PathLike, device: torch.device, amp: str = "none",
                          limit_val: int | None = None, scales: Sequence[float] = (1.0,), flip: bool = False,
                          crop: int | None = None, stride: int | None = None,
                          base_size: Sequence[int] | None = None, workers: int = 0, strict_images: bool = False,
                          examples: int = 0, seed: int = 0) -> dict[str, Any]:
    """Score `model` on the validation split of `data`. With `examples` > 0 the result holds the first
    `examples` (image, mask, prediction) triples under 'examples' (for `save_examples`)."""
    check_segmenter(model)
    s = settings(model, crop, stride, base_size)
    ds = SegmentationDataset(data, "val", img_mode="L" if s["in_chans"] == 1 else "RGB",
                             class_names=getattr(model, "class_names", None) or None)
    if len(ds.class_names) != model.num_classes:
        raise ValueError(f"the data has {len(ds.class_names)} classes but the model predicts {model.num_classes}")
    ds = limit(ds, limit_val, seed)
    loader = build_loader(ds, SegEvalTransform(base_size=s["base_size"], mean=s["mean"], std=s["std"]), 1,
                          training=False, workers=workers)
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def keep(x: torch.Tensor, y: torch.Tensor, pred: torch.Tensor) -> None:
        if len(kept) < examples:
            kept.append((x[0].cpu(), y[0].cpu(), pred[0].cpu()))

    t0 = time.time()
    m = evaluate_segmentation(model.to(device), loader, device, model.num_classes, s["crop"], s["stride"], amp,
                              scales=scales, flip=flip, bad=BadImageCounter(strict=strict_images), on_batch=keep)
    names = list(ds.class_names)
    result = dict(model=getattr(model, "model_name", type(model).__name__), data=str(data), images=m["count"],
                  skipped=m["skipped"], miou=round(m["miou"], 2), aacc=round(m["aacc"], 2), macc=round(m["macc"], 2),
                  loss=round(m["loss"], 4), crop=s["crop"], stride=s["stride"], base_size=list(s["base_size"]),
                  scales=list(scales), flip=flip, time_s=round(time.time() - t0, 1),
                  per_class=[dict(name=n, iou=_round(i), acc=_round(a)) for n, i, a in zip(names, m["iou"], m["acc"])])
    if examples:
        result["examples"] = kept
    return result


def _round(v: float) -> float | None:
    return None if v != v else round(v, 2)  # NaN: class absent from data and predictions


def segmentation_table(result: dict[str, Any]) -> str:
    lines = [f"mIoU {result['miou']:.2f} | aAcc {result['aacc']:.2f} | mAcc {result['macc']:.2f} "
             f"({result['images']} images, crop {result['crop']}, stride {result['stride']}, scales "
             f"{result['scales']}, flip {result['flip']})", "", "| class | IoU | Acc |", "|---|---:|---:|"]
    for row in result["per_class"]:
        fmt = [("-" if row[k] is None else f"{row[k]:.2f}") for k in ("iou", "acc")]
        lines.append(f"| {row['name']} | {fmt[0]} | {fmt[1]} |")
    return "\n".join(lines) + "\n"


def palette(num_classes: int) -> np.ndarray:
    """A fixed colour per class (uint8 RGB); ignored pixels are drawn black."""
    rng = np.random.default_rng(12345)
    colours = rng.integers(40, 256, size=(max(num_classes, 1), 3), dtype=np.uint8)
    colours[0] = (70, 70, 70)
    return colours


def colourise(mask: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    pal = palette(num_classes)
    out = pal[np.clip(mask, 0, num_classes - 1)]
    out[mask == ignore_index] = 0
    return out


def _denormalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    img = x.float() * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    img = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def save_examples(examples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], model: nn.Module,
                  path: str | os.PathLike, title: str = "") -> Path:
    """A PNG grid: one row per example, columns image | ground truth | prediction."""

    matplotlib.use("Agg")
    s, n = settings(model), model.num_classes
    fig, axes = plt.subplots(len(examples), 3, figsize=(6, 2 * len(examples)), squeeze=False)
    for row, (x, y, pred) in zip(axes, examples):
        h, w = y.shape
        img = np.asarray(Image.fromarray(_denormalise(x, s["mean"], s["std"])).resize((w, h), Image.BILINEAR))
        for ax, pic, label in zip(row, (img, colourise(y.numpy(), n), colourise(pred.numpy(), n)),
                                  ("image", "ground truth", "prediction")):
            ax.imshow(pic, interpolation="nearest")
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return path


@torch.no_grad()
def predict_masks(model: nn.Module, images: Sequence[str | os.PathLike], device: torch.device,
                  output: str | os.PathLike, amp: str = "none", scales: Sequence[float] = (1.0,),
                  flip: bool = False) -> list[dict[str, Any]]:
    """Segment image files: `output/<stem>.png` (class index per pixel) and `output/<stem>_color.png`."""

    check_segmenter(model)
    s = settings(model)
    tf = SegEvalTransform(base_size=s["base_size"], mean=s["mean"], std=s["std"])
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.to(device).eval()
    names = list(getattr(model, "class_names", None) or [])
    rows = []
    for path in images:
        img = open_image(path, "L" if s["in_chans"] == 1 else "RGB")
        x, _ = tf(img, Image.new("L", img.size))
        with autocast_context(device, amp):
            logits = segment_logits(model, x[None].to(device), mode="slide", crop=s["crop"], stride=s["stride"],
                                    scales=scales, flip=flip, out_size=(img.height, img.width))
        mask = logits.float().argmax(1)[0].cpu().numpy().astype(np.uint8)
        stem = Path(path).stem
        atomic_write(out_dir / f"{stem}.png", lambda p: Image.fromarray(mask).save(p, format="PNG"))
        atomic_write(out_dir / f"{stem}_color.png",
                     lambda p: Image.fromarray(colourise(mask, model.num_classes)).save(p, format="PNG"))
        counts = np.bincount(mask.ravel(), minlength=model.num_classes)
        top = [(names[i] if i < len(names) else str(i), round(100 * c / mask.size, 1))
               for i, c in sorted(enumerate(counts), key=lambda t: -t[1]) if c][:3]
        rows.append(dict(image=str(path), mask=str(out_dir / f"{stem}.png"), classes=top))
    return rows
