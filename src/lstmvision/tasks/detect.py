"""Object detection and instance segmentation as a task of the training engine (`cfg['task'] = 'detect'`,
`lstmvision detect`).

torchvision's Faster R-CNN, RetinaNet, FCOS or Mask R-CNN (`cfg['detector']`, `lstmvision.models.detection`) on
any backbone, trained on COCO-layout data (`lstmvision.data.detection`): the detector computes its own losses
(their sum is the training loss) and resizes images itself (short side drawn from `train_sizes`, evaluation at
`img_size`). Batches are lists of images and target dicts, so the task overrides the trainer's batch seam
(`to_device`, `batch_size`, `train_loss`, `probe_outputs`).

Evaluation is COCO's: faster-coco-eval's COCOeval (which agrees with pycocotools', see the tests) on the split's
own annotation file, over the images evaluated, one image per batch (LSTM backbones see no batch padding), in
percent: `bbox_mAP`, `bbox_mAP_50`, `bbox_mAP_75`, `bbox_mAP_s`, `bbox_mAP_m`, `bbox_mAP_l`, and for Mask
R-CNN the same six `segm_*`. COCO reports -1 for a value with no ground truth; with no detection at all every
value is 0. The validation `loss` is the training loss (the sum of the detector's losses) on the evaluated
images, per image, from the evaluation pass itself with every module in evaluation mode
(`Detector.losses_and_detections`: BatchNorm statistics, dropout and the predictions are those of evaluation).
"""
from __future__ import annotations

import contextlib
import io
import math
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.distributed as dist
import torch.nn as nn
from faster_coco_eval import COCO, COCOeval_faster
from tqdm import tqdm

from lstmvision.data.detection import CocoDetection, DetectionTransform, collate_detection
from lstmvision.data.images import BadImageCounter, DataError
from lstmvision.data.loaders import base_dataset, build_loader, dataset_source, limit
from lstmvision.device import autocast_context
from lstmvision.models.detection import Detector, create_detector, fcos_channels_message
from lstmvision.tasks.base import Data, Task, backbone_weights, fill_normalisation, model_kwargs

COCO_STATS = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")  # COCOeval.stats[0:6]
BOX_METRICS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75")
SEGM_METRICS = ("segm_mAP", "segm_mAP_50", "segm_mAP_75")
MASK_THRESHOLD = 0.5  # Mask R-CNN's mask probabilities -> binary masks (torchvision's and COCO's convention)


class DetectionLoss(nn.Module):
    """The training loss of a torchvision detector: the sum of the losses it returns in training mode."""

    def forward(self, losses: dict[str, torch.Tensor], targets: Any = None) -> torch.Tensor:
        return sum(v.float() for v in losses.values())


# ---------------------------------------------------------------------------------------- COCO results
def coco_results(outputs: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int],
                 category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Detector outputs as COCO result entries: original category ids, xywh boxes, scores and, with masks,
    `segmentation` as compressed RLE (counts as text). Label 0 (background) is never a result."""
    results = []
    for out, image_id in zip(outputs, image_ids):
        boxes = out["boxes"].detach().float().cpu()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        labels, scores = out["labels"].tolist(), out["scores"].detach().float().cpu().tolist()
        masks = out.get("masks")
        binary = (masks[:, 0] > MASK_THRESHOLD).cpu().numpy() if masks is not None else None
        for k, (label, box, score) in enumerate(zip(labels, xywh, scores)):
            if not 1 <= label <= len(category_ids):
                continue
            entry = dict(image_id=int(image_id), category_id=int(category_ids[label - 1]), bbox=box, score=score)
            if binary is not None:
                entry["segmentation"] = encode_mask(binary[k])
            results.append(entry)
    return results


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A binary (H, W) mask as COCO's compressed RLE with text counts (JSON-able)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


@contextlib.contextmanager
def _quiet():
    """COCO tools print progress lines to stdout: keep the command's output clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def load_coco(annotation_file: str) -> COCO:
    with _quiet():
        return COCO(str(annotation_file))


def coco_metrics(gt: COCO, results: list[dict[str, Any]], image_ids: Sequence[int],
                 iou_types: Sequence[str] = ("bbox",)) -> dict[str, float]:
    """COCO AP (percent) of `results` against `gt` over `image_ids`, for each iou type ('bbox', 'segm'):
    `{type}_mAP`, `_50`, `_75`, `_s`, `_m`, `_l` (-1: no ground truth for it; 0 everywhere: no results)."""
    if not results:
        return {f"{t}_{s}": 0.0 for t in iou_types for s in COCO_STATS}
    metrics = {}
    with _quiet():
        dt = gt.loadRes(results)
        for iou_type in iou_types:
            ev = COCOeval_faster(gt, dt, iouType=iou_type, print_function=lambda *a, **k: None)
            ev.params.imgIds = sorted(set(int(i) for i in image_ids))
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            for name, value in zip(COCO_STATS, ev.stats[:6]):
                metrics[f"{iou_type}_{name}"] = float(100 * value) if value >= 0 else -1.0
    return metrics


def _gather(items: list) -> list:
    """Every rank's items (distributed evaluation), in rank order; the items themselves on one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return items
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


# ------------------------------------------------------------------------------------------ evaluation
def detect_batches(model: nn.Module, loader, device: torch.device, amp: str = "none",
                   bad: BadImageCounter | None = None, desc: str = "detect"):
    """(images, targets, outputs) of every readable batch of `loader`, the model in eval mode (a progress bar
    on a terminal); unreadable images go to `bad`."""
    for x, y, outputs, _ in _batches(model, loader, device, amp, bad, desc):
        yield x, y, outputs


@torch.no_grad()
def _batches(model: nn.Module, loader, device: torch.device, amp: str = "none", bad: BadImageCounter | None = None,
             desc: str = "detect", losses: bool = False):
    """`detect_batches` plus, with `losses`, the batch's summed detector losses (a float per image; else None),
    from the same evaluation-mode pass (`Detector.losses_and_detections`)."""
    was_training = model.training
    model.eval()
    bad = bad or BadImageCounter()
    try:
        for x, y, skipped in tqdm(loader, desc=desc, unit="img", leave=False, disable=None):
            bad(skipped)
            if x is None:
                continue
            x = [img.to(device) for img in x]
            with autocast_context(device, amp):
                if not losses:
                    yield x, y, model(x), None
                    continue
                parts, outputs = model.losses_and_detections(x, _on_device(y, device))
            yield x, y, outputs, [float(sum(v.float() for v in parts.values()))] * len(x)
    finally:
        model.train(was_training)


def _on_device(targets: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


def evaluate_detection(model: nn.Module, loader, device: torch.device, amp: str = "none",
                       bad: BadImageCounter | None = None,
                       on_batch: Callable[[list, list, list], None] | None = None,
                       losses: bool = False) -> dict[str, Any]:
    """COCO AP of `model` on `loader` (a `CocoDetection` split, possibly limited), exact across distributed
    ranks; `on_batch(images, targets, outputs)` sees every evaluated batch. With `losses` (the split read with
    masks for Mask R-CNN) also `loss`, the mean over the images of their summed detector losses."""
    bad = bad or BadImageCounter()
    ds = base_dataset(loader.dataset)
    results, ids, image_losses = [], [], []
    for x, y, outputs, batch_losses in _batches(model, loader, device, amp, bad, "detect eval", losses):
        batch_ids = [int(t["image_id"]) for t in y]
        ids += batch_ids
        results += coco_results(outputs, batch_ids, ds.category_ids)
        image_losses += batch_losses or []
        if on_batch is not None:
            on_batch(x, y, outputs)
    results, ids, image_losses = _gather(results), _gather(ids), _gather(image_losses)
    if not ids:
        raise DataError(f"no readable images in {dataset_source(loader.dataset)} (every evaluation image was skipped)")
    with_masks = getattr(model, "kind", None) == "maskrcnn"
    metrics = coco_metrics(load_coco(ds.annotation_file), results, ids, ("bbox", "segm") if with_masks else ("bbox",))
    if losses:
        metrics["loss"] = math.fsum(image_losses) / len(image_losses)
    return dict(metrics, count=len(ids), detections=len(results), skipped=bad.count)


# ------------------------------------------------------------------------------------------ the task
def create_for_config(cfg: dict[str, Any], num_classes: int, in_chans: int) -> Detector:
    """The detector `cfg` describes (backbone `cfg['model']`), with the attributes save_pretrained needs."""
    kwargs = model_kwargs(cfg)
    drop_path = kwargs.pop("drop_path_rate", 0.0)
    kwargs.pop("drop_rate", None)
    return create_detector(cfg["model"], cfg["detector"], num_classes, in_chans=in_chans,
                           img_size=int(cfg["img_size"]), train_sizes=cfg.get("train_sizes"),
                           max_size=cfg.get("max_size"), fpn_channels=int(cfg["fpn_channels"]), mean=cfg["mean"],
                           std=cfg["std"], pretrained=backbone_weights(cfg), drop_path_rate=drop_path,
                           model_kwargs=kwargs, rpn_pre_nms_top_n=cfg.get("rpn_pre_nms_top_n"),
                           rpn_post_nms_top_n=cfg.get("rpn_post_nms_top_n"),
                           box_batch_size_per_image=cfg.get("box_batch_size_per_image"))


def _report_boxes(ds: CocoDetection) -> None:
    if ds.skipped_boxes or ds.clipped_boxes:
        warnings.warn(f"{ds.annotation_file}: skipped {ds.skipped_boxes} degenerate box(es) (no area inside the "
                      f"image, or malformed), clipped {ds.clipped_boxes} reaching outside their image", stacklevel=2)


class DetectionTask(Task):
    name = "detect"
    score = "bbox_mAP"
    metrics: tuple[str, ...] = BOX_METRICS  # Mask R-CNN runs add SEGM_METRICS (set by build_data)

    def check(self, cfg: dict[str, Any], device: torch.device) -> None:
        if cfg["mixup"] > 0 or cfg["cutmix"] > 0:
            raise ValueError("Mixup/CutMix are classification augmentations; set --mixup 0 --cutmix 0")
        if cfg["channels_last"]:
            raise ValueError("--channels-last is for batches of one image size; detection batches are lists of "
                             "images: drop it")
        if cfg["data"] is None:
            raise ValueError("detection needs --data: a COCO-layout folder (annotations/instances_<split>.json, "
                             "<split>/) (make one with `lstmvision detect scenes --output DIR`)")
        channels = int(cfg["fpn_channels"])
        if cfg["detector"] == "fcos" and (channels % 32 or channels < 64):
            raise ValueError(fcos_channels_message(channels))

    def build_data(self, cfg: dict[str, Any], world: int, rank: int, pin_memory: bool) -> Data:
        in_chans = int(cfg["in_chans"] or 3)
        img_mode = "L" if in_chans == 1 else "RGB"
        masks = cfg["detector"] == "maskrcnn"
        train_ds = CocoDetection(cfg["data"], cfg["train_split"], img_mode, masks=masks)
        val_ds = CocoDetection(cfg["data"], cfg["val_split"], img_mode, masks=masks,  # masks: the val loss
                               category_ids=train_ds.category_ids)
        for ds in (train_ds, val_ds):
            _report_boxes(ds)
        class_names = list(train_ds.class_names)
        num_classes = int(cfg["num_classes"] or len(class_names))
        if num_classes != len(class_names):
            raise ValueError(f"--num-classes {num_classes} differs from the {len(class_names)} categories of the data")
        fill_normalisation(cfg, in_chans)
        self.metrics = BOX_METRICS + (SEGM_METRICS if masks else ())
        train_ds = limit(train_ds, cfg["limit_train"], cfg["seed"])
        val_ds = limit(val_ds, cfg["limit_val"], seed=0)  # the same images as `detect validate --limit-val`
        workers = int(cfg["workers"])
        train_loader = build_loader(train_ds, DetectionTransform(cfg["hflip"]), cfg["batch_size"], True, workers,
                                    world, rank, cfg["seed"], pin_memory=pin_memory, collate_fn=collate_detection)
        val_loader = build_loader(val_ds, DetectionTransform(), 1, False, workers, world, rank,
                                  pin_memory=pin_memory, collate_fn=collate_detection)
        return Data(train_loader, val_loader, class_names, in_chans, in_chans, num_classes, len(train_loader),
                    len(train_ds), len(val_ds))

    def build_model(self, cfg: dict[str, Any], data: Data) -> nn.Module:
        model = create_for_config(cfg, data.num_classes, data.in_chans)
        model.class_names = list(data.class_names)
        model.pretrained_cfg = dict(model.pretrained_cfg, task="detect", detector=cfg["detector"],
                                    category_ids=list(base_dataset(data.train_loader.dataset).category_ids),
                                    train_split=cfg["train_split"], val_split=cfg["val_split"])
        if cfg["grad_checkpointing"]:
            model.set_grad_checkpointing(True)
        return model

    def build_loss(self, cfg: dict[str, Any], data: Data) -> tuple[nn.Module, Any]:
        return DetectionLoss(), None

    def evaluate(self, model: nn.Module, loader, device: torch.device, cfg: dict[str, Any], bad) -> dict[str, Any]:
        return evaluate_detection(model, loader, device, cfg["amp"], bad, losses=True)

    # the trainer's batch seam: lists of images and target dicts
    def to_device(self, x: Any, y: Any, device: torch.device) -> tuple[Any, Any]:
        images = [img.to(device, non_blocking=True) for img in x]
        targets = [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()} for t in y]
        return images, targets

    def batch_size(self, x: Any, y: Any) -> int:
        return len(x)

    def train_loss(self, model: nn.Module, x: Any, y: Any, criterion: nn.Module) -> torch.Tensor:
        return criterion(model(x, y), y)

    def probe_outputs(self, model: nn.Module, x: Any) -> torch.Tensor:
        return torch.cat([f.float().flatten() for f in model.features(x)])
