"""Semantic segmentation data: datasets, joint image/mask transforms and a synthetic scene generator.

- `SegmentationDataset`: the ADE20K release layout (`images/training`, `annotations/training`, label 0 ignored,
  1..N reduced to 0..N-1) or a generic layout (`images/{train,val}`, `masks/{train,val}`, `classes.txt`).
  Items are `(PIL image, long mask (H, W))`, or what `transform(img, mask)` returns; a mask that does not fit
  its image is returned as a `BadImage` (skipped and counted by the caller).
- `SegTrainTransform` / `SegEvalTransform`: mmseg's ADE20K train and test pipelines.
- `make_scenes`: a real-image segmentation task (Fashion-MNIST garments pasted on backgrounds) in the
  ADE20K layout.
"""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from lstmvision.constants import IMAGENET_MEAN, IMAGENET_STD
from lstmvision.data import (
    FASHION_MNIST_CLASSES,
    BadImage,
    DataError,
    _reason,
    default_data_root,
    find_idx_files,
    list_images,
    open_image,
    read_idx,
)

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
            return BadImage(str(img_path), _reason(e))
        try:
            labels = self._labels(mask_path, img.size)
        except _BadMask as e:
            return BadImage(str(mask_path), str(e))
        except Exception as e:
            return BadImage(str(mask_path), _reason(e))
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


# ------------------------------------------------------------------------------------------- scenes
SCENES_VERSION = 1
SCENE_CLASSES = ["background", *FASHION_MNIST_CLASSES]
_GARMENT_THRESHOLD = 32
_OWN_FILE = re.compile(r"(classes\.txt|scenes\.json|\.scenes\.json\.tmp"
                       r"|images/(training|validation)/scene_\d{6,}\.jpg"
                       r"|annotations/(training|validation)/scene_\d{6,}\.png)")
_OWN_DIRS = {"images", "annotations", *(f"{a}/{b}" for a in ("images", "annotations")
                                        for b in ("training", "validation"))}


def make_scenes(output: str | os.PathLike, n_train: int = 2000, n_val: int = 200, size: int = 96, seed: int = 0,
                source: str | os.PathLike | None = None, max_objects: int = 4, min_scale: float = 0.6,
                max_scale: float = 1.6, progress: bool = True) -> dict:
    """Write a segmentation task in the ADE20K layout to `output`: `size` px scenes of 1..`max_objects`
    tinted Fashion-MNIST garments (28 px * U(`min_scale`, `max_scale`)) on smooth random backgrounds; train
    scenes from the idx train split at `source` (default `default_data_root()`), val scenes from t10k.
    Annotations: 0 = ignore (1 px class outlines), 1 = background, 2..11 = garments. Deterministic from `seed`;
    an existing complete folder made with the same parameters is returned as is. Returns scenes.json."""
    params = _scene_params(n_train, n_val, size, seed, max_objects, min_scale, max_scale)
    output = Path(output)
    existing = existing_scenes(output, params, _is_own)
    if existing is not None:
        return existing
    source = default_data_root() if source is None else Path(source)
    splits = {"training": (n_train, _load_garments(source, "train")),
              "validation": (n_val, _load_garments(source, "val"))}
    output.mkdir(parents=True, exist_ok=True)
    (output / "classes.txt").write_text("".join(f"{c}\n" for c in SCENE_CLASSES), encoding="utf-8")
    info = {**params, "source": str(source), "layout": "ade20k", "classes": SCENE_CLASSES,
            "annotation_values": "0 = ignore (outlines), 1 = background, 2..11 = garments in class order",
            "counts": {}, "class_pixel_frequency": {}, "ignored_pixel_fraction": {}}

    with tqdm(total=n_train + n_val, desc="scenes", unit="img", disable=not progress) as bar:
        for k, (split, (n, garments)) in enumerate(splits.items()):
            counts = _write_split(output, split, n, garments, params, k, bar)
            labelled = counts[1:].sum()
            info["counts"][split] = n
            info["class_pixel_frequency"][split] = {
                c: round(float(counts[i + 1] / max(labelled, 1)), 6) for i, c in enumerate(SCENE_CLASSES)}
            info["ignored_pixel_fraction"][split] = round(float(counts[0] / max(counts.sum(), 1)), 6)
    tmp = output / ".scenes.json.tmp"
    tmp.write_text(json.dumps(info, indent=1), encoding="utf-8")
    os.replace(tmp, output / "scenes.json")  # last: a folder without scenes.json is incomplete
    return info


def _scene_params(n_train, n_val, size, seed, max_objects, min_scale, max_scale) -> dict:
    if n_train < 1 or n_val < 0 or size < 8 or max_objects < 1 or not 0 < min_scale <= max_scale:
        raise ValueError("make_scenes needs n_train >= 1, n_val >= 0, size >= 8, max_objects >= 1 and "
                         f"0 < min_scale <= max_scale; got {n_train}, {n_val}, {size}, {max_objects}, "
                         f"{min_scale}, {max_scale}")
    return dict(version=SCENES_VERSION, n_train=int(n_train), n_val=int(n_val), size=int(size), seed=int(seed),
                max_objects=int(max_objects), min_scale=float(min_scale), max_scale=float(max_scale))


def existing_scenes(output: Path, params: dict, is_own: Callable[[str, bool], bool]) -> dict | None:
    """The scenes.json of a complete folder made with `params`; None when `output` is to be (re)written. A folder
    without scenes.json holding only files `is_own(relative path, is_dir)` accepts is an interrupted run: emptied."""
    if not output.exists():
        return None
    if not output.is_dir():
        raise DataError(f"scenes output {output} is a file, not a folder")
    meta = output / "scenes.json"
    if meta.is_file():
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {meta}: {e}; delete {output} to regenerate it") from None
        made = {k: info.get(k) for k in params}
        if made != params:
            diff = ", ".join(f"{k}={made[k]} (asked {v})" for k, v in params.items() if made[k] != v)
            raise DataError(f"{output} holds scenes made with other parameters: {diff}; choose another folder "
                            "or delete it")
        return info
    files = list(output.rglob("*"))
    foreign = [p for p in files if not is_own(p.relative_to(output).as_posix(), p.is_dir())]
    if foreign:
        raise DataError(f"{output} is not empty and holds no scenes.json (e.g. {foreign[0]}); choose an empty "
                        "or new folder")
    for p in sorted(files, key=lambda p: len(p.parts), reverse=True):  # an interrupted run: start over
        p.rmdir() if p.is_dir() else p.unlink()
    return None


def _is_own(rel: str, is_dir: bool) -> bool:
    return rel in _OWN_DIRS if is_dir else _OWN_FILE.fullmatch(rel) is not None


def _load_garments(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    files = find_idx_files(source, split)
    if files is None:
        raise DataError(f"no Fashion-MNIST {split} idx files in {source} (train-images-idx3-ubyte[.gz], ...)")
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or len(images) != len(labels) or len(labels) == 0 or labels.max() >= 10:
        raise DataError(f"{files[0]} and {files[1]} are not Fashion-MNIST-like: expected N images (N, H, W) "
                        "with labels 0..9")
    return images, labels


def _write_split(output: Path, split: str, n: int, garments, params: dict, k: int, bar) -> np.ndarray:
    """Write `n` scenes of `split`; returns the pixel count of each annotation value 0..11."""
    img_dir, ann_dir = output / "images" / split, output / "annotations" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    counts = np.zeros(len(SCENE_CLASSES) + 1, np.int64)
    for i in range(n):
        rng = np.random.default_rng((params["seed"], k, i))  # per scene: independent of order
        img, ann = _scene(rng, garments, params)
        Image.fromarray(img).save(img_dir / f"scene_{i:06d}.jpg", quality=95)
        Image.fromarray(ann).save(ann_dir / f"scene_{i:06d}.png")
        counts += np.bincount(ann.ravel(), minlength=len(counts))[:len(counts)]
        bar.update()
    return counts


def _scene(rng: np.random.Generator, garments, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size, 3) uint8 image and its annotation (0 ignore, 1 background, 2..11 garments)."""
    size = params["size"]
    canvas, ann = _background(rng, size), np.ones((size, size), np.uint8)
    images, labels = garments
    for _ in range(int(rng.integers(1, params["max_objects"] + 1))):
        j = int(rng.integers(len(images)))
        side = min(size, max(4, round(28 * rng.uniform(params["min_scale"], params["max_scale"]))))
        value = np.array(Image.fromarray(images[j]).resize((side, side), Image.BILINEAR), np.float32)
        top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
        region = canvas[top:top + side, left:left + side]
        # opaque from intensity 64 on, so dark garments stay visible; the tint shaded by intensity keeps texture
        a = np.clip((value - 16) / 48, 0, 1)[..., None]
        shaded = _tint(rng, region) * (0.5 + value[..., None] / 510)
        canvas[top:top + side, left:left + side] = a * shaded + (1 - a) * region
        ann[top:top + side, left:left + side][value > _GARMENT_THRESHOLD] = labels[j] + 2
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), _outline(ann)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour gradient with low-frequency blotches and fine noise, as float (size, size, 3)."""
    c = rng.uniform(0, 255, (2, 2, 3))
    y, x = np.linspace(0, 1, size)[:, None, None], np.linspace(0, 1, size)[None, :, None]
    gradient = c[0, 0] * (1 - y) * (1 - x) + c[0, 1] * (1 - y) * x + c[1, 0] * y * (1 - x) + c[1, 1] * y * x
    blotches = np.stack([np.array(Image.fromarray(g.astype(np.float32)).resize((size, size), Image.BICUBIC))
                         for g in rng.normal(0, 24, (3, 4, 4))], axis=-1)
    return np.clip(gradient + blotches + rng.normal(0, 6, (size, size, 3)), 0, 255)


def _tint(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """A random colour, redrawn a few times while it is too close to what lies under the garment."""
    under = region.reshape(-1, 3).mean(0)
    for _ in range(8):
        tint = rng.uniform(0, 255, 3)
        if np.abs(tint - under).max() >= 64:
            break
    return tint


def _outline(ann: np.ndarray) -> np.ndarray:
    """`ann` with a 1 px band on every boundary between classes set to 0 (ignore): the pixel before each
    change along rows and columns."""
    out = ann.copy()
    edge = np.zeros(ann.shape, bool)
    edge[:, :-1] |= ann[:, :-1] != ann[:, 1:]
    edge[:-1, :] |= ann[:-1, :] != ann[1:, :]
    out[edge] = 0
    return out
