"""Shared pieces of the analysis tools (resolution sweep, ERF, robustness, memory).

Model specs (one string each, so a sweep can compare several):
- a folder written by `save_pretrained` or a training run / checkpoint folder (`best/`, `last/` inside);
- a registered lstmvision name (`sequencer2d_tiny`), random init unless weights are given separately;
- `timm:NAME` (e.g. `timm:deit_tiny_patch16_224`), built by timm without downloading anything.

Every model is used on its own input channels and normalisation (from its `pretrained_cfg`); images are
resized (or resized + centre-cropped with `crop_pct` < 1) to the requested square size.
"""
from __future__ import annotations

import contextlib
import json
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from lstmvision.data import resolve_dataset
from lstmvision.runtime import TIMM_PREFIX, create_timm_model, resolve_device  # noqa: F401  (the tools call C.resolve_device)
from lstmvision.cli._common import checkpoint_folder
from lstmvision.weights import CONFIG_NAME, WEIGHTS_NAME

def load_model(spec: str, pretrained: str | None = None, num_classes: int | None = None,
               in_chans: int | None = None, img_size: int | None = None) -> nn.Module:
    """Build the model named by `spec` (see the module docstring), in eval mode, with `.label` set."""
    from lstmvision.models import create_model

    path = Path(spec)
    folder = checkpoint_folder(path) if path.exists() else None
    if folder is not None:
        saved = json.loads((folder / CONFIG_NAME).read_text())
        arch = saved.get("architecture", "")
        if arch.startswith(TIMM_PREFIX):
            from lstmvision.weights import load_state_dict_into, read_state_dict

            model = create_timm_model(arch[len(TIMM_PREFIX):], saved.get("num_classes"), None, None, saved.get("kwargs"))
            load_state_dict_into(model, read_state_dict(folder / WEIGHTS_NAME), source=str(folder))
            model.pretrained_cfg = {**dict(model.pretrained_cfg or {}), **(saved.get("pretrained_cfg") or {})}
            model.class_names = saved.get("class_names")
        else:
            model = create_model(pretrained=folder, num_classes=num_classes)
        label = path.name if path.name not in ("best", "last") else path.parent.name
    elif spec.startswith(TIMM_PREFIX):
        model = create_timm_model(spec[len(TIMM_PREFIX):], num_classes, in_chans, img_size)
        if pretrained:
            from lstmvision.weights import load_state_dict_into, read_state_dict

            load_state_dict_into(model, read_state_dict(pretrained), source=pretrained)
        label = spec[len(TIMM_PREFIX):]
    else:
        kw = {"in_chans": in_chans} if in_chans else {}
        model = create_model(spec, pretrained=pretrained, num_classes=num_classes, **kw)
        label = spec
    model.label = label
    return model.eval()


def model_in_chans(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return int(dict(getattr(model, "pretrained_cfg", {}) or {}).get("input_size", (3,))[0])


def model_norm(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) from the model's cfg, averaged to one value for a 1-channel model."""
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    mean, std = list(cfg.get("mean", (0.5,))), list(cfg.get("std", (0.5,)))
    c = model_in_chans(model)
    if len(mean) != c:
        mean, std = [sum(mean) / len(mean)] * c, [sum(std) / len(std)] * c
    return tuple(mean), tuple(std)


def model_native_size(model: nn.Module) -> int:
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    return int(cfg.get("input_size", (3, 224, 224))[-1])


class Normalized(nn.Module):
    """`model(normalize(x))` for inputs in [0, 1] (attacks work in pixel space, as advertorch does)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


@contextlib.contextmanager
def rnns_in_train_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with every nn.LSTM/GRU/RNN in train mode, as cuDNN RNN backward requires (the official
    `train_rnn`). The RNNs here have no dropout, so outputs are unchanged. Restores the modes afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            m.train()
    try:
        yield model
    finally:
        for m, t in modes.items():
            m.training = t


def device_description(device: torch.device) -> str:
    from lstmvision.benchmark import device_name

    extra = f"CUDA {torch.version.cuda}, " if device.type == "cuda" else ""
    return f"{device_name(device)}, {extra}torch {torch.__version__}"


def parse_fraction(text: str) -> float:
    """'0.0039', '1/255' -> float."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"not a number: {text!r} (use e.g. 0.004 or 1/255)") from None


# --------------------------------------------------------------------------------------------- data
def open_dataset(path: str | None, split: str = "val"):
    """The `split` of the dataset at `path`: items are (PIL image, label), read by `lstmvision.data`."""
    if path is None:
        raise ValueError("--data PATH is required (an ImageFolder tree with val/, or a folder of idx files)")
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"data not found: {root}")
    if not root.is_dir():
        raise ValueError(f"--data must be a folder, got the file {root}")
    ds = resolve_dataset(root, split, img_mode="RGB")
    ds.transform = None
    if len(ds) == 0:
        raise ValueError(f"the {split} set at {root} is empty")
    return ds


def subset_indices(n_total: int, n: int | None, seed: int = 0) -> list[int]:
    if not n or n >= n_total:
        return list(range(n_total))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_total, generator=g)[:n].tolist())


def resize_image(img: Image.Image, size: int, crop_pct: float = 1.0, interpolation: str = "bicubic") -> Image.Image:
    """Resize so the centre `crop_pct` of the shorter side becomes `size`, then centre-crop size x size."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    mode = InterpolationMode(interpolation)
    scale = int(round(size / crop_pct))
    img = TF.resize(img, scale, interpolation=mode)
    img = TF.center_crop(img, [size, size])
    return img


def to_model_tensor(img: Image.Image | np.ndarray, in_chans: int) -> torch.Tensor:
    """PIL / uint8 HWC array -> float (C, H, W) in [0, 1] with the model's channel count."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    img = img.convert("L" if in_chans == 1 else "RGB")
    t = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).float().div_(255)
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    if in_chans not in (1, 3):
        t = t[:1].expand(in_chans, -1, -1)
    return t


class MappedDataset(torch.utils.data.Dataset):
    """`fn(pil_image) -> tensor` applied to the items `indices` of a (PIL, label) dataset."""

    def __init__(self, base, indices: Sequence[int], fn: Callable[[Image.Image, int], torch.Tensor]):
        self.base, self.indices, self.fn = base, list(indices), fn

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        item = self.base[self.indices[i]]
        if not isinstance(item, tuple):  # lstmvision.data marks unreadable files instead of raising
            raise ValueError(f"unreadable image {getattr(item, 'path', '?')} ({getattr(item, 'reason', '')})")
        img, label = item
        return self.fn(img, self.indices[i]), label


def loader(ds, batch_size: int, workers: int = 0) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)


@torch.no_grad()
def top1(model: nn.Module, batches, device: torch.device, desc: str = "", progress: bool = True) -> float:
    """Top-1 (%) of `model` (taking [0, 1] inputs) over an iterable of (x, y); the engine's `evaluate` when
    `lstmvision.engine` is installed, else a plain loop."""
    from tqdm import tqdm

    try:
        from lstmvision.engine.evaluate import evaluate
    except ImportError:
        evaluate = None
    if evaluate is not None:
        triples = ((x, y, []) for x, y in tqdm(batches, desc=desc, leave=False, disable=not progress))
        return float(evaluate(model, triples, device)["top1"])
    correct = total = 0
    for x, y in tqdm(batches, desc=desc, leave=False, disable=not progress):
        out = model(x.to(device))
        correct += (out.argmax(1).cpu() == y).sum().item()
        total += y.numel()
    return 100.0 * correct / max(total, 1)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def add_common_arguments(p, data_required: bool = True) -> None:
    p.add_argument("--data", required=data_required, help="dataset folder (ImageFolder tree with val/, or idx files)")
    p.add_argument("--split", default="val", choices=["val", "train"], help="which split to evaluate (default val)")
    p.add_argument("--limit", type=int, help="use a fixed random subset of this many images")
    p.add_argument("--batch-size", "-b", type=int, default=64)
    p.add_argument("--workers", "-j", type=int, default=0)
    p.add_argument("--crop-pct", type=float, default=1.0, help="centre-crop fraction at each size (default 1.0)")
    p.add_argument("--interpolation", default="bicubic", choices=["bilinear", "bicubic", "nearest"])
    p.add_argument("--num-classes", type=int, help="classes of the model (for --model / timm: specs)")
    p.add_argument("--in-chans", type=int, help="input channels (for --model / timm: specs)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", "-o", required=True, help="output folder")
