"""Detection models after training: validate (COCO box AP, and mask AP for Mask R-CNN), predict a COCO results
file for a split or for image files, and draw the detections on the images. Training is `lstmvision.engine`
with task 'detect'."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
import torch
import torch.nn as nn
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from lstmvision.data.detection import CocoDetection, DetectionTransform, collate_detection
from lstmvision.data.images import BadImageCounter, open_image_or_skip, save_png
from lstmvision.data.loaders import base_dataset, build_loader, limit
from lstmvision.device import autocast_context
from lstmvision.outputs import check_outputs
from lstmvision.tasks.detect import COCO_STATS, coco_results, detect_batches, evaluate_detection


def check_detector(model: nn.Module) -> None:
    if (getattr(model, "pretrained_cfg", None) or {}).get("task") != "detect":
        raise ValueError(f"{getattr(model, 'label', 'the model')} is not a detection model: train one with "
                         "`lstmvision detect train`")


def _cfg(model: nn.Module) -> dict[str, Any]:
    return dict(getattr(model, "pretrained_cfg", None) or {})


def _img_mode(model: nn.Module) -> str:
    return "L" if int(_cfg(model).get("input_size", (3,))[0]) == 1 else "RGB"


def split_dataset(model: nn.Module, data: str | os.PathLike, split: str | None = None,
                  limit_val: int | None = None) -> CocoDetection:
    """The COCO split `split` (default: the model's validation split) of `data`, checked against the model's
    categories, limited to a fixed random subset of `limit_val` images (seed 0, as training's --limit-val)."""
    check_detector(model)
    cfg = _cfg(model)
    ds = CocoDetection(data, split or cfg.get("val_split") or "val2017", _img_mode(model),
                       category_ids=cfg.get("category_ids"))
    return limit(ds, limit_val, seed=0)


def validate_detection(model: nn.Module, data: str | os.PathLike, device: torch.device, split: str | None = None,
                       amp: str = "none", limit_val: int | None = None, workers: int = 0,
                       strict_images: bool = False) -> dict[str, Any]:
    """COCO AP of `model` on split `split` of `data` (see `lstmvision.tasks.detect`), with what was skipped."""
    ds = split_dataset(model, data, split, limit_val)
    loader = build_loader(ds, DetectionTransform(), 1, training=False, workers=workers, collate_fn=collate_detection)
    t0 = time.time()
    m = evaluate_detection(model.to(device), loader, device, amp, bad=BadImageCounter(strict=strict_images))
    base = base_dataset(ds)
    result = dict(model=getattr(model, "model_name", type(model).__name__),
                  detector=_cfg(model).get("detector"), data=str(data), split=base.split, images=m["count"],
                  skipped=m["skipped"], skipped_boxes=base.skipped_boxes, clipped_boxes=base.clipped_boxes,
                  detections=m["detections"])
    result.update({k: round(v, 4) for k, v in m.items() if k.startswith(("bbox_", "segm_"))})
    result["time_s"] = round(time.time() - t0, 1)
    return result


def detection_table(result: dict[str, Any]) -> str:
    """The AP of a `validate_detection` result as a markdown table (one column per evaluated iou type)."""
    types = [t for t in ("bbox", "segm") if f"{t}_mAP" in result]
    lines = [f"{result['detector']} on {result['model']}: {result['images']} images of {result['split']}, "
             f"{result['detections']} detections, {result['skipped']} unreadable images skipped, "
             f"{result['skipped_boxes']} degenerate boxes skipped, {result['clipped_boxes']} clipped", "",
             "| AP (%) | " + " | ".join(types) + " |", "|---|" + "---:|" * len(types)]
    for stat in COCO_STATS:
        lines.append(f"| {stat} | " + " | ".join(f"{result[f'{t}_{stat}']:.2f}" for t in types) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- pictures
def colour(label: int) -> tuple[int, int, int]:
    """A fixed colour per label (matplotlib's tab10, repeating)."""
    r, g, b, _ = matplotlib.colormaps["tab10"]((label - 1) % 10)
    return int(255 * r), int(255 * g), int(255 * b)


def draw_detections(image: torch.Tensor, output: dict[str, torch.Tensor], class_names: Sequence[str],
                    threshold: float = 0.3) -> torch.Tensor:
    """`image` (C, H, W) in [0, 1] with the detections scoring at least `threshold` drawn on it: masks (Mask
    R-CNN) blended in, boxes with '<class> <score>' labels. Returns a uint8 (3, H, W) tensor."""
    img = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    img = img.expand(3, -1, -1).contiguous() if img.shape[0] == 1 else img
    keep = output["scores"].detach().cpu() >= threshold
    labels = output["labels"].cpu()[keep].tolist()
    if not labels:
        return img
    colours = [colour(label) for label in labels]
    if "masks" in output:
        img = draw_segmentation_masks(img, output["masks"].cpu()[keep][:, 0] > 0.5, alpha=0.45, colors=colours)
    names = [class_names[label - 1] if 0 < label <= len(class_names) else str(label) for label in labels]
    text = [f"{n} {s:.2f}" for n, s in zip(names, output["scores"].cpu()[keep].tolist())]
    return draw_bounding_boxes(img, output["boxes"].detach().float().cpu()[keep], labels=text, colors=colours,
                               width=1 if min(img.shape[-2:]) < 256 else 2)


def vis_paths(images: Sequence[str | os.PathLike], folder: str | os.PathLike) -> list[Path]:
    """`folder/<stem>.png` for each image, a name another image took getting `_2`, `_3`, ..."""
    taken: set[str] = set()
    paths = []
    for image in map(Path, images):
        k = 1
        while _key(_numbered(image.stem, k)) in taken:
            k += 1
        taken.add(_key(_numbered(image.stem, k)))
        paths.append(Path(folder) / _numbered(image.stem, k))
    return paths


def _numbered(stem: str, k: int) -> str:
    return f"{stem}.png" if k == 1 else f"{stem}_{k}.png"


def _key(name: str) -> str:
    # one key for names a case-insensitive file system would take for the same file
    return os.path.normcase(name).casefold()


def _array(picture: torch.Tensor) -> np.ndarray:
    return picture.permute(1, 2, 0).numpy()  # (3, H, W) -> (H, W, 3)


# ------------------------------------------------------------------------------------------- predict
def predict_split(model: nn.Module, data: str | os.PathLike, device: torch.device, split: str | None = None,
                  amp: str = "none", limit_val: int | None = None, workers: int = 0, strict_images: bool = False,
                  vis_dir: str | os.PathLike | None = None, overwrite: bool = False,
                  vis_threshold: float = 0.3) -> tuple[list[dict[str, Any]], int, int]:
    """COCO results (original category ids, xywh boxes, scores, Mask R-CNN: RLE `segmentation`) of `model` on
    a split of `data`; with `vis_dir` a picture of each image's detections (`vis_paths` names; no input or
    existing file replaced unless `overwrite` allows the latter). Returns (results, images, skipped)."""
    ds = split_dataset(model, data, split, limit_val)
    base = base_dataset(ds)
    by_id = {s.id: s.path for s in base.samples}
    files = [s.path for s in base.samples]
    pictures = dict(zip(files, vis_paths(files, vis_dir))) if vis_dir is not None else {}
    if vis_dir is not None:
        check_outputs(list(pictures.values()), files, overwrite)
    loader = build_loader(ds, DetectionTransform(), 1, training=False, workers=workers, collate_fn=collate_detection)
    bad, results, n = BadImageCounter(strict=strict_images), [], 0
    for x, y, outputs in detect_batches(model.to(device), loader, device, amp, bad, desc="detect predict"):
        ids = [int(t["image_id"]) for t in y]
        results += coco_results(outputs, ids, base.category_ids)
        n += len(ids)
        for image, image_id, out in zip(x, ids, outputs):
            if vis_dir is not None:
                save_png(pictures[by_id[image_id]], _array(draw_detections(image, out, base.class_names, vis_threshold)))
    return results, n, bad.count


def predict_files(model: nn.Module, images: Sequence[str | os.PathLike], device: torch.device, amp: str = "none",
                  strict_images: bool = False, vis_dir: str | os.PathLike | None = None, overwrite: bool = False,
                  vis_threshold: float = 0.3) -> tuple[list[dict[str, Any]], int, int]:
    """As `predict_split` for image files: `image_id` is the file's position in `images` (from 1) and each
    result also names its `file_name`. Unreadable images are skipped with a warning (an error with
    `strict_images`). Returns (results, images, skipped)."""
    check_detector(model)
    files = [Path(p) for p in images]
    pictures = vis_paths(files, vis_dir) if vis_dir is not None else []
    if vis_dir is not None:
        check_outputs(pictures, files, overwrite)
    category_ids = list(_cfg(model).get("category_ids") or range(1, model.num_classes + 1))
    names = list(getattr(model, "class_names", None) or [])
    model = model.to(device).eval()
    results, n, skipped = [], 0, 0
    for k, path in enumerate(files):
        img = open_image_or_skip(path, _img_mode(model), strict_images)
        if img is None:
            skipped += 1
            continue
        x = pil_to_tensor(img).float().div_(255).to(device)
        with torch.no_grad(), autocast_context(device, amp):
            (out,) = model([x])
        entries = coco_results([out], [k + 1], category_ids)
        results += [dict(e, file_name=str(path)) for e in entries]
        n += 1
        if vis_dir is not None:
            save_png(pictures[k], _array(draw_detections(x, out, names, vis_threshold)))
    return results, n, skipped
