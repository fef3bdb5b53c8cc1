"""Datasets for training and evaluation.

- `IdxDataset`: the standard MNIST / Fashion-MNIST idx files (.gz or raw) as PIL images with class names.
- `ImageFolderDataset`: `root/<class>/*.{jpg,png,...}`; unreadable images are skipped and counted (or, with
  `strict=True`, reported as an error); a set with no readable image at all is a `DataError`.
- `open_image` / `to_mode`: the one way images are read and converted (training, validate and predict alike):
  16-bit and float images are scaled to the 8-bit range instead of being clipped.
- `resolve_dataset(path, split)`: detect which of the two a folder holds (an ImageFolder tree with `train/` and
  `val/`|`validation/`, a bare class folder, or an idx folder); with no path, Fashion-MNIST from
  `$LSTMVISION_DATA` or Debian's `/usr/share/datasets/fashion-mnist`.
- `build_loader`: timm's `create_transform` + a DataLoader with (distributed) sampling and corrupt-image skipping.
- `segmentation`, `detection`: the data of the segmentation and detection tasks (COCO layout).
"""
from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from lstmvision.constants import FASHION_MNIST_MEAN, FASHION_MNIST_STD, INTERPOLATIONS  # noqa: F401 (re-exported)
from lstmvision.errors import os_reason
from lstmvision.outputs import atomic_write, file_id  # noqa: F401 (file_id re-exported)

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_VAL_NAMES = ("val", "validation", "valid", "test")


class DataError(ValueError):
    """Data that cannot be used: reported to the user as one line."""


class BadImage:
    """Returned by a dataset in place of a sample whose file could not be read."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason


# --------------------------------------------------------------------------------------------- idx
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (MNIST format), gzip-compressed or raw, into a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read idx file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {len(data) - offset}")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def find_idx_files(folder: str | os.PathLike, split: str) -> tuple[Path, Path] | None:
    folder = Path(folder)
    found = []
    for stem in _IDX_STEMS["train" if split == "train" else "val"]:
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
            if (folder / name).is_file():
                found.append(folder / name)
                break
    return (found[0], found[1]) if len(found) == 2 else None


class IdxDataset(Dataset):
    """MNIST-format images and labels; items are (PIL image, label). `img_mode` 'L' or 'RGB'."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], img_mode: str = "L"):
        if len(images) != len(labels):
            raise DataError(f"idx images ({len(images)}) and labels ({len(labels)}) differ in length")
        self.images, self.labels = images, labels.astype(np.int64)
        self.class_names = list(class_names)
        self.img_mode = img_mode
        self.transform: Callable | None = None
        self.grayscale = True

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, split: str, img_mode: str = "L") -> "IdxDataset":
        files = find_idx_files(folder, split)
        if files is None:
            raise DataError(f"no {split} idx files in {folder}")
        images, labels = read_idx(files[0]), read_idx(files[1])
        n = int(labels.max()) + 1 if len(labels) else 0
        names = FASHION_MNIST_CLASSES if "fashion" in str(Path(folder).resolve()).lower() and n == 10 else None
        return cls(images, labels, names or [str(i) for i in range(n)], img_mode)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i], mode="L") if self.images[i].ndim == 2 else Image.fromarray(self.images[i])
        if img.mode != self.img_mode:
            img = img.convert(self.img_mode)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[i])


# ------------------------------------------------------------------------------------------ images
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """`img` converted to `mode` ('L' or 'RGB'), with 16-bit integer images scaled by 255/65535 and float ('F')
    images taken as [0, 1] (the float-image convention of torchvision) and scaled by 255, where PIL's own
    `convert` would clip them to 0..255."""
    if img.mode in _WIDE_MODES or img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        values = values * (255.0 if img.mode == "F" else 255.0 / 65535.0)
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    return img if img.mode == mode else img.convert(mode)


def open_image(path: str | os.PathLike, mode: str) -> Image.Image:
    """Read the image file at `path` fully and convert it to `mode` with `to_mode`."""
    with Image.open(path) as im:
        im.load()
        img = to_mode(im, mode)
        return img.copy() if img is im else img  # `im` itself is unusable once closed


# ------------------------------------------------------------------------------------- image folder
def open_image_or_skip(path: str | os.PathLike, mode: str, strict: bool = False) -> Image.Image | None:
    """`open_image`, or None with a warning for a file that cannot be read as an image (not an image, empty, a
    decompression bomb); with `strict` that is a ValueError naming the file. Callers count the Nones."""
    try:
        return open_image(path, mode)
    except Exception as e:  # PIL raises many error types for broken files (and DecompressionBombError)
        if strict:
            raise ValueError(f"unreadable image {path} ({type(e).__name__}); drop --strict-images to skip it") from None
        warnings.warn(f"skipping unreadable image {path} ({type(e).__name__})", stacklevel=3)
        return None


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


class ImageFolderDataset(Dataset):
    """`root/<class>/**/*.<image ext>`; class index = sorted class-folder order."""

    def __init__(self, root: str | os.PathLike, img_mode: str = "RGB", class_names: Sequence[str] | None = None):
        root = Path(root)
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if class_names is not None:
            extra = [c for c in classes if c not in class_names]
            if extra:
                raise DataError(f"{root} has classes the training set does not know: {', '.join(extra[:5])}")
            classes = list(class_names)
        self.class_names = classes
        self.samples = [(p, i) for i, c in enumerate(classes) if (root / c).is_dir() for p in list_images(root / c)]
        self.root, self.img_mode = root, img_mode
        self.transform: Callable | None = None
        self.grayscale = False

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            img = open_image(path, self.img_mode)
        except Exception as e:  # any decoder error: the image is unusable
            return BadImage(str(path), _reason(e))
        if self.transform is not None:
            img = self.transform(img)
        return img, label


def save_png(path: Path, array: np.ndarray) -> None:
    """An (H, W[, C]) uint8 array as a PNG file, folders made, written atomically; a failure is one
    PermissionError naming the file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: Image.fromarray(array).save(p, format="PNG"))
    except OSError as e:
        raise PermissionError(f"cannot write {path}: {os_reason(e)}") from None


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e).strip() else type(e).__name__


def _image_paths(ds: Dataset) -> list[Path] | None:
    """The files behind an image-folder dataset (or a subset of one), in sample order; None for other data."""
    if isinstance(ds, ImageFolderDataset):
        return [p for p, _ in ds.samples]
    if isinstance(ds, Subset):
        inner = _image_paths(ds.dataset)
        return None if inner is None else [inner[i] for i in ds.indices]
    return None


def require_readable(ds: Dataset, where: str | os.PathLike) -> None:
    """Raise `DataError` when not one image of `ds` can be read. Stops at the first readable file, so a
    healthy data set costs one decode; only the unreadable files before it are tried."""
    paths = _image_paths(ds)
    if paths is None:
        return
    reason = ""
    for path in paths:
        try:
            open_image(path, "L")
            return
        except Exception as e:  # any decoder error: this one is unusable, try the next
            reason = reason or f" (the first, {path}: {_reason(e)})"
    raise DataError(f"no readable images in {where}: all {len(paths)} files failed to open{reason}")


def default_channels(path: str | os.PathLike | None) -> int:
    """Input channels the training data at `path` gives by default: 1 for idx (grayscale) data, else 3."""
    root = default_data_root() if path is None else Path(path)
    return 1 if find_idx_files(root, "train") is not None else 3


# ------------------------------------------------------------------------------------------ resolve
def default_data_root() -> Path:
    env = os.environ.get("LSTMVISION_DATA")
    root = Path(env) if env else Path(DEBIAN_FASHION_MNIST)
    if find_idx_files(root, "train") is None and not _is_image_folder_tree(root):
        where = f"$LSTMVISION_DATA={env}" if env else DEBIAN_FASHION_MNIST
        raise DataError(
            f"no dataset given and none found at {where}. Install Fashion-MNIST with "
            "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass --data PATH (an ImageFolder "
            "tree with train/ and val/, or a folder of MNIST-format idx files), or set LSTMVISION_DATA"
        )
    return root


def _is_image_folder_tree(root: Path) -> bool:
    return (root / "train").is_dir() and any((root / v).is_dir() for v in _VAL_NAMES)


def resolve_dataset(path: str | os.PathLike | None, split: str, img_mode: str = "L",
                    class_names: Sequence[str] | None = None) -> Dataset:
    """The `split` ('train' or 'val') of the dataset at `path` (see the module docstring)."""
    root = default_data_root() if path is None else Path(path)
    if not root.exists():
        raise FileNotFoundError(f"data not found: {root}")
    if root.is_file():
        raise DataError(f"--data must be a folder (ImageFolder tree or idx files), got the file {root}")
    if find_idx_files(root, split) is not None:
        ds = IdxDataset.from_folder(root, split, img_mode)
        if class_names is not None and len(class_names) == len(ds.class_names):
            ds.class_names = list(class_names)
    elif _is_image_folder_tree(root):
        sub = root / "train" if split == "train" else next(root / v for v in _VAL_NAMES if (root / v).is_dir())
        ds = ImageFolderDataset(sub, img_mode, class_names)
    elif split != "train" and any(d.is_dir() for d in root.iterdir()) and not (root / "train").is_dir():
        ds = ImageFolderDataset(root, img_mode, class_names)  # a bare class folder: evaluation data
    else:
        raise DataError(
            f"{root} holds no {split} data: expected train/ and val/ (or validation/) class folders, "
            "or MNIST-format idx files (train-images-idx3-ubyte[.gz], ...)"
        )
    if len(ds) == 0:
        raise DataError(f"the {split} set at {root} is empty")
    require_readable(ds, getattr(ds, "root", root))
    return ds


# ------------------------------------------------------------------------------------------- loader
class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for one process) whose first `skip` batches of an epoch can be skipped on resume."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.skip_samples = 0

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.skip_samples:])

    def __len__(self) -> int:
        return self.num_samples - self.skip_samples


class ShardSampler(Sampler):
    """Rank r of w evaluates indices r, r+w, ...: every sample exactly once across ranks (exact metrics)."""

    def __init__(self, n: int, num_replicas: int, rank: int):
        self.indices = list(range(rank, n, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def collate_skip_bad(batch: list) -> tuple[torch.Tensor | None, torch.Tensor | None, list[BadImage]]:
    bad = [b for b in batch if isinstance(b, BadImage)]
    good = [b for b in batch if not isinstance(b, BadImage)]
    if not good:
        return None, None, bad
    x = torch.stack([g[0] for g in good])
    if torch.is_tensor(good[0][1]):  # dense labels (segmentation masks)
        y = torch.stack([g[1] for g in good])
    else:
        y = torch.tensor([g[1] for g in good], dtype=torch.long)
    return x, y, bad


class BadImageCounter:
    """Counts skipped images; warns once per file, raises in strict mode."""

    def __init__(self, strict: bool = False, verbose: bool = True):
        self.strict, self.verbose, self.count, self.seen = strict, verbose, 0, set()

    def __call__(self, bad: list[BadImage]) -> None:
        for b in bad:
            if self.strict:
                raise DataError(f"unreadable image {b.path} ({b.reason}); drop --strict-images to skip such files")
            self.count += 1
            if self.verbose and b.path not in self.seen:
                warnings.warn(f"skipping unreadable image {b.path} ({b.reason})", stacklevel=2)
            self.seen.add(b.path)




def check_eval_settings(crop_pct: float | None, interpolation: str | None) -> None:
    """--crop-pct in (0, 1] and a resize interpolation timm knows, as one clear error."""
    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise ValueError(f"--crop-pct must be in (0, 1], got {crop_pct}")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise ValueError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}")


def create_eval_transform(input_size, mean, std, crop_pct: float = 1.0, interpolation: str = "bicubic",
                          crop_mode: str = "center"):
    """timm's eval transform; `crop_mode` 'squash' resizes to the input size ignoring the aspect ratio."""

    check_eval_settings(crop_pct, interpolation)
    return create_transform(input_size, is_training=False, mean=mean, std=std, crop_pct=crop_pct,
                            interpolation=interpolation, crop_mode=crop_mode)


def build_loader(dataset: Dataset, transform, batch_size: int, training: bool, workers: int = 0,
                 world_size: int = 1, rank: int = 0, seed: int = 0, pin_memory: bool = False,
                 drop_last: bool = False, collate_fn: Callable = collate_skip_bad) -> DataLoader:
    """A DataLoader of (inputs, targets, unreadable images) batches (`collate_fn`: tensors stacked by default;
    detection keeps lists)."""
    dataset.transform = transform
    if training:
        sampler: Sampler = ResumableSampler(dataset, world_size, rank, shuffle=True, seed=seed)
    else:
        sampler = ShardSampler(len(dataset), world_size, rank)
    kw: dict[str, Any] = dict(persistent_workers=True) if workers > 0 else {}
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_fn, pin_memory=pin_memory, drop_last=drop_last, **kw)


class Subset(Dataset):
    """The samples `indices` of `dataset` (made by `limit`: a fixed random subset)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        self.dataset, self.indices = dataset, list(indices)
        self.class_names = dataset.class_names
        self.grayscale = getattr(dataset, "grayscale", False)

    @property
    def transform(self):
        return self.dataset.transform

    @transform.setter
    def transform(self, t):
        self.dataset.transform = t

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


def limit(dataset: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """A fixed random subset of `n` samples (the same on every rank and every run with this seed). Validation
    subsets use seed 0 everywhere (`train --limit-val` and `validate --limit-val` take the same images)."""
    if n is not None and n < 1:
        raise DataError(f"a limit on the number of images must be at least 1, got {n}")
    if n is None or n >= len(dataset):
        return dataset
    g = torch.Generator().manual_seed(seed)
    subset = Subset(dataset, sorted(torch.randperm(len(dataset), generator=g)[:n].tolist()))
    require_readable(subset, f"the {n} images chosen from {getattr(dataset, 'root', 'the data')}")
    return subset


def fit_channels(values: Sequence[float], chans: int) -> tuple[float, ...]:
    """Per-channel normalisation values for a `chans`-channel input: repeated from one value, averaged to one."""
    values = tuple(float(v) for v in values)
    if len(values) == chans:
        return values
    if len(values) == 1:
        return values * chans
    if chans == 1:
        return (sum(values) / len(values),)
    raise ValueError(f"normalisation has {len(values)} values but the model takes {chans} channels")


def dataset_source(dataset) -> str:
    """Where a (possibly subset) dataset reads from, for messages."""
    while hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    root = getattr(dataset, "root", None)
    return str(root) if root is not None else "the evaluation data"
