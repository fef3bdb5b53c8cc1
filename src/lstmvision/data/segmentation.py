"""Semantic segmentation data: the dataset and the joint image/mask transforms.

- `SegmentationDataset`: the ADE20K release layout (`images/training`, `annotations/training`, label 0 ignored,
  1..N reduced to 0..N-1) or a generic layout (`images/{train,val}`, `masks/{train,val}`, `classes.txt`).
  Items are `(PIL image, long mask (H, W))`, or what `transform(img, mask)` returns; a mask that does not fit
  its image is returned as a `BadImage` (skipped and counted by the caller).
- `SegTrainTransform` / `SegEvalTransform`: mmseg's ADE20K train and test pipelines.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from lstmvision.constants import IMAGENET_MEAN, IMAGENET_STD
from lstmvision.data.images import BadImage, DataError, error_reason, list_images, open_image

IGNORE_INDEX = 255
ADE20K_NUM_CLASSES = 150
_SPLIT_DIRS = {
    "ade20k": {"train": ("training",), "val": ("validation",)},
    "generic": {"train": ("train",), "val": ("val", "validation")},
}
_MASK_DIR = {"ade20k": "annotations", "generic": "masks"}
_LAYOUTS = ("the ADE20K layout (images/training, images/validation, annotations/training, "
            "annotations/validation) or images/{train,val} with masks/{train,val} and classes.txt")


# -------------------------------------------------------------------------------------------- dataset
class _BadMask(Exception):
    """A mask that cannot be used; the message is the BadImage reason."""


class SegmentationDataset(Dataset):
    """The `split` ('train' or 'val') of the segmentation data at `root` (see the module docstring).

    `class_names`: the training set's names, which the val set must share."""

    def __init__(self, root: str | os.PathLike, split: str, img_mode: str = "RGB",
                 class_names: Sequence[str] | None = None):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.root, self.split, self.img_mode = Path(root), split, img_mode
        self.layout = _detect_layout(self.root)
        self.class_names = _class_names(self.root, self.layout)
        if class_names is not None and list(class_names) != self.class_names:
            raise DataError(f"the {split} classes of {self.root} differ from the training classes "
                            f"({len(self.class_names)} vs {len(class_names)} names)")
        self.num_classes = len(self.class_names)
        if self.num_classes >= IGNORE_INDEX:
            raise DataError(f"{self.root} has {self.num_classes} classes; at most {IGNORE_INDEX - 1} fit "
                            f"(label {IGNORE_INDEX} is ignored)")
        self.ignore_index = IGNORE_INDEX
        self.samples = _find_samples(self.root, self.layout, split)
        self.transform: Callable | None = None
        self.grayscale = False

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        img_path, mask_path = self.samples[i]
        try:
            img = open_image(img_path, self.img_mode)
        except Exception as e:  # any decoder error: the image is unusable
            return BadImage(str(img_path), error_reason(e))
        try:
            labels = self._labels(mask_path, img.size)
        except _BadMask as e:
            return BadImage(str(mask_path), str(e))
        except Exception as e:
            return BadImage(str(mask_path), error_reason(e))
        if self.transform is None:
            return img, torch.from_numpy(labels.astype(np.int64))
        return self.transform(img, Image.fromarray(labels.astype(np.uint8)))

    def _labels(self, path: Path, img_size: tuple[int, int]) -> np.ndarray:
        """The mask at `path` as training labels 0..N-1 and IGNORE_INDEX."""
        raw = _read_mask(path)
        if raw.shape[::-1] != img_size:
            raise _BadMask(f"mask {raw.shape[1]}x{raw.shape[0]} but image {img_size[0]}x{img_size[1]}")
        ade = self.layout == "ade20k"
        labels = reduce_zero_label(raw) if ade else raw.astype(np.int64)
        bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= self.num_classes))
        if bad.any():
            values = np.unique(raw[bad])  # reported as stored in the file
            shown = ", ".join(str(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")
            lo, hi = (1, self.num_classes) if ade else (0, self.num_classes - 1)
            ignored = "0 and 255" if ade else "255"
            raise _BadMask(f"mask labels {shown} out of range {lo}..{hi} ({ignored} = ignore)")
        return labels


def _read_mask(path: str | os.PathLike) -> np.ndarray:
    """A single-channel label image (mode L, P, I or 1) as a 2-D integer array."""
    with Image.open(path) as im:
        im.load()
        bands = im.getbands()
        if len(bands) > 1:
            raise _BadMask(f"mask has {len(bands)} channels ({im.mode}); expected a single-channel label PNG "
                           "(mode L or P)")
        if im.mode == "F":
            raise _BadMask("mask holds floats (mode F); expected integer labels (mode L or P)")
        return np.array(im, dtype=np.uint8 if im.mode in ("L", "P", "1") else np.int64)


def reduce_zero_label(raw: np.ndarray) -> np.ndarray:
    """ADE20K labels: 0 (unlabelled) -> ignore, 1..N -> 0..N-1; 255 stays ignore (as mmseg)."""
    labels = raw.astype(np.int64) - 1
    labels[(raw == 0) | (raw == IGNORE_INDEX)] = IGNORE_INDEX
    return labels


def _detect_layout(root: Path) -> str:
    if (root / "images").is_dir() and (root / "annotations").is_dir() and any(
            (root / "images" / d).is_dir() for d in ("training", "validation")):
        return "ade20k"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "generic"
    what = "does not exist" if not root.exists() else "is not a segmentation dataset"
    raise DataError(f"{root} {what}: expected {_LAYOUTS}")


def _class_names(root: Path, layout: str) -> list[str]:
    if (root / "classes.txt").is_file():
        return _read_classes_txt(root / "classes.txt")
    if layout == "generic":
        raise DataError(f"{root} has images/ and masks/ but no classes.txt (one class name per line, "
                        "in label order)")
    if (root / "objectInfo150.csv").is_file():
        return _read_object_info(root / "objectInfo150.csv")
    return [str(i) for i in range(ADE20K_NUM_CLASSES)]


def _read_classes_txt(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path} is empty: expected one class name per line")
    return names


def _read_object_info(path: Path) -> list[str]:
    """Class names of ADEChallengeData2016's objectInfo150.csv (`Idx,Ratio,Train,Val,Name`), e.g.
    'person;individual;someone' -> 'person'."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "Name" not in rows[0]:
        raise DataError(f"{path} has no Name column (expected the header Idx,Ratio,Train,Val,Name)")
    if all(r.get("Idx", "").strip().isdigit() for r in rows):
        rows.sort(key=lambda r: int(r["Idx"]))
    return [r["Name"].split(";")[0].strip() for r in rows]


def _find_samples(root: Path, layout: str, split: str) -> list[tuple[Path, Path]]:
    names = _SPLIT_DIRS[layout][split]
    name = next((n for n in names if (root / "images" / n).is_dir()), None)
    if name is None:
        raise DataError(f"{root} has no {split} images: expected images/{' or images/'.join(names)}")
    masks = root / _MASK_DIR[layout]
    mask_name = next((n for n in (name, *names) if (masks / n).is_dir()), name)  # images/val + masks/validation
    img_dir, mask_dir = root / "images" / name, masks / mask_name
    images = list_images(img_dir)
    if not images:
        raise DataError(f"no images in {img_dir}")
    samples = [(p, mask_dir / p.relative_to(img_dir).with_suffix(".png")) for p in images]
    missing = [s for s in samples if not s[1].is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(samples)} images in {img_dir} have no mask; the first: "
                        f"{missing[0][0]} (expected {missing[0][1]})")
    return samples


# ----------------------------------------------------------------------------------------- transforms
def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand(()).item()


def _chance(p: float) -> bool:
    return torch.rand(()).item() < p


def _randint(lo: int, hi: int) -> int:
    """An integer in [lo, hi), drawn from torch's global RNG (seeded by the engine and DataLoader workers)."""
    return int(torch.randint(lo, hi, ()).item())


def rescaled_size(size: tuple[int, int], scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's keep-ratio rescale: the largest (w, h) whose long side fits max(scale) and short side min(scale)."""
    w, h = size
    f = min(max(scale) / max(w, h), min(scale) / min(w, h))
    return max(1, int(w * f + 0.5)), max(1, int(h * f + 0.5))


def _resize_pair(img: Image.Image, mask: Image.Image, scale: tuple[int, int]):
    size = rescaled_size(img.size, scale)
    if size == img.size:
        return img, mask
    return img.resize(size, Image.BILINEAR), mask.resize(size, Image.NEAREST)


def _crop_ok(mask: np.ndarray, cat_max_ratio: float, ignore_index: int) -> bool:
    labels, counts = np.unique(mask, return_counts=True)
    counts = counts[labels != ignore_index]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def _convert(arr: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    # mmseg truncates to uint8 after every step
    return np.clip(arr.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def _hsv_apply(arr: np.ndarray, fn: Callable[[np.ndarray], None]) -> np.ndarray:
    h, w = arr.shape[:2]
    hsv = np.array(Image.fromarray(arr).convert("HSV"))
    fn(hsv)
    return np.array(Image.frombytes("HSV", (w, h), np.ascontiguousarray(hsv).tobytes()).convert("RGB"))


def _saturation(hsv: np.ndarray) -> None:
    hsv[..., 1] = _convert(hsv[..., 1], alpha=_uniform(0.5, 1.5))


def _hue(hsv: np.ndarray) -> None:
    # mmseg shifts OpenCV hue (0..179, 2 degrees a unit) by up to 18; PIL's hue unit is 360/256 degrees
    shift = round(_randint(-18, 19) * 2 * 256 / 360)
    hsv[..., 0] = (hsv[..., 0].astype(np.int64) + shift) % 256


def photometric_distortion(arr: np.ndarray) -> np.ndarray:
    """mmseg's PhotoMetricDistortion on a uint8 (H, W[, 3]) array; saturation and hue only for colour."""
    if _chance(0.5):
        arr = _convert(arr, beta=_uniform(-32, 32))
    contrast_first = _chance(0.5)
    if contrast_first and _chance(0.5):
        arr = _convert(arr, alpha=_uniform(0.5, 1.5))
    if arr.ndim == 3 and arr.shape[2] == 3:
        if _chance(0.5):
            arr = _hsv_apply(arr, _saturation)
        if _chance(0.5):
            arr = _hsv_apply(arr, _hue)
    if not contrast_first and _chance(0.5):
        arr = _convert(arr, alpha=_uniform(0.5, 1.5))
    return arr


def _normalize(arr: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255)
    x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
    if len(mean) != x.shape[0] or len(std) != x.shape[0]:
        raise ValueError(f"mean and std need one value per image channel ({x.shape[0]}), got {len(mean)} "
                         f"and {len(std)}")
    m, s = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    return ((x - m) / s).contiguous()


class SegTrainTransform:
    """mmseg's ADE20K train pipeline on (PIL image, PIL 'L' mask) -> ((C, crop, crop) float, (crop, crop) long):
    random keep-ratio resize to `base_size` * U(`ratio_range`), random crop (retried up to 10 times until no
    class covers `cat_max_ratio` of the labelled pixels), horizontal flip, photometric distortion, normalise,
    pad bottom/right (image 0, mask `ignore_index`).

    `base_size` (long, short edge) is ADE20K's (2048, 512); scale it to the data, e.g. (384, 96) for 96 px
    images with a 96 px crop."""

    def __init__(self, crop_size: int, base_size: tuple[int, int] = (2048, 512),
                 ratio_range: tuple[float, float] = (0.5, 2.0), cat_max_ratio: float = 0.75, hflip: float = 0.5,
                 photometric: bool = True, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, ignore_index: int = IGNORE_INDEX):
        self.crop_size, self.base_size, self.ratio_range = crop_size, tuple(base_size), tuple(ratio_range)
        self.cat_max_ratio, self.hflip, self.photometric = cat_max_ratio, hflip, photometric
        self.mean, self.std, self.ignore_index = tuple(mean), tuple(std), ignore_index

    def __call__(self, img: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        r = _uniform(*self.ratio_range)
        img, mask = _resize_pair(img, mask, (int(self.base_size[0] * r), int(self.base_size[1] * r)))
        x, y = self._crop(np.array(img), np.array(mask))
        if _chance(self.hflip):
            x, y = x[:, ::-1], y[:, ::-1]
        if self.photometric:
            x = photometric_distortion(x)
        return self._pad(_normalize(x, self.mean, self.std), torch.from_numpy(y.astype(np.int64)))

    def _crop(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        box = self._random_box(y.shape)
        if self.cat_max_ratio < 1:
            for _ in range(10):
                if _crop_ok(y[box], self.cat_max_ratio, self.ignore_index):
                    break
                box = self._random_box(y.shape)
        return x[box], y[box]

    def _random_box(self, shape: tuple[int, ...]) -> tuple[slice, slice]:
        top = _randint(0, max(shape[0] - self.crop_size, 0) + 1)
        left = _randint(0, max(shape[1] - self.crop_size, 0) + 1)
        return slice(top, top + self.crop_size), slice(left, left + self.crop_size)

    def _pad(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ph, pw = self.crop_size - x.shape[1], self.crop_size - x.shape[2]
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), value=0.0)
            y = F.pad(y, (0, pw, 0, ph), value=self.ignore_index)
        return x, y


class SegEvalTransform:
    """mmseg's test pipeline: the image resized keep-ratio to fit `base_size` (long, short edge; None keeps
    its size) and normalised; the mask is kept at its original size, where metrics are computed.

    `base_size` is ADE20K's (2048, 512) by default; scale it to the data, e.g. (384, 96) for 96 px images."""

    def __init__(self, base_size: tuple[int, int] | None = (2048, 512), mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        self.base_size = None if base_size is None else tuple(base_size)
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, img: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        if self.base_size is not None:
            size = rescaled_size(img.size, self.base_size)
            img = img if size == img.size else img.resize(size, Image.BILINEAR)
        return _normalize(np.array(img), self.mean, self.std), torch.from_numpy(np.array(mask, dtype=np.int64))
