"""Reading image data: idx files, image files and image-class folders, and the unreadable-image bookkeeping.

- `IdxDataset`: the standard MNIST / Fashion-MNIST idx files (.gz or raw) as PIL images with class names.
- `ImageFolderDataset`: `root/<class>/*.{jpg,png,...}`; an unreadable image is returned as a `BadImage`.
- `open_image` / `to_mode`: the one way images are read and converted (training, validate and predict alike):
  16-bit and float images are scaled to the 8-bit range instead of being clipped.
- `resolve_folder(path, split)`: detect which of the two a folder holds (an ImageFolder tree with `train/` and
  `val/`|`validation/`, a bare class folder, or an idx folder); with no path, Fashion-MNIST from
  `$LSTMVISION_DATA` or Debian's `/usr/share/datasets/fashion-mnist`. A set with no readable image at all is a
  `DataError`.
- `BadImageCounter`: counts the `BadImage`s a loader sets apart (warns once per file, or raises when strict).
- `save_png`: an array written as a PNG file, atomically.
"""
from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from lstmvision.errors import first_line, os_reason
from lstmvision.outputs import atomic_write

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
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class DataError(ValueError):
    """Data that cannot be used: reported to the user as one line."""


class BadImage:
    """Returned by a dataset in place of a sample whose file could not be read."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason


def error_reason(e: BaseException) -> str:
    """Why a file could not be read, in one line: the error's type name and the first line of its message."""
    return f"{type(e).__name__}: {first_line(e)}" if str(e).strip() else type(e).__name__


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
    """The (images, labels) idx files of `split` ('train', else the t10k files) in `folder`; None if absent."""
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
    """The image files under `folder` (any depth), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def save_png(path: Path, array: np.ndarray) -> None:
    """An (H, W[, C]) uint8 array as a PNG file, folders made, written atomically; a failure is one
    PermissionError naming the file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: Image.fromarray(array).save(p, format="PNG"))
    except OSError as e:
        raise PermissionError(f"cannot write {path}: {os_reason(e)}") from None


# ------------------------------------------------------------------------------------- image folder
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
            return BadImage(str(path), error_reason(e))
        if self.transform is not None:
            img = self.transform(img)
        return img, label


def _image_paths(ds: Dataset) -> list[Path] | None:
    """The files behind an image-folder dataset or a subset of one (a dataset with `dataset` and `indices`),
    in sample order; None for other data."""
    if isinstance(ds, ImageFolderDataset):
        return [p for p, _ in ds.samples]
    if hasattr(ds, "dataset") and hasattr(ds, "indices"):
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
            reason = reason or f" (the first, {path}: {error_reason(e)})"
    raise DataError(f"no readable images in {where}: all {len(paths)} files failed to open{reason}")


# ------------------------------------------------------------------------------------------ resolve
def default_data_root() -> Path:
    """`$LSTMVISION_DATA`, else Debian's Fashion-MNIST folder; a `DataError` saying how to get data if neither
    holds a dataset."""
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


def resolve_folder(path: str | os.PathLike | None, split: str, img_mode: str = "L",
                   class_names: Sequence[str] | None = None) -> Dataset:
    """The `split` ('train' or 'val') of the folder dataset at `path` (see the module docstring)."""
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
