"""One-call image classification with a model's own preprocessing.

    clf = lstmvision.Classifier.from_pretrained("runs/fmnist/best")   # folder written by save_pretrained
    clf("shoe.png")            # -> Prediction(label='Sneaker', index=7, score=0.93, top_k=[...])
    clf(["a.png", pil_image])  # -> [Prediction, Prediction]
    clf.probabilities(batch)   # -> (B, num_classes) tensor

Preprocessing comes from the model's `pretrained_cfg` through timm (`resolve_data_config` + `create_transform`,
eval mode: resize by `crop_pct`, centre crop to `input_size`, to tensor, normalise with `mean`/`std`). Images
are converted to the model's number of input channels (grayscale models get `convert('L')`).

Inputs: a PIL image, a path, a numpy HWC image, a uint8 tensor (C,H,W)/(B,C,H,W) holding raw pixels, or a
float tensor that is already preprocessed ((C,H,W) or (B,C,H,W)), or a list of images/paths/arrays. A single
input gives one `Prediction`, a list or a batch gives a list.

Labels: `model.class_names` (saved in config.json by `save_pretrained`), else the ImageNet-1k descriptions for
1000-class models, else the class indices as strings.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from timm.data import ImageNetInfo, create_transform, resolve_data_config
from torch.utils.data import IterableDataset
from torchvision.transforms.functional import to_pil_image

from lstmvision.data.classification import check_eval_settings, fit_channels
from lstmvision.data.images import BadImage, open_image, open_image_or_skip, to_mode
from lstmvision.device import resolve_device
from lstmvision.models import is_model
from lstmvision.models.loading import check_input_size, create_model

__all__ = ["Classifier", "Prediction"]


@dataclass
class Prediction:
    """The top class of one image and the `top_k` best as (label, index, probability)."""

    label: str
    index: int
    score: float
    top_k: list[tuple[str, int, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(label=self.label, index=self.index, score=self.score,
                    top_k=[dict(label=lab, index=i, score=s) for lab, i, s in self.top_k])


def model_in_chans(model: nn.Module) -> int:
    """Input channels of `model`: those of its first conv (`pretrained_cfg['first_conv']`, else the first
    Conv2d), else the cfg's `input_size`."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    first = cfg.get("first_conv")
    if isinstance(first, str):
        try:
            conv = model.get_submodule(first)
            if hasattr(conv, "in_channels"):
                return int(conv.in_channels)
        except AttributeError:
            pass
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(conv.in_channels) if conv is not None else int(cfg.get("input_size", (3,))[0])


def data_config(
    model: nn.Module, img_size: int | None = None, crop_pct: float | None = None, interpolation: str | None = None
) -> dict[str, Any]:
    """timm's eval data config for `model`, with input channels, mean and std matched to its first conv;
    `img_size`, `crop_pct` and `interpolation` override the model's own values."""

    check_eval_settings(crop_pct, interpolation)
    if img_size and getattr(model, "model_name", None) and hasattr(model, "model_kwargs"):
        if is_model(model.model_name):
            check_input_size(model.model_name, model.model_kwargs, model_in_chans(model), img_size)
    cfg = resolve_data_config({}, model=model)
    chans = model_in_chans(model)
    if img_size:
        cfg["input_size"] = (chans, img_size, img_size)
    if crop_pct:
        cfg["crop_pct"] = crop_pct
    if interpolation:
        cfg["interpolation"] = interpolation
    cfg["input_size"] = (chans, *tuple(cfg["input_size"])[1:])
    cfg["mean"] = fit_channels(cfg["mean"], chans)
    cfg["std"] = fit_channels(cfg["std"], chans)
    return cfg


def class_names_for(model: nn.Module) -> list[str]:
    names = getattr(model, "class_names", None)
    n = int(getattr(model, "num_classes", 0) or 0)
    if names and len(names) == n:
        return [str(x) for x in names]
    if n == 1000:
        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(n)]
    return [str(i) for i in range(n)]


class Classifier:
    """A model in eval mode plus its preprocessing and class names; call it on images to classify them."""

    def __init__(self, model: nn.Module, device: str | torch.device | None = None,
                 class_names: Sequence[str] | None = None, **data_overrides: Any):
        if not int(getattr(model, "num_classes", 0) or 0):
            raise ValueError("Classifier needs a model with a classification head (num_classes > 0)")
        self.device = resolve_device(None if device is None else str(device))
        self.model = model.eval().to(self.device)
        self.data_config = data_config(model, **data_overrides)
        self.transform = create_transform(**self.data_config, is_training=False)
        self.in_chans = self.data_config["input_size"][0]
        if class_names is not None and len(class_names) != model.num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {model.num_classes} classes")
        self.class_names = list(class_names) if class_names is not None else class_names_for(model)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        model_name: str | None = None, **kwargs: Any) -> "Classifier":
        """From a folder written by `save_pretrained` or a training run folder, or a weights file together with
        `model_name` (as `lstmvision.models.loading.create_model`)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no model at {path}")
        if path.is_file() and model_name is None:
            raise ValueError(f"{path} is a weights file: give model_name= (the architecture it holds)")
        if model_name is None:
            return cls(create_model(path, **kwargs).eval(), device=device)
        return cls(create_model(model_name, pretrained=path, **kwargs).eval(), device=device)

    # ---------------------------------------------------------------------------------- preprocessing
    def _image(self, item: Any) -> Image.Image:
        if isinstance(item, (str, os.PathLike)):
            if not Path(item).is_file():
                raise FileNotFoundError(f"image not found: {item}")
            item = open_image(item, "L" if self.in_chans == 1 else "RGB")
        elif isinstance(item, np.ndarray):
            item = Image.fromarray(item)
        elif isinstance(item, torch.Tensor):  # raw uint8 pixels (C,H,W)

            item = to_pil_image(item.cpu())
        if not isinstance(item, Image.Image):
            raise TypeError(f"cannot classify a {type(item).__name__}: give PIL images, paths, arrays or tensors")
        return to_mode(item, "L" if self.in_chans == 1 else "RGB")

    def preprocess(self, inputs: Any) -> tuple[torch.Tensor, bool]:
        """(batch tensor on the model's device, whether the input was a single image)."""
        if isinstance(inputs, torch.Tensor) and inputs.is_floating_point():
            single = inputs.dim() == 3
            batch = inputs.unsqueeze(0) if single else inputs
            if batch.dim() != 4 or batch.shape[1] != self.in_chans:
                raise ValueError(
                    f"a preprocessed tensor must be (C,H,W) or (B,C,H,W) with C={self.in_chans}, "
                    f"got {tuple(inputs.shape)}"
                )
            return batch.to(self.device), single
        if isinstance(inputs, torch.Tensor):  # integer tensors hold raw pixels
            if inputs.dim() == 3:
                items, single = [inputs], True
            elif inputs.dim() == 4:
                items, single = list(inputs), False
            else:
                raise ValueError(f"an image tensor must be (C,H,W) or (B,C,H,W), got {tuple(inputs.shape)}")
        elif isinstance(inputs, (list, tuple)):
            if not inputs:
                raise ValueError("no images given")
            items, single = list(inputs), False
        else:
            items, single = [inputs], True
        batch = torch.stack([self.transform(self._image(item)) for item in items])
        return batch.to(self.device), single

    # ------------------------------------------------------------------------------------ inference
    @torch.inference_mode()
    def logits(self, inputs: Any) -> torch.Tensor:
        batch, _ = self.preprocess(inputs)
        return self.model(batch).float()

    def probabilities(self, inputs: Any) -> torch.Tensor:
        """Softmax probabilities, (B, num_classes) (B=1 for a single image)."""
        return self.logits(inputs).softmax(dim=-1)

    def predict(self, inputs: Any, top_k: int = 5) -> Prediction | list[Prediction]:
        """Top-`top_k` classes of each image: one `Prediction` for one image, a list for several."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        batch, single = self.preprocess(inputs)
        with torch.inference_mode():
            probs = self.model(batch).float().softmax(dim=-1).cpu()
        k = min(top_k, probs.shape[-1])
        scores, indices = probs.topk(k, dim=-1)
        out = []
        for s_row, i_row in zip(scores.tolist(), indices.tolist()):
            best = [(self.class_names[i], int(i), float(s)) for s, i in zip(s_row, i_row)]
            out.append(Prediction(best[0][0], best[0][1], best[0][2], best))
        return out[0] if single else out

    __call__ = predict

    def predict_files(self, files: Sequence[str | os.PathLike], top_k: int = 5, batch_size: int = 64,
                      strict: bool = False) -> tuple[list[dict[str, Any]], int]:
        """Top-`top_k` of each image file, read and classified `batch_size` at a time: ([{file, predictions}],
        number of unreadable files skipped); with `strict` an unreadable file is a ValueError."""
        results: list[dict[str, Any]] = []
        skipped = 0
        batch: list[tuple[Path, Image.Image]] = []

        def flush() -> None:
            if batch:
                for (path, _), pred in zip(batch, self.predict([img for _, img in batch], top_k=top_k)):
                    results.append(dict(file=str(path), predictions=[
                        dict(label=label, index=i, prob=round(prob, 6)) for label, i, prob in pred.top_k]))
                batch.clear()

        for f in map(Path, files):
            img = open_image_or_skip(f, "L" if self.in_chans == 1 else "RGB", strict)  # 16-bit / float scaled
            if img is None:
                skipped += 1
                continue
            batch.append((f, img))
            if len(batch) >= batch_size:
                flush()
        flush()
        return results, skipped

    def predict_dataset(self, dataset: Any, top_k: int = 5, batch_size: int = 64,
                        strict: bool = False, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """Top-`top_k` of each sample (the first `limit`) of a dataset (`lstmvision.data.resolve_dataset`: folders,
        idx files, shards, Hugging Face datasets), in its order: ([{sample, label, predictions}], unreadable
        samples skipped); `label` is the sample's own class."""
        dataset.transform = None
        samples = iter(dataset) if isinstance(dataset, IterableDataset) else (dataset[i] for i in range(len(dataset)))
        results: list[dict[str, Any]] = []
        skipped = 0
        batch: list[tuple[int, Image.Image, int]] = []

        def flush() -> None:
            for (i, _, label), pred in zip(batch, self.predict([img for _, img, _ in batch], top_k=top_k)):
                results.append(dict(sample=i, label=dataset.class_names[label], predictions=[
                    dict(label=name, index=k, prob=round(prob, 6)) for name, k, prob in pred.top_k]))
            batch.clear()

        for i, item in enumerate(samples):
            if limit is not None and i >= limit:
                break
            if isinstance(item, BadImage):
                if strict:
                    raise ValueError(f"unreadable image {item.path} ({item.reason}); drop --strict-images to skip it")
                skipped += 1
                continue
            batch.append((i, item[0], item[1]))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        return results, skipped

    def __repr__(self) -> str:
        name = getattr(self.model, "model_name", type(self.model).__name__)
        size = "x".join(str(s) for s in self.data_config["input_size"][1:])
        return f"Classifier({name}, {len(self.class_names)} classes, {size}, device={self.device})"
