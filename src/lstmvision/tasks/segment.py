"""Semantic segmentation as a task of the training engine (`cfg['task'] = 'segment'`, `lstmvision segment`).

UperNet (`lstmvision.models.upernet`) on any backbone, trained with the ADE20K protocol of vision-lstm.md §4.3:
random resize around `seg_base_size`, category-max-ratio crops of `img_size`, flip, photometric distortion,
padding with the ignore index; cross-entropy on the main logits plus `aux_weight` x the auxiliary FCN head's.
Evaluation runs a sliding window (`img_size` crops, `seg_stride`) over each image resized to `seg_base_size`,
scores at annotation resolution and reports mIoU, aAcc and mAcc (mmseg's definitions: classes absent from both
prediction and ground truth are left out of the means).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics.classification import MulticlassConfusionMatrix

from lstmvision.data.images import BadImageCounter, DataError
from lstmvision.data.loaders import build_loader, dataset_source, limit
from lstmvision.data.segmentation import SegEvalTransform, SegmentationDataset, SegTrainTransform
from lstmvision.device import autocast_context, sum_over_ranks
from lstmvision.models.upernet import create_segmenter, segment_logits
from lstmvision.tasks.base import Data, Task, backbone_weights, fill_normalisation, model_kwargs


class SegmentationLoss(nn.Module):
    """Cross-entropy over labelled pixels of the main logits, plus `aux_weight` x that of the auxiliary logits."""

    def __init__(self, ignore_index: int, aux_weight: float = 0.4, smoothing: float = 0.0):
        super().__init__()
        self.ignore_index, self.aux_weight, self.smoothing = ignore_index, aux_weight, smoothing

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index, label_smoothing=self.smoothing)

    def forward(self, out: torch.Tensor | tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(out, tuple):
            main, aux = out
            return self._ce(main, target) + self.aux_weight * self._ce(aux, target)
        return self._ce(out, target)


def default_stride(crop: int) -> int:
    """The sliding-window stride when none is set: 2/3 of the crop (ADE20K's 341 for 512)."""
    return max(1, round(crop * 2 / 3))


def eval_stride(cfg: dict[str, Any]) -> int:
    return int(cfg.get("seg_stride") or default_stride(int(cfg["img_size"])))


def confusion_scores(confusion: torch.Tensor) -> dict[str, Any]:
    """mIoU, aAcc, mAcc (percent) and per-class IoU / accuracy from a (target, prediction) confusion matrix."""
    conf = confusion.double()
    tp, target_n, pred_n = conf.diag(), conf.sum(1), conf.sum(0)
    union = target_n + pred_n - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    acc = torch.where(target_n > 0, tp / target_n.clamp(min=1), torch.full_like(tp, float("nan")))
    total = conf.sum()
    return dict(miou=100 * iou.nanmean().item(), aacc=100 * (tp.sum() / total.clamp(min=1)).item(),
                macc=100 * acc.nanmean().item(), iou=[100 * v for v in iou.tolist()],
                acc=[100 * v for v in acc.tolist()], pixels=int(total.item()))


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader, device: torch.device, num_classes: int, crop: int, stride: int,
                          amp: str = "none", scales: Sequence[float] = (1.0,), flip: bool = False,
                          ignore_index: int = 255, bad: BadImageCounter | None = None,
                          on_batch=None) -> dict[str, Any]:
    """Sliding-window (optionally multi-scale + flip) evaluation; exact across distributed ranks.

    `on_batch(images, masks, predictions)` sees every evaluated batch (for example pictures)."""

    was_training = model.training
    model.eval()
    bad = bad or BadImageCounter()
    confusion = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index).to(device)
    sums = torch.zeros(3, dtype=torch.float64)  # loss sum, labelled pixels, images
    tta = len(scales) > 1 or flip
    for x, y, skipped in loader:
        bad(skipped)
        if x is None:
            continue
        x, y = x.to(device), y.to(device)
        with autocast_context(device, amp):
            out = segment_logits(model, x, mode="slide", crop=crop, stride=stride, scales=scales, flip=flip,
                                 out_size=tuple(y.shape[-2:]))
        out = out.float()
        pred = out.argmax(1)
        confusion.update(pred, y)
        labelled = (y != ignore_index).sum().item()
        if labelled:
            log_probs = out.clamp_min(1e-12).log() if tta else out.log_softmax(1)  # TTA averages probabilities
            loss = F.nll_loss(log_probs, y, ignore_index=ignore_index, reduction="sum")
            sums += torch.tensor([loss.item(), labelled, x.shape[0]], dtype=torch.float64)
        else:
            sums[2] += x.shape[0]
        if on_batch is not None:
            on_batch(x, y, pred)
    sums = sum_over_ranks(sums, device)
    model.train(was_training)
    if sums[2].item() == 0:
        raise DataError(f"no readable images in {dataset_source(loader.dataset)} (every evaluation image was skipped)")
    result = confusion_scores(confusion.compute())
    result.update(loss=sums[0].item() / max(sums[1].item(), 1), count=int(sums[2].item()), skipped=bad.count)
    return result


def create_for_config(cfg: dict[str, Any], num_classes: int, in_chans: int) -> nn.Module:
    """The UperNet `cfg` describes (backbone `cfg['model']`), with the attributes save_pretrained needs."""
    kwargs = model_kwargs(cfg)
    drop_path = kwargs.pop("drop_path_rate", 0.0)
    kwargs.pop("drop_rate", None)
    return create_segmenter(cfg["model"], num_classes, in_chans=in_chans, img_size=int(cfg["img_size"]),
                            pretrained=backbone_weights(cfg), decoder_channels=cfg.get("decoder_channels"),
                            drop_path_rate=drop_path, model_kwargs=kwargs,
                            aux=float(cfg.get("aux_weight", 0.4)) > 0)


class SegmentationTask(Task):
    name = "segment"
    score = "miou"
    metrics = ("miou", "aacc", "macc")

    def check(self, cfg: dict[str, Any], device: torch.device) -> None:
        if cfg["mixup"] > 0 or cfg["cutmix"] > 0:
            raise ValueError("Mixup/CutMix are classification augmentations; set --mixup 0 --cutmix 0")
        if cfg["data"] is None:
            raise ValueError("segmentation needs --data: an ADE20K-layout or images/ + masks/ folder "
                             "(make one with `lstmvision segment scenes --output DIR`)")
        if cfg["batch_size"] < 2:
            raise ValueError("segmentation training needs --batch-size >= 2 (the decoder has BatchNorm)")

    def build_data(self, cfg: dict[str, Any], world: int, rank: int, pin_memory: bool) -> Data:
        in_chans = int(cfg["in_chans"] or 3)
        img_mode = "L" if in_chans == 1 else "RGB"
        train_ds = SegmentationDataset(cfg["data"], "train", img_mode=img_mode)
        val_ds = SegmentationDataset(cfg["data"], "val", img_mode=img_mode, class_names=train_ds.class_names)
        class_names = list(train_ds.class_names)
        num_classes = int(cfg["num_classes"] or len(class_names))
        if num_classes != len(class_names):
            raise ValueError(f"--num-classes {num_classes} differs from the {len(class_names)} classes of the data")
        fill_normalisation(cfg, in_chans)
        base = tuple(cfg["seg_base_size"])
        train_tf = SegTrainTransform(int(cfg["img_size"]), base_size=base, ratio_range=tuple(cfg["seg_ratio_range"]),
                                     cat_max_ratio=cfg["seg_cat_max_ratio"], hflip=cfg["hflip"],
                                     photometric=cfg["photometric"], mean=cfg["mean"], std=cfg["std"],
                                     ignore_index=train_ds.ignore_index)
        eval_tf = SegEvalTransform(base_size=base, mean=cfg["mean"], std=cfg["std"])
        train_ds = limit(train_ds, cfg["limit_train"], cfg["seed"])
        val_ds = limit(val_ds, cfg["limit_val"], seed=0)  # the same images as `segment validate --limit-val`
        workers = int(cfg["workers"])
        train_loader = build_loader(train_ds, train_tf, cfg["batch_size"], True, workers, world, rank, cfg["seed"],
                                    pin_memory=pin_memory, drop_last=True)  # BatchNorm: no batch of one
        # images of any size: one per batch, as mmseg evaluates
        val_loader = build_loader(val_ds, eval_tf, 1, False, workers, world, rank, pin_memory=pin_memory)
        if len(train_loader) == 0:
            raise DataError("the training set is smaller than one batch; lower --batch-size")
        return Data(train_loader, val_loader, class_names, in_chans, in_chans, num_classes, len(train_loader),
                    len(train_ds), len(val_ds))

    def build_model(self, cfg: dict[str, Any], data: Data) -> nn.Module:
        model = create_for_config(cfg, data.num_classes, data.in_chans)
        size = int(cfg["img_size"])
        model.class_names = list(data.class_names)
        model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(data.in_chans, size, size),
                                    mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), num_classes=data.num_classes,
                                    task="segment", seg_base_size=list(cfg["seg_base_size"]),
                                    seg_stride=eval_stride(cfg), ignore_index=255)
        if cfg["grad_checkpointing"]:
            model.set_grad_checkpointing(True)
        return model

    def build_loss(self, cfg: dict[str, Any], data: Data) -> tuple[nn.Module, Any]:
        return SegmentationLoss(255, float(cfg["aux_weight"]), float(cfg["smoothing"])), None

    def evaluate(self, model: nn.Module, loader, device: torch.device, cfg: dict[str, Any], bad) -> dict[str, Any]:
        num_classes = int(model.num_classes)
        return evaluate_segmentation(model, loader, device, num_classes, int(cfg["img_size"]), eval_stride(cfg),
                                     cfg["amp"], bad=bad)
