"""Packing a classification source (image-class folders and MNIST-format idx files, as `resolve_folder` reads
them) as shards for streaming, in one of two formats, each with a `SHA256SUMS` file that `sha256sum -c` checks:

- `wds`: WebDataset tar shards `{split}-{index:06d}.tar` written with `webdataset.TarWriter`, `shard_size`
  samples each, and timm's `_info.json` (per split: `num_samples`, `filenames`, `shard_lengths`; plus the class
  names in label order under `classes`). A sample is `__key__` = `{split}_{index:08d}` (its position in the
  source split), the image file's bytes under its extension (`jpg` for .jpg/.jpeg, `png`, `webp`) and `cls`, the
  class index as ASCII text.
- `hfds`: a Hugging Face `datasets.DatasetDict` with features `image` (`datasets.Image`) and `label`
  (`datasets.ClassLabel` with the class names), written by `save_to_disk` in ceil(n / shard_size) shards per
  split.

The splits are timm's: `train` and `validation` (from `val/`, `validation/`, ... or the t10k idx files); a bare
class folder is evaluation data only (`validation`). Image files are stored as they are, never re-encoded;
idx images, and image files in formats the shard readers do not take (.bmp, .gif, .tif, ...), are stored as PNG.
Samples keep the source's order (the readers shuffle). Unreadable images are skipped and counted (`strict`: the
first one is an error), as in training.

Nothing is written under the output folder until the end: the data set is written into a temporary sibling folder
(`.OUT.packing-HOST-PID`) that is renamed to OUT when complete, so a failed or killed pack leaves OUT as it was.
`pack_dataset` is the whole job; `source_splits` the splits it reads, `describe_folder` their counts and classes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from lstmvision.data.images import (
    BadImage,
    BadImageCounter,
    DataError,
    IdxDataset,
    ImageFolderDataset,
    error_reason,
    find_idx_files,
    open_image,
    resolve_folder,
    to_mode,
)
from lstmvision.data.shards import import_extra
from lstmvision.errors import os_reason
from lstmvision.outputs import check_output_folder, within, write_text

FORMATS = ("wds", "hfds")
# ~1000 images a shard: ImageNet-1K (~110 kB a JPEG) gives 1282 train shards of ~110 MB and 50 validation shards,
# enough shards for 64 GPUs x 8 loader workers and small enough to shuffle well (timm's and webdataset's usual
# 1-2k images or ~1 GB a shard)
DEFAULT_SHARD_SIZE = 1000
STREAM_PREFIXES = ("wds:", "hfds:", "hfids:")
SUMS_FILE = "SHA256SUMS"
INFO_FILE = "_info.json"
# file extension -> the sample key its bytes are stored under, unchanged (other image files become PNG)
KEPT_EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}
_PNG_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")


@dataclasses.dataclass
class Sample:
    """One packed sample: its position in the source split, class index, image key (`jpg`, `png`, `webp`) and
    the image bytes."""
    index: int
    label: int
    ext: str
    data: bytes


@dataclasses.dataclass
class PackReport:
    """What `pack_dataset` wrote: per split the samples and shards, the skipped unreadable images, the bytes of
    the data set and the seconds it took."""
    out: Path
    format: str
    samples: dict[str, int]
    shards: dict[str, int]
    classes: list[str]
    skipped: int
    bytes: int
    seconds: float


# ------------------------------------------------------------------------------------------- source
def source_splits(src: str | os.PathLike) -> dict[str, Dataset]:
    """The splits of the classification source at `src` as {'train': dataset, 'validation': dataset}, read by
    `resolve_folder` (an idx folder with only train files, or a bare class folder, gives one split); the
    validation folder takes the training set's class list. One `DataError` (or FileNotFoundError) line for a
    source it cannot read."""
    text = os.fspath(src)
    if text.startswith(STREAM_PREFIXES):
        raise DataError(f"{text} is a shard source already: `data pack` reads image-class folders and idx files")
    root = Path(text)
    if not root.exists():
        raise FileNotFoundError(f"data not found: {root}")
    if not root.is_dir():
        raise DataError(f"SRC must be a folder (ImageFolder tree or idx files), got the file {root}")
    idx_train = find_idx_files(root, "train") is not None
    has_train = idx_train or (root / "train").is_dir()
    has_val = not idx_train or find_idx_files(root, "val") is not None
    splits: dict[str, Dataset] = {}
    if has_train:
        splits["train"] = resolve_folder(root, "train", "RGB")
    if has_val:
        names = splits["train"].class_names if "train" in splits and not idx_train else None
        splits["validation"] = resolve_folder(root, "val", "RGB", names)
    return splits


def class_names(splits: dict[str, Dataset]) -> list[str]:
    """The class names in label order: the longest list of the splits (the training folder's for trees; idx
    splits may lack the last classes)."""
    return max((list(ds.class_names) for ds in splits.values()), key=len)


def describe_folder(src: str | os.PathLike) -> dict[str, Any]:
    """Kind ('idx' or 'folder'), splits ({split: {samples, shards: 0}}) and classes of a folder source, as
    `data.shards.describe_source` gives them for shards."""
    splits = source_splits(src)
    kind = "idx" if any(isinstance(ds, IdxDataset) for ds in splits.values()) else "folder"
    return dict(kind=kind, splits={split: dict(samples=len(ds), shards=0) for split, ds in splits.items()},
                classes=class_names(splits))


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _idx_sample(ds: IdxDataset, i: int) -> Sample:
    return Sample(i, int(ds.labels[i]), "png", _png(Image.fromarray(ds.images[i])))  # uint8 (H, W): mode L


def _file_sample(ds: ImageFolderDataset, i: int) -> Sample | BadImage:
    """The file's bytes when it decodes as an image (the check training makes: `open_image`), else a
    `BadImage`; files in formats the readers do not take are decoded and stored as PNG."""
    path, label = ds.samples[i]
    try:
        data = path.read_bytes()
        ext = KEPT_EXTENSIONS.get(path.suffix.lower())
        if ext is not None:
            open_image(io.BytesIO(data), "RGB")
            return Sample(i, label, ext, data)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            image = im.copy() if im.mode in _PNG_MODES else to_mode(im, "RGB")
        return Sample(i, label, "png", _png(image))
    except Exception as e:  # any read or decoder error: the image is unusable, as in training
        return BadImage(str(path), error_reason(e))


def iter_samples(ds: Dataset, bad: BadImageCounter, workers: int = 0, chunk: int = 256) -> Iterator[Sample]:
    """The samples of `ds` (an idx or image-folder dataset) in order; unreadable images go to `bad` (which counts
    them, or raises when strict). `workers` threads read and check the images (0: this thread)."""
    load: Callable[[int], Sample | BadImage] = (
        (lambda i: _idx_sample(ds, i)) if isinstance(ds, IdxDataset) else (lambda i: _file_sample(ds, i)))
    pool = ThreadPoolExecutor(workers) if workers > 0 else None
    try:
        for start in range(0, len(ds), chunk):
            indices = range(start, min(start + chunk, len(ds)))
            for item in (pool.map(load, indices) if pool else map(load, indices)):
                if isinstance(item, BadImage):
                    bad([item])
                else:
                    yield item
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


# ------------------------------------------------------------------------------------------- output
def check_pack_output(out: str | os.PathLike, src: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse, before any work, in one line: OUT that is SRC, lies inside it or holds it; OUT that is a file or
    cannot be made; an OUT that exists and is not empty without `overwrite`; and, even with `overwrite`, a
    non-empty OUT that is not a packed data set (no SHA256SUMS): --overwrite replaces only earlier packs."""
    out, src = Path(out), Path(src)
    if within(out, src) or within(src, out):
        where = "is" if os.path.realpath(out) == os.path.realpath(src) else "lies inside or holds"
        raise ValueError(f"OUT {out} {where} the source {src}: the shards would mix with the data they are made "
                         "of; choose a folder outside it")
    check_output_folder(out, "OUT")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; give --overwrite to replace it, or choose another "
                                  "OUT")
        if not (out / SUMS_FILE).is_file():
            raise FileExistsError(f"{out} holds files but no {SUMS_FILE}, so it is not a packed data set: "
                                  "--overwrite replaces only those; remove it yourself or choose another OUT")
    return out


def _sibling(out: Path, what: str) -> Path:
    return out.parent / f".{out.name}.{what}-{socket.gethostname()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_siblings(out: Path) -> list[Path]:
    """Remove the temporary folders of earlier packs into `out` on this host whose process is gone (killed);
    returns them."""
    host, removed = socket.gethostname(), []
    for what in ("packing", "replaced"):
        for path in out.parent.glob(f".{out.name}.{what}-*"):
            owner, _, pid = path.name[len(f".{out.name}.{what}-"):].rpartition("-")
            if owner == host and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(tmp: Path, out: Path) -> None:
    """Put the finished folder `tmp` in the place of `out` by renames (an earlier pack there is removed after)."""
    old = None
    if out.is_dir() and any(out.iterdir()):
        old = _sibling(out, "replaced")
        os.rename(out, old)
    elif out.is_dir():
        out.rmdir()
    os.rename(tmp, out)
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sums(folder: Path, known: dict[str, str] | None = None) -> None:
    """`folder/SHA256SUMS` over every file below it (`sha256sum -c` format, paths relative, sorted); `known`
    holds digests computed while writing."""
    known = known or {}
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != SUMS_FILE)
    lines = [f"{known.get(name) or sha256_file(folder / name)}  {name}\n" for name in files]
    write_text(folder / SUMS_FILE, "".join(lines))


# ---------------------------------------------------------------------------------------------- wds
def _webdataset() -> Any:
    return import_extra("webdataset", "packing as WebDataset shards (--format wds)")


class _HashingFile:
    """A binary file that hashes what is written to it: the shard's SHA-256 without reading it back."""

    def __init__(self, path: Path):
        self.file, self.digest = open(path, "wb"), hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.file.write(data)

    def close(self) -> str:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return self.digest.hexdigest()


def write_wds_split(folder: Path, split: str, samples: Iterable[Sample], shard_size: int,
                    sums: dict[str, str]) -> dict[str, Any]:
    """Write `samples` as `folder/{split}-{index:06d}.tar` shards of `shard_size` samples; returns the split's
    `_info.json` entry and puts each shard's SHA-256 into `sums`."""
    wds = _webdataset()
    names: list[str] = []
    lengths: list[int] = []
    file = writer = None

    def close() -> None:
        writer.close()
        sums[names[-1]] = file.close()

    try:
        for sample in samples:
            if writer is None:
                names.append(f"{split}-{len(names):06d}.tar")
                lengths.append(0)
                file = _HashingFile(folder / names[-1])
                writer = wds.TarWriter(file, mtime=0)  # an int: a float mtime costs a PAX header a member
            writer.write({"__key__": f"{split}_{sample.index:08d}", sample.ext: sample.data, "cls": str(sample.label)})
            lengths[-1] += 1
            if lengths[-1] == shard_size:
                close()
                file = writer = None
        if writer is not None:
            close()
            file = writer = None
    finally:  # after a failure: the shard is closed and the whole temporary folder goes
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 (any error: the shard is thrown away)
                pass
        if file is not None:
            file.file.close()
    return {"name": split, "num_samples": sum(lengths), "filenames": names, "shard_lengths": lengths}


# --------------------------------------------------------------------------------------------- hfds
def _datasets() -> Any:
    return import_extra("datasets", "packing as a Hugging Face dataset (--format hfds)")


def write_hfds(folder: Path, splits: dict[str, Iterable[Sample]], classes: list[str], shard_size: int,
               tag: str) -> dict[str, int]:
    """Write the splits as a `datasets.DatasetDict` saved with `save_to_disk(folder)`, ceil(n / shard_size)
    shards a split; returns the shards per split. The generator's Arrow files go to `folder/.hf-cache` first
    (removed after), so the pack needs about twice the data's size on disk while it runs."""
    hf = _datasets()
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=classes)})
    cache = folder / ".hf-cache"
    quiet = hf.utils.are_progress_bars_disabled()
    hf.disable_progress_bars()
    try:
        parts = {}
        for split, samples in splits.items():
            def rows(samples=samples):
                for s in samples:
                    yield {"image": {"bytes": s.data, "path": None}, "label": s.label}
            try:
                parts[split] = hf.Dataset.from_generator(rows, features=features, cache_dir=str(cache),
                                                         split=hf.NamedSplit(split), fingerprint=f"{tag}-{split}")
            except hf.exceptions.DatasetGenerationError as e:  # the error our generator raised, unwrapped
                raise (e.__cause__ or e) from None
        shards = {split: math.ceil(len(ds) / shard_size) for split, ds in parts.items()}
        hf.DatasetDict(parts).save_to_disk(str(folder), num_shards=shards)
        del parts
    finally:
        if not quiet:
            hf.enable_progress_bars()
        shutil.rmtree(cache, ignore_errors=True)
    return shards


# --------------------------------------------------------------------------------------------- pack
def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def pack_dataset(src: str | os.PathLike, out: str | os.PathLike, format: str = "wds",
                 shard_size: int = DEFAULT_SHARD_SIZE, overwrite: bool = False, strict_images: bool = False,
                 workers: int = 4, progress: bool = True) -> PackReport:
    """Pack the classification source `src` into `out` as `format` ('wds' or 'hfds'; see the module docstring),
    `shard_size` samples a shard, with a progress bar over the samples. Everything is checked before anything is
    written (the source, the format's library, `check_pack_output`); the data set is written into a temporary
    sibling folder renamed to `out` at the end, which a failure removes. `workers` threads read and check the
    image files."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard size must be a positive integer, got {shard_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers!r}")
    _webdataset() if format == "wds" else _datasets()
    splits = source_splits(src)
    classes = class_names(splits)
    shown = check_pack_output(out, src, overwrite)
    out = Path(os.path.realpath(shown))  # the folder itself (not a link to it, not '.'): renamed in place
    start = time.perf_counter()
    remove_stale_siblings(out)
    bad = BadImageCounter(strict=strict_images)
    tmp = _sibling(out, "packing")
    bar = tqdm(total=sum(len(ds) for ds in splits.values()), desc="pack", unit="img", leave=False,
               disable=None if progress else True)

    counts = dict.fromkeys(splits, 0)

    def samples(split: str, ds: Dataset) -> Iterator[Sample]:
        for sample in iter_samples(ds, bad, workers):
            if not 0 <= sample.label < len(classes):
                raise DataError(f"label {sample.label} of sample {sample.index} is outside the {len(classes)} "
                                "classes")
            counts[split] += 1
            bar.update()
            yield sample

    try:
        tmp.mkdir(parents=True)
        sums: dict[str, str] = {}
        if format == "wds":
            info = {split: write_wds_split(tmp, split, samples(split, ds), shard_size, sums)
                    for split, ds in splits.items()}
            shards = {split: len(entry["filenames"]) for split, entry in info.items()}
            write_text(tmp / INFO_FILE, json.dumps({"name": out.name, "splits": info, "classes": classes}, indent=2)
                       + "\n")
        else:
            shards = write_hfds(tmp, {split: samples(split, ds) for split, ds in splits.items()}, classes,
                                shard_size, f"lstmvision-pack-{tmp.name}-{time.time_ns()}")
        write_sums(tmp, sums)
        size = _folder_bytes(tmp)
        _commit(tmp, out)
    except OSError as e:
        raise PermissionError(f"cannot write {shown}: {os_reason(e)}") from None
    finally:
        bar.close()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return PackReport(shown, format, counts, shards, classes, bad.count, size, time.perf_counter() - start)

