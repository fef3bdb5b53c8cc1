"""Image classification as a task of the training engine (the default, `cfg['task'] = 'classify'`), and the one
classifier evaluation: loss, top-1 and top-5 over a loader, exact across distributed ranks."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import accuracy

from lstmvision.data.classification import create_eval_transform
from lstmvision.data.images import BadImageCounter, DataError
from lstmvision.data.loaders import build_loader, dataset_source, limit, num_samples
from lstmvision.data.sources import resolve_dataset
from lstmvision.device import autocast_context, sum_over_ranks
from lstmvision.models.loading import create_model
from lstmvision.models.timm_models import timm_name
from lstmvision.tasks.base import Data, Task, fill_normalisation, model_kwargs


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device, amp: str = "none",
             channels_last: bool = False, bad: BadImageCounter | None = None) -> dict[str, Any]:
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss, top1 correct, top5 correct, count
    bad = bad or BadImageCounter()
    for x, y, skipped in loader:
        bad(skipped)
        if x is None:
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, amp):
            out = model(x)
        out = out.float()
        k = min(5, out.shape[1])
        top1, top5 = accuracy(out, y, topk=(1, k))
        n = y.shape[0]
        sums += torch.tensor([F.cross_entropy(out, y, reduction="sum").item(), top1.item() * n / 100,
                              top5.item() * n / 100, n], dtype=torch.float64)
    sums = sum_over_ranks(sums, device)
    model.train(was_training)
    if sums[3].item() == 0:
        raise DataError(f"no readable images in {dataset_source(loader.dataset)} (every evaluation image was skipped)")
    n = sums[3].item()
    return dict(loss=sums[0].item() / n, top1=100 * sums[1].item() / n, top5=100 * sums[2].item() / n,
                count=int(sums[3].item()), skipped=bad.count)


def build_model(cfg: dict[str, Any], num_classes: int, in_chans: int, class_names: list[str]) -> nn.Module:
    """The registered model `cfg['model']`, or any timm model as 'timm:NAME', with the run's data settings."""
    kwargs = model_kwargs(cfg)
    size = int(cfg["img_size"])
    if not isinstance(cfg["pretrained"], bool):  # build_model may be called without the config's checks
        raise ValueError(f"pretrained is a switch (true: the released weights of the model's tag), got "
                         f"{cfg['pretrained']!r}; a weights file or saved / run folder is initial_checkpoint")
    weights = cfg.get("initial_checkpoint") or cfg["pretrained"]
    if cfg.get("initial_checkpoint") and not timm_name(cfg["model"]):  # a saved folder's own rates would carry over
        kwargs.setdefault("drop_path_rate", cfg["drop_path"])
        kwargs.setdefault("drop_rate", cfg["drop"])
    built_size = kwargs.pop("img_size", size)  # --model-kwargs img_size wins (position embeddings)
    model = create_model(cfg["model"], weights, num_classes, in_chans, built_size, **kwargs).train()
    model.class_names = list(class_names)
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(in_chans, size, size), mean=tuple(cfg["mean"]),
                                std=tuple(cfg["std"]), crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"],
                                num_classes=num_classes)
    if cfg["grad_checkpointing"]:
        model.set_grad_checkpointing(True)
    return model


def build_transforms(cfg: dict[str, Any], in_chans: int):
    size = int(cfg["img_size"])
    input_size = (in_chans, size, size)
    crop_mode = cfg.get("crop_mode") or "center"  # 'squash': plain resize to the input size (transfer protocol)
    train_tf = create_transform(
        input_size, is_training=True, scale=tuple(cfg["scale"]), ratio=tuple(cfg["ratio"]), hflip=cfg["hflip"],
        color_jitter=cfg["color_jitter"] or None, auto_augment=cfg["aa"], interpolation=cfg["train_interpolation"],
        mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), re_prob=cfg["reprob"], re_mode=cfg["remode"],
    ) if not cfg.get("no_aug") else create_eval_transform(input_size, cfg["mean"], cfg["std"], 1.0,
                                                          cfg["interpolation"], crop_mode)
    eval_tf = create_eval_transform(input_size, tuple(cfg["mean"]), tuple(cfg["std"]), cfg["crop_pct"],
                                    cfg["interpolation"], crop_mode)
    return train_tf, eval_tf


class ClassificationTask(Task):
    name = "classify"
    score = "top1"
    metrics = ("top1", "top5")

    def check(self, cfg: dict[str, Any], device: torch.device) -> None:
        if (cfg["mixup"] > 0 or cfg["cutmix"] > 0) and cfg["batch_size"] % 2:
            raise ValueError("Mixup/CutMix needs an even --batch-size")

    def build_data(self, cfg: dict[str, Any], world: int, rank: int, pin_memory: bool) -> Data:
        """Datasets and loaders; fills in `cfg` mean/std for the model's channels (the run's private copy)."""
        train_ds = resolve_dataset(cfg["data"], "train", img_mode="L")
        class_names = list(train_ds.class_names)
        data_chans = 1 if getattr(train_ds, "grayscale", False) else 3
        in_chans = int(cfg["in_chans"] or data_chans)
        img_mode = "L" if in_chans == 1 else "RGB"
        train_ds.img_mode = img_mode
        val_ds = resolve_dataset(cfg["data"], "val", img_mode=img_mode, class_names=class_names)
        if hasattr(train_ds, "dataset"):
            train_ds.dataset.img_mode = img_mode
        train_ds = limit(train_ds, cfg["limit_train"], cfg["seed"])
        # not the run's seed: the same images as `lstmvision validate --limit-val N` (seed 0), whatever --seed
        val_ds = limit(val_ds, cfg["limit_val"], seed=0)
        num_classes = int(cfg["num_classes"] or len(class_names))
        if num_classes < len(class_names):
            raise ValueError(f"--num-classes {num_classes} is smaller than the {len(class_names)} classes in the data")
        fill_normalisation(cfg, in_chans)
        train_tf, eval_tf = build_transforms(cfg, in_chans)
        batch, workers = cfg["batch_size"], int(cfg["workers"])
        train_loader = build_loader(train_ds, train_tf, batch, True, workers, world, rank, cfg["seed"],
                                    pin_memory=pin_memory, drop_last=cfg["mixup"] > 0 or cfg["cutmix"] > 0)
        val_loader = build_loader(val_ds, eval_tf, batch * 2, False, workers, world, rank, pin_memory=pin_memory)
        if len(train_loader) == 0:
            raise DataError("the training set is smaller than one batch; lower --batch-size")
        return Data(train_loader, val_loader, class_names, in_chans, data_chans, num_classes, len(train_loader),
                    num_samples(train_ds), num_samples(val_ds))

    def build_model(self, cfg: dict[str, Any], data: Data) -> nn.Module:
        return build_model(cfg, data.num_classes, data.in_chans, data.class_names)

    def build_loss(self, cfg: dict[str, Any], data: Data) -> tuple[nn.Module, Any]:
        if cfg["mixup"] > 0 or cfg["cutmix"] > 0:
            mixup = Mixup(mixup_alpha=cfg["mixup"], cutmix_alpha=cfg["cutmix"], prob=cfg["mixup_prob"],
                          switch_prob=cfg["mixup_switch_prob"], label_smoothing=cfg["smoothing"],
                          num_classes=data.num_classes)
            return SoftTargetCrossEntropy(), mixup
        if cfg["smoothing"]:
            return LabelSmoothingCrossEntropy(cfg["smoothing"]), None
        return nn.CrossEntropyLoss(), None

    def evaluate(self, model: nn.Module, loader, device: torch.device, cfg: dict[str, Any], bad) -> dict[str, Any]:
        return evaluate(model, loader, device, cfg["amp"], cfg["channels_last"], bad)
