"""Shared pieces of the analysis tools (resolution sweep, ERF, robustness, memory).

Models come from `lstmvision.models.loading.create_model` (a registered name, `timm:NAME`, a saved or training run
folder) and carry a `.label` for tables. Every model is used on its own input channels and normalisation (from
its `pretrained_cfg`); images are resized (or resized + centre-cropped with `crop_pct` < 1) to the requested
square size.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import IterableDataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from tqdm import tqdm

from lstmvision.data.classification import fit_channels
from lstmvision.data.loaders import limit
from lstmvision.data.shards import is_sharded
from lstmvision.data.sources import resolve_dataset
from lstmvision.device import device_name
from lstmvision.inference import model_in_chans
from lstmvision.outputs import atomic_write, check_output_folder, check_outputs, write_text
from lstmvision.tasks.classify import evaluate

REPORT_SUFFIXES = (".json", ".md", ".png")  # what every analysis writes, as <name><suffix>


def model_norm(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) from the model's cfg, fitted to its input channels."""
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    c = model_in_chans(model)
    return fit_channels(cfg.get("mean", (0.5,)), c), fit_channels(cfg.get("std", (0.5,)), c)


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
    extra = f"CUDA {torch.version.cuda}, " if device.type == "cuda" else ""
    return f"{device_name(device)}, {extra}torch {torch.__version__}"


# --------------------------------------------------------------------------------------------- data
@dataclass
class EvalImages:
    """The images an analysis runs on (items (PIL image, label); a fixed random subset with `open_images(limit_to=)`)
    and how they are read: resized to each size by `crop_pct` / `interpolation`, loaded in batches."""

    dataset: Any
    name: str
    split: str = "val"
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    batch_size: int = 64
    workers: int = 0

    def resize(self, img: Image.Image, size: int) -> Image.Image:
        return resize_image(img, size, self.crop_pct, self.interpolation)

    def batches(self, fn: Callable[[Image.Image, int], torch.Tensor]) -> torch.utils.data.DataLoader:
        """Batches (x, y) with x made by `fn(image, index in the full dataset)`, in dataset order."""
        return torch.utils.data.DataLoader(MappedDataset(self.dataset, fn), batch_size=self.batch_size,
                                           shuffle=False, num_workers=self.workers)


def open_images(path: str | Path | None, split: str = "val", limit_to: int | None = None, seed: int = 0,
                **settings: Any) -> EvalImages:
    """The `split` of the dataset at `path` (read by `lstmvision.data`), `limit_to` random images of it if given;
    `settings` are the other `EvalImages` fields."""
    if path is None:
        raise ValueError("--data PATH is required (an ImageFolder tree with val/, or a folder of idx files)")
    if not is_sharded(path):
        root = Path(path)
        if not root.exists():
            raise FileNotFoundError(f"data not found: {root}")
        if not root.is_dir():
            raise ValueError(f"--data must be a folder, got the file {root}")
    ds = resolve_dataset(path, split, img_mode="RGB")
    if isinstance(ds, IterableDataset):
        raise ValueError(f"--data {path}: the analyses pick images by index; give a folder or an hfds: dataset, "
                         "not a stream (wds:, hfids:)")
    ds.transform = None
    if len(ds) == 0:
        raise ValueError(f"the {split} set at {path} is empty")
    return EvalImages(limit(ds, limit_to, seed), str(path), split, **settings)


def resize_image(img: Image.Image, size: int, crop_pct: float = 1.0, interpolation: str = "bicubic") -> Image.Image:
    """Resize so the centre `crop_pct` of the shorter side becomes `size`, then centre-crop size x size."""
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
    """`fn(pil_image, index) -> tensor` applied to the items of a (PIL, label) dataset; `index` is the item's index
    in the full dataset (a `lstmvision.data.limit` subset keeps them), so per-image seeds do not depend on the
    subset."""

    def __init__(self, base, fn: Callable[[Image.Image, int], torch.Tensor]):
        self.base, self.fn = base, fn
        self.index = list(getattr(base, "indices", range(len(base))))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        item = self.base[i]
        if not isinstance(item, tuple):  # lstmvision.data marks unreadable files instead of raising
            raise ValueError(f"unreadable image {getattr(item, 'path', '?')} ({getattr(item, 'reason', '')})")
        img, label = item
        return self.fn(img, self.index[i]), label


@torch.no_grad()
def top1(model: nn.Module, batches, device: torch.device, desc: str = "", progress: bool = True) -> float:
    """Top-1 (%) of `model` (taking [0, 1] inputs) over an iterable of (x, y), by the engine's `evaluate`."""

    classes = getattr(getattr(model, "model", model), "num_classes", None)
    triples = ((x, y, []) for x, y in _within_classes(tqdm(batches, desc=desc, leave=False, disable=not progress),
                                                      classes))
    return float(evaluate(model, triples, device)["top1"])


def _within_classes(batches, classes: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches, refused in one line at the first label the model has no class for."""
    for x, y in batches:
        if classes and y.numel() and int(y.max()) >= classes:
            raise ValueError(f"the data has a label {int(y.max())} but the model predicts {classes} classes: give "
                             "a model trained on these classes")
        yield x, y


def check_report(output: str | Path, name: str, overwrite: bool = False, reads: Sequence[str | Path] = ()) -> Path:
    """Refuse, by the output rule (`lstmvision.outputs`), an output folder that cannot be written, and
    name.json / .md / .png there that would replace an input or, without `overwrite`, an earlier report."""
    out = check_output_folder(output, "--output")
    check_outputs([out / f"{name}{suffix}" for suffix in REPORT_SUFFIXES], reads, overwrite)
    return out


def report_folder(output: str | Path, name: str, overwrite: bool = False, reads: Sequence[str | Path] = ()) -> Path:
    """The output folder of report `name`, made once `check_report` allows it."""
    out = check_report(output, name, overwrite, reads)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_report(out: Path, name: str, report: dict, markdown: str,
                 plot: Callable[[dict, Path], None] | None = None) -> None:
    """`out/name.json` (the report), `out/name.md` (its table) and, with `plot(report, path)`, `out/name.png`."""
    write_text(out / f"{name}.json", json.dumps(report, indent=2))
    write_text(out / f"{name}.md", markdown)
    if plot is not None:
        plot(report, out / f"{name}.png")


@contextlib.contextmanager
def figure(path: Path, *args: Any, **subplots_kw: Any) -> Iterator[tuple[Any, Any]]:
    """`plt.subplots(*args, **subplots_kw)` as (fig, axes); laid out and saved to `path` (PNG, 120 dpi) on exit."""

    matplotlib.use("Agg")

    fig, axes = plt.subplots(*args, **subplots_kw)
    try:
        yield fig, axes
        fig.tight_layout()
        atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png"))
    finally:
        plt.close(fig)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
