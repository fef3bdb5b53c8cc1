"""Segmentation models after training: validate (mIoU, aAcc, mAcc, per-class IoU), predict masks for image files,
and draw image | ground truth | prediction pictures. Training is `lstmvision.engine` with task 'segment'."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from lstmvision.data.images import BadImageCounter, open_image_or_skip, save_png
from lstmvision.data.loaders import build_loader, limit
from lstmvision.data.segmentation import SegEvalTransform, SegmentationDataset
from lstmvision.device import autocast_context
from lstmvision.errors import os_reason
from lstmvision.models.upernet import segment_logits
from lstmvision.outputs import atomic_write, check_outputs
from lstmvision.tasks.segment import default_stride, evaluate_segmentation


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    except OSError as e:
        raise PermissionError(f"cannot write {path}: {os_reason(e)}") from None
    finally:
        plt.close(fig)
    return path


@dataclass
class MaskTarget:
    """Where the masks of one input image go: `mask` (class index per pixel) and `colour` (coloured)."""

    image: Path
    mask: Path
    colour: Path


def _name_key(path: Path) -> str:
    # one key for names a case-insensitive file system would take for the same file
    return os.path.normcase(os.path.abspath(path)).casefold()


def mask_targets(images: Sequence[str | os.PathLike], output: str | os.PathLike) -> list[MaskTarget]:
    """The output files of every image, each name used once: `output/<folder>/<stem>.png` and
    `<stem>_color.png`, where <folder> is the image's folder below the folder all images share (images of one
    folder: straight into `output`). A name another image already took (x.png and x.jpg, x.png and x_color.png)
    gets `_2`, `_3`, ... after the stem. An image given twice is segmented once."""
    out = Path(output)
    files, seen = [], set()
    for p in map(Path, images):
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            files.append(p)
    folders = [os.path.abspath(p.parent) for p in files]
    try:
        base = os.path.commonpath(folders) if folders else None
    except ValueError:  # different drives: no shared folder
        base = None
    taken: set[str] = set()
    targets = []
    for path, folder in zip(files, folders):
        sub = out / os.path.relpath(folder, base) if base is not None else out
        k = 1
        while True:
            stem = path.stem if k == 1 else f"{path.stem}_{k}"
            mask, colour = sub / f"{stem}.png", sub / f"{stem}_color.png"
            keys = {_name_key(mask), _name_key(colour)}
            if not keys & taken:
                break
            k += 1
        taken |= keys
        targets.append(MaskTarget(path, mask, colour))
    return targets


def check_mask_targets(targets: Sequence[MaskTarget], overwrite: bool = False,
                       reads: Sequence[str | os.PathLike] = ()) -> None:
    """Refuse, before any image is segmented, outputs that would replace an input image or one of `reads` (the
    checkpoint; always), existing files (unless `overwrite`) and folders or files in the way: one error line
    naming the file."""
    check_outputs([p for t in targets for p in (t.mask, t.colour)], [*(t.image for t in targets), *reads], overwrite)


@torch.no_grad()
def predict_masks(model: nn.Module, images: Sequence[str | os.PathLike], device: torch.device,
                  output: str | os.PathLike, amp: str = "none", scales: Sequence[float] = (1.0,),
                  flip: bool = False, overwrite: bool = False,
                  strict_images: bool = False) -> tuple[list[dict[str, Any]], int]:
    """Segment image files: a class-index PNG and a coloured PNG per image, named by `mask_targets` (no input
    image is ever replaced, no name written twice; existing files only with `overwrite`). An unreadable image
    is skipped with a warning (an error with `strict_images`). Returns (one row per image, images skipped)."""

    check_segmenter(model)
    targets = mask_targets(images, output)
    check_mask_targets(targets, overwrite)
    s = settings(model)
    tf = SegEvalTransform(base_size=s["base_size"], mean=s["mean"], std=s["std"])
    model = model.to(device).eval()
    names = list(getattr(model, "class_names", None) or [])
    rows, skipped = [], 0
    for t in targets:
        img = open_image_or_skip(t.image, "L" if s["in_chans"] == 1 else "RGB", strict_images)
        if img is None:
            skipped += 1
            continue
        x, _ = tf(img, Image.new("L", img.size))
        with autocast_context(device, amp):
            logits = segment_logits(model, x[None].to(device), mode="slide", crop=s["crop"], stride=s["stride"],
                                    scales=scales, flip=flip, out_size=(img.height, img.width))
        # a class index per pixel: 8-bit PNG, 16-bit beyond 256 classes (uint8 would wrap around)
        mask = logits.float().argmax(1)[0].cpu().numpy().astype(np.uint8 if model.num_classes <= 256 else np.uint16)
        save_png(t.mask, mask)
        save_png(t.colour, colourise(mask, model.num_classes))
        counts = np.bincount(mask.ravel(), minlength=model.num_classes)
        top = [(names[i] if i < len(names) else str(i), round(100 * c / mask.size, 1))
               for i, c in sorted(enumerate(counts), key=lambda ic: -ic[1]) if c][:3]
        rows.append(dict(image=str(t.image), mask=str(t.mask), classes=top))
    return rows, skipped
