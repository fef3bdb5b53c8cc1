"""What the trainer trains. A task reads the data, builds the model and its loss, and scores the model; the loop,
checkpoints, resume, DDP, AMP, EMA and progress are the trainer's and the same for every task.

- `classify` (`ClassificationTask`): image classification, top-1 / top-5 (the default).
- `segment` (`lstmvision.engine.segmentation.SegmentationTask`): semantic segmentation, mIoU / aAcc / mAcc.

`cfg['task']` picks one; `get_task` returns it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from lstmvision.data import DataError, build_loader, create_eval_transform, limit, resolve_dataset
from lstmvision.engine.evaluate import evaluate
from lstmvision.runtime import TIMM_PREFIX, create_timm_model, fit_channels


@dataclass
class Data:
    train_loader: Any
    val_loader: Any
    class_names: list[str]
    in_chans: int
    data_chans: int  # channels of the images themselves (1: grayscale data), whatever the model takes
    num_classes: int
    steps_per_epoch: int
    n_train: int
    n_val: int


class Task:
    """The task-specific parts of a training run."""

    name = ""
    score = ""  # the validation metric that picks best/ (higher is better)
    metrics: tuple[str, ...] = ()  # summary.csv columns after val_loss, in order

    def check(self, cfg: dict[str, Any], device: torch.device) -> None:
        """Combinations of settings the task cannot run (one clear error before anything is built)."""

    def build_data(self, cfg: dict[str, Any], world: int, rank: int, pin_memory: bool) -> Data:
        raise NotImplementedError

    def build_model(self, cfg: dict[str, Any], data: Data) -> nn.Module:
        raise NotImplementedError

    def build_loss(self, cfg: dict[str, Any], data: Data) -> tuple[nn.Module, Any]:
        """The training loss and the batch mixer (Mixup/CutMix) or None."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, loader, device: torch.device, cfg: dict[str, Any], bad) -> dict[str, Any]:
        """Validation metrics: `loss` and every name in `metrics` (plus anything else worth logging)."""
        raise NotImplementedError


def fill_normalisation(cfg: dict[str, Any], in_chans: int) -> None:
    """Mean/std for the model's channels: Fashion-MNIST's for grayscale, ImageNet's for RGB unless given."""
    if cfg["mean"] is None or cfg["std"] is None:
        from lstmvision.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD
        from lstmvision.models.registry import IMAGENET_MEAN, IMAGENET_STD

        gray = in_chans == 1
        cfg["mean"] = list(FASHION_MNIST_MEAN if gray else IMAGENET_MEAN)
        cfg["std"] = list(FASHION_MNIST_STD if gray else IMAGENET_STD)
    cfg["mean"], cfg["std"] = list(fit_channels(cfg["mean"], in_chans)), list(fit_channels(cfg["std"], in_chans))


def model_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """--model-kwargs plus the regularisation settings the model takes as arguments."""
    kwargs = dict(cfg.get("model_kwargs") or {})
    if cfg["drop_path"]:
        kwargs["drop_path_rate"] = cfg["drop_path"]
    if cfg["drop"]:
        kwargs["drop_rate"] = cfg["drop"]
    return kwargs


# ------------------------------------------------------------------------------------ classification
def build_model(cfg: dict[str, Any], num_classes: int, in_chans: int, class_names: list[str]) -> nn.Module:
    """The registered model `cfg['model']`, or any timm model as 'timm:NAME', with the run's data settings."""
    kwargs = model_kwargs(cfg)
    size = int(cfg["img_size"])
    if cfg["model"].startswith(TIMM_PREFIX):
        model = create_timm_model(cfg["model"][len(TIMM_PREFIX):], num_classes, in_chans, size, kwargs)
        if cfg["pretrained"]:
            from lstmvision.weights import load_pretrained

            load_pretrained(model, cfg["pretrained"])
    else:
        from lstmvision.models import create_model, is_model

        if not is_model(cfg["model"]):
            create_model(cfg["model"])  # raises the registry's "unknown model" error with suggestions
        kwargs.setdefault("img_size", size)  # models with position embeddings need it (ViL)
        if cfg["pretrained"]:  # a saved folder's own rates would otherwise carry over to the fine-tuning
            kwargs.setdefault("drop_path_rate", cfg["drop_path"])
            kwargs.setdefault("drop_rate", cfg["drop"])
        model = create_model(cfg["model"], pretrained=cfg["pretrained"], num_classes=num_classes,
                             in_chans=in_chans, **kwargs)
    model.class_names = list(class_names)
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(in_chans, size, size), mean=tuple(cfg["mean"]),
                                std=tuple(cfg["std"]), crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"],
                                num_classes=num_classes)
    if cfg["grad_checkpointing"]:
        model.set_grad_checkpointing(True)
    return model


def build_transforms(cfg: dict[str, Any], in_chans: int):
    from timm.data import create_transform

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
        val_ds = limit(val_ds, cfg["limit_val"], cfg["seed"])
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
                    len(train_ds), len(val_ds))

    def build_model(self, cfg: dict[str, Any], data: Data) -> nn.Module:
        return build_model(cfg, data.num_classes, data.in_chans, data.class_names)

    def build_loss(self, cfg: dict[str, Any], data: Data) -> tuple[nn.Module, Any]:
        from timm.data import Mixup
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

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


def get_task(name: str | None) -> Task:
    """The task `name` ('classify' when None)."""
    if name in (None, "classify"):
        return ClassificationTask()
    if name == "segment":
        from lstmvision.engine.segmentation import SegmentationTask

        return SegmentationTask()
    raise ValueError(f"unknown task {name!r}; choose classify or segment")
