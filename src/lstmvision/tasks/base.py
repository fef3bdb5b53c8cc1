"""The seam between the trainer and what it trains: `Task` (data, model, loss, scoring) and `Data` (loaders and
what they hold), with the helpers every task shares."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from lstmvision.constants import FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD
from lstmvision.data.classification import fit_channels
from lstmvision.models import hub
from lstmvision.models.registry import get_pretrained_cfg


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

    # How the trainer handles a batch `(x, y)` of the task's loader. The defaults are for tensor batches (an
    # image batch and its labels or masks); detection overrides them for lists of images and target dicts.
    def to_device(self, x: Any, y: Any, device: torch.device) -> tuple[Any, Any]:
        """The batch on `device`."""
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def batch_size(self, x: Any, y: Any) -> int:
        """Images in the batch (the weight of its loss in the epoch's mean, images/s)."""
        return y.shape[0]

    def train_loss(self, model: nn.Module, x: Any, y: Any, criterion: nn.Module) -> torch.Tensor:
        """The training loss of the batch (run under the trainer's autocast)."""
        return criterion(as_float(model(x)), y)

    def probe_outputs(self, model: nn.Module, x: Any) -> torch.Tensor:
        """What must be finite when `model` (in eval mode, no grad) runs on the training batch `x` before a
        checkpoint is saved."""
        return model(x).float()


def as_float(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Model outputs in float32 for the loss (autocast may give half precision)."""
    return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


def fill_normalisation(cfg: dict[str, Any], in_chans: int) -> None:
    """Mean/std for the model's channels: Fashion-MNIST's for grayscale, ImageNet's for RGB unless given."""
    if cfg["mean"] is None or cfg["std"] is None:
        gray = in_chans == 1
        cfg["mean"] = list(FASHION_MNIST_MEAN if gray else IMAGENET_MEAN)
        cfg["std"] = list(FASHION_MNIST_STD if gray else IMAGENET_STD)
    cfg["mean"], cfg["std"] = list(fit_channels(cfg["mean"], in_chans)), list(fit_channels(cfg["std"], in_chans))


def backbone_weights(cfg: dict[str, Any]) -> Any:
    """The classification weights a segmenter's or detector's backbone starts from: --initial-checkpoint, or with
    --pretrained the released weights of the backbone's tag (timm backbones: refused by the config), or None."""
    if cfg.get("pretrained"):
        released = get_pretrained_cfg(cfg["model"])
        return hub.weights_file(released, f"{cfg['model']}.{released['tag']}")
    return cfg.get("initial_checkpoint")


def model_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """--model-kwargs plus the regularisation settings the model takes as arguments."""
    kwargs = dict(cfg.get("model_kwargs") or {})
    if cfg["drop_path"]:
        kwargs["drop_path_rate"] = cfg["drop_path"]
    if cfg["drop"]:
        kwargs["drop_rate"] = cfg["drop"]
    return kwargs
