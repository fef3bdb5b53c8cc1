"""Sharded and streamed classification data, named by a prefix in `--data` (the `[data]` extra):

- `wds:DIR` — WebDataset tar shards with timm's `_info.json` (per split: `filenames`, `shard_lengths`,
  `num_samples`; lstmvision adds `classes`), or `wds:PATTERN` with brace ranges (`train-{000000..000127}.tar`),
  counted by the `_info.json` beside them. Samples are keyed as WebDataset does: `__key__`, the image under
  `jpg`/`png`/`webp`/..., the class index under `cls`. Read with the `webdataset` library.
- `hfds:PATH|NAME[:split]` — a Hugging Face dataset (a `save_to_disk` folder, a folder or file of parquet files,
  or a hub name `datasets` finds in its cache), read map-style: `HFImageDataset`.
- `hfids:...` — the same sources streamed shard by shard (the arrow or parquet files of the split).

The streamed sources (`wds:`, `hfids:`) are `ShardStream`s: an epoch's order is a deterministic function of
(seed, epoch): the shards are shuffled with seed + epoch, their samples concatenated, and the sequence is cut
into one contiguous part per global worker (ranks x loader workers); each worker shuffles its part through a
buffer of `buffer_size` samples. Training parts hold the same number of whole batches, so
`len(sequence) mod (global workers x batch)` samples (fewer than one batch per worker) are left out of each epoch,
different ones every epoch; evaluation parts cover every sample exactly once. Because the order is known from
the shard lengths alone, a run resumed at step k replays exactly the samples after step k: each worker re-reads
its part from the oldest sample still in its buffer (`resume_position`), skipping without decoding those it
already delivered. A training sample's random augmentation is drawn from streams seeded by (seed, epoch,
sample), so it is the same whichever worker reads the sample, and after a resume.

An explicit `:split` names the split evaluation reads (`validate --data hfds:DIR:test`); training always reads
`train`. Unreadable images inside a shard are `BadImage`s (skipped and counted, `--strict-images` fails); a
missing or truncated shard, a label outside the classes, counts that disagree with the shards or a pattern that
matches nothing are a `DataError`.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import huggingface_hub
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from lstmvision.data.images import BadImage, DataError, error_reason, to_mode

PREFIXES = ("wds:", "hfds:", "hfids:")
INFO_NAMES = ("_info.json", "info.json")
TRAIN_SPLIT = "train"
EVAL_SPLITS = ("validation", "val", "test")  # the first one present is the evaluation split
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm", "pgm", "gif")
BUFFER_SIZE = 8192  # samples in each worker's shuffle buffer (timm's default for WebDataset)
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
EXTRA = "pip install 'lstmvision[data]'"


def is_sharded(spec: Any) -> bool:
    """Whether `--data` names a sharded or streamed source (`wds:`, `hfds:`, `hfids:`)."""
    return isinstance(spec, str) and spec.startswith(PREFIXES)


@dataclass(frozen=True)
class Shard:
    url: str
    length: int


@dataclass
class Source:
    """One split of a source: its shards (streams) or its map-style dataset (hfds), classes, where it is."""
    kind: str
    where: str
    class_names: list[str]
    shards: list[Shard]
    table: Any = None  # hfds: the `datasets.Dataset` of the split (images not decoded)
    image_key: str = "image"
    label_key: str = "label"


# ------------------------------------------------------------------------------------------- parsing
def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """(kind, body, split): 'hfds:data/x:test' -> ('hfds', 'data/x', 'test')."""
    kind, body = spec.split(":", 1)
    split = None
    if kind != "wds" and ":" in body:
        left, right = body.rsplit(":", 1)
        if left and _SPLIT_NAME.match(right) and not Path(body).exists():
            body, split = left, right
    if not body:
        raise DataError(f"--data {spec}: nothing after '{kind}:' (give a folder, a file pattern or a dataset name)")
    return kind, body, split


def source_root(spec: str) -> Path | None:
    """The local folder or file a source reads (for the output checks), None for a hub name."""
    kind, body, _ = parse_spec(spec)
    if kind == "wds" and "{" in body:
        body = body[: body.index("{")].rsplit("/", 1)[0] or "."
    path = Path(body)
    return path if path.exists() else None


def open_split(spec: str, split: str) -> Source:
    """The `split` ('train' or 'val') of the source `spec`."""
    kind, body, named = parse_spec(spec)
    if kind == "wds":
        return _wds_split(body, split)
    return _hf_split(body, split if split == TRAIN_SPLIT or named is None else named, streamed=kind == "hfids",
                     explicit=named is not None and split != TRAIN_SPLIT)


# ---------------------------------------------------------------------------------------- WebDataset
def import_extra(name: str, what: str) -> Any:
    """The module `name` of the optional [data] extra (webdataset, datasets, braceexpand), or a `DataError`
    saying that `what` needs the extra."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise DataError(f"{what} needs the [data] extra: {EXTRA}") from None


def _wds():
    return import_extra("webdataset", "wds: data")


def _read_info(folder: Path) -> dict[str, Any] | None:
    for name in INFO_NAMES:
        if (folder / name).is_file():
            try:
                return json.loads((folder / name).read_text())
            except (OSError, ValueError) as e:
                raise DataError(f"cannot read {folder / name}: {error_reason(e)}") from None
    return None


def _info_split(info: dict[str, Any], split: str, where: str) -> dict[str, Any]:
    splits = info.get("splits") or {}
    names = (TRAIN_SPLIT,) if split == TRAIN_SPLIT else EVAL_SPLITS
    for name in names:
        if name in splits:
            return splits[name]
    raise DataError(f"{where} has no {' or '.join(names)} split (it has: {', '.join(splits) or 'none'})")


def _info_classes(info: dict[str, Any], where: str) -> list[str]:
    if info.get("classes"):
        return [str(c) for c in info["classes"]]
    if info.get("num_classes"):
        return [str(i) for i in range(int(info["num_classes"]))]
    raise DataError(f"{where} names no classes: add \"classes\": [...] (label order) to it, as "
                    "`lstmvision data pack` writes")


def _split_shards(entry: dict[str, Any], folder: str, where: str) -> list[Shard]:
    names, lengths = entry.get("filenames") or [], entry.get("shard_lengths") or []
    if not names or len(names) != len(lengths):
        raise DataError(f"{where}: split {entry.get('name')!r} needs as many shard_lengths as filenames "
                        f"({len(lengths)} and {len(names)})")
    if "num_samples" in entry and int(entry["num_samples"]) != sum(lengths):
        raise DataError(f"{where}: split {entry.get('name')!r} says num_samples {entry['num_samples']} but its "
                        f"shard_lengths add up to {sum(lengths)}")
    return [Shard(f"{folder}/{n}", int(k)) for n, k in zip(names, lengths)]


def _wds_split(body: str, split: str) -> Source:
    _wds()
    if "{" in body or body.endswith(".tar"):
        return _wds_pattern(body, split)
    folder = Path(body)
    if not folder.is_dir():
        raise DataError(f"wds:{body}: no such folder (give the folder of the shards and _info.json, or a pattern "
                        "such as wds:DIR/train-{000000..000009}.tar)")
    info = _read_info(folder)
    if info is None:
        raise DataError(f"wds:{body}: no _info.json in the folder (it gives the shards and their sample counts; "
                        "`lstmvision data pack` writes it)")
    where = str(folder / "_info.json")
    shards = _split_shards(_info_split(info, split, where), str(folder), where)
    _check_local(shards)
    return Source("wds", f"wds:{body}", _info_classes(info, where), shards)


def _wds_pattern(pattern: str, split: str) -> Source:
    urls = list(import_extra("braceexpand", "wds: data").braceexpand(pattern))
    folder = pattern[: pattern.index("{")].rsplit("/", 1)[0] if "{" in pattern else str(Path(pattern).parent)
    info = _read_info(Path(folder)) if Path(folder).is_dir() else None
    if info is None:
        raise DataError(f"wds:{pattern}: no _info.json beside the shards in {folder} (it gives their sample counts "
                        "and classes; `lstmvision data pack` writes it)")
    where = f"{folder}/_info.json"
    lengths = {Path(n).name: int(k) for e in (info.get("splits") or {}).values()
               for n, k in zip(e.get("filenames") or [], e.get("shard_lengths") or [])}
    names = [Path(u).name for u in urls]
    unknown = [n for n in names if n not in lengths]
    if unknown:
        raise DataError(f"wds:{pattern}: {len(unknown)} shard(s) the pattern names are not in {where} "
                        f"(first: {unknown[0]})")
    shards = [Shard(u, lengths[n]) for u, n in zip(urls, names)]
    if split != TRAIN_SPLIT:  # evaluation: the pattern's shards if they are not the training split, else its val
        train = {Path(n).name for n in _info_split(info, TRAIN_SPLIT, where).get("filenames", [])} \
            if TRAIN_SPLIT in (info.get("splits") or {}) else set()
        if set(names) <= train:
            shards = _split_shards(_info_split(info, split, where), folder, where)
    _check_local(shards)
    return Source("wds", f"wds:{pattern}", _info_classes(info, where), shards)


def _check_local(shards: Sequence[Shard]) -> None:
    if not shards:
        raise DataError("the shard pattern matches no shards")
    for s in shards:
        if "://" not in s.url and not s.url.startswith("pipe:") and not Path(s.url).is_file():
            raise DataError(f"shard {s.url} is missing")


def _wds_records(url: str) -> Iterator[dict[str, Any]]:
    """The raw samples (dicts of bytes) of one tar shard, in order."""
    tar = _wds().tariterators
    yield from tar.group_by_keys(tar.tar_file_expander(tar.url_opener([dict(url=url)])))


def _wds_decode(record: dict[str, Any]) -> tuple[bytes | None, Any, str]:
    key = next((k for k in IMAGE_KEYS if k in record), None)
    label = record.get("cls")
    return (record[key] if key else None), (None if label is None else int(label)), str(record.get("__key__"))


# ------------------------------------------------------------------------------------ Hugging Face
def _datasets():
    return import_extra("datasets", "hfds:/hfids: data")


def _load_hf(body: str) -> Any:
    """The DatasetDict (or Dataset) at `body`: a save_to_disk folder, parquet files, or a hub name."""
    ds = _datasets()
    path = Path(body)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            return ds.load_from_disk(str(path))
        if path.is_file() and path.suffix == ".parquet":
            return ds.load_dataset("parquet", data_files={TRAIN_SPLIT: str(path)})
        if not path.exists():  # a hub name: its files in the hub cache, else whatever `datasets` finds
            snapshot = _hub_snapshot(body)
            return ds.load_dataset(snapshot or body)
        return ds.load_dataset(body)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        raise DataError(f"hfds:{body}: {error_reason(e)}"[:400]) from None
    except Exception as e:  # datasets raises its own errors (DatasetNotFoundError, ...) for unusable sources
        raise DataError(f"hfds:{body}: {error_reason(e)}"[:400]) from None


def _hub_snapshot(name: str) -> str | None:
    """The folder of dataset repo `name` in the local hub cache (as `huggingface_hub` downloaded it), or None."""
    try:
        return huggingface_hub.snapshot_download(name, repo_type="dataset", local_files_only=True)
    except Exception:  # not cached, or not a valid repo id: `datasets` says why
        return None


def _hf_table(dd: Any, split: str, explicit: bool, where: str) -> tuple[Any, str]:
    if not hasattr(dd, "keys"):  # a single Dataset (save_to_disk of one split)
        return dd, split
    names = (split,) if split == TRAIN_SPLIT or explicit else EVAL_SPLITS
    for name in names:
        if name in dd:
            return dd[name], name
    raise DataError(f"{where} has no {' or '.join(names)} split (it has: {', '.join(dd.keys())})")


def _hf_columns(table: Any, where: str) -> tuple[str, str, list[str]]:
    ds = _datasets()
    feats = table.features
    image = next((k for k, f in feats.items() if isinstance(f, ds.Image)), None)
    label = next((k for k, f in feats.items() if isinstance(f, ds.ClassLabel)), None)
    label = label or next((k for k in ("label", "labels", "cls") if k in feats), None)
    if image is None or label is None:
        raise DataError(f"{where} needs an image column (Image feature) and a label column (ClassLabel or "
                        f"'label'); it has {', '.join(feats)}")
    if isinstance(feats[label], ds.ClassLabel):
        names = list(feats[label].names)
    else:
        names = [str(i) for i in range(int(max(table[label])) + 1)]
    return image, label, names


def _hf_split(body: str, split: str, streamed: bool, explicit: bool) -> Source:
    kind = "hfids" if streamed else "hfds"
    where = f"{kind}:{body}"
    table, name = _hf_table(_load_hf(body), split, explicit, where)
    image, label, names = _hf_columns(table, where)
    table = table.cast_column(image, _datasets().Image(decode=False))
    if not streamed:
        return Source(kind, f"{where}:{name}", names, [], table, image, label)
    files = [f["filename"] for f in table.cache_files]
    if not files:
        raise DataError(f"{where}: the {name} split has no files to stream (load it with hfds:)")
    lengths = [_datasets().Dataset.from_file(f).num_rows for f in files]
    return Source(kind, f"{where}:{name}", names, [Shard(f, n) for f, n in zip(files, lengths)], None, image, label)


def _hf_records(url: str, image: str, label: str) -> Iterator[dict[str, Any]]:
    table = _datasets().Dataset.from_file(url)
    table = table.cast_column(image, _datasets().Image(decode=False))
    for i, row in enumerate(table):
        yield dict(image=row[image], label=row[label], key=f"{url}[{i}]")


# ------------------------------------------------------------------------------------------ decoding
def decode(data: bytes | None, label: Any, key: str, num_classes: int, img_mode: str,
           transform: Callable | None) -> Any:
    """(image, label) of one stored sample, or a `BadImage` for bytes that are no image; a missing or
    out-of-range label is a `DataError`."""
    if label is None or not 0 <= int(label) < num_classes:
        raise DataError(f"sample {key} has label {label!r}, outside the {num_classes} classes "
                        f"(0..{num_classes - 1})")
    if data is None:
        return BadImage(key, "no image in the sample")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            img = to_mode(im, img_mode)
            img = img.copy() if img is im else img
    except Exception as e:  # any decoder error: the sample is unusable
        return BadImage(key, error_reason(e))
    return (transform(img) if transform is not None else img), int(label)


def _image_bytes(value: Any) -> bytes | None:
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        return Path(value["path"]).read_bytes() if value.get("path") else None
    return value


class HFImageDataset(Dataset):
    """A Hugging Face dataset split as (image, label) samples: images decoded (and converted to `img_mode`) here,
    so an unreadable one is a `BadImage` like an unreadable file."""

    def __init__(self, source: Source, img_mode: str = "RGB"):
        self.source, self.table, self.img_mode = source, source.table, img_mode
        self.class_names = source.class_names
        self.root = source.where
        self.transform: Callable | None = None
        self.grayscale = _is_gray(self._bytes(0)) if len(self.table) else False

    def _bytes(self, i: int) -> bytes | None:
        return _image_bytes(self.table[i][self.source.image_key])

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int):
        row = self.table[i]
        return decode(_image_bytes(row[self.source.image_key]), row[self.source.label_key],
                      f"{self.root}[{i}]", len(self.class_names), self.img_mode, self.transform)


def _is_gray(data: bytes | None) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.mode in _GRAY_MODES
    except Exception:  # an unreadable first image says nothing about the others
        return False


# -------------------------------------------------------------------------------------------- order
def buffer_order(n: int, size: int, rng: random.Random) -> list[int]:
    """The order in which a shuffle buffer of `size` emits items 0..n-1 read in order: fill the buffer, then
    for every further item emit a random buffered one and put the new item in its place; drain shuffled."""
    buf = list(range(min(size, n)))
    out = []
    for p in range(len(buf), n):
        j = rng.randrange(len(buf))
        out.append(buf[j])
        buf[j] = p
    rng.shuffle(buf)
    return out + buf


@dataclass
class Plan:
    """Who reads what in an epoch: the settings of `ShardStream.assign`."""
    training: bool = False
    world: int = 1
    rank: int = 0
    seed: int = 0
    batch_size: int = 1
    workers: int = 0
    buffer_size: int = BUFFER_SIZE


class ShardStream(IterableDataset):
    """A streamed split (WebDataset shards or Hugging Face arrow files) as (image, label) samples, in the
    deterministic, resumable order described in the module docstring. `build_loader` assigns it to a rank
    (`assign`); the trainer sets the epoch and the samples of it already trained (`set_epoch`, `skip_samples`)."""

    def __init__(self, source: Source, img_mode: str = "RGB"):
        self.source, self.img_mode = source, img_mode
        self.class_names = source.class_names
        self.root = source.where
        self.transform: Callable | None = None
        self.keep: list[int] | None = None  # a fixed subset of the samples (`limit`), global positions
        self.plan = Plan()
        self.epoch, self.skip_samples = 0, 0
        starts, total = [], 0
        for s in source.shards:
            starts.append(total)
            total += s.length
        self.starts, self.total = starts, total
        self.grayscale = self._first_is_gray()

    # ------------------------------------------------------------------ settings
    def assign(self, plan: Plan) -> None:
        self.plan = plan
        if plan.training and self.per_worker() == 0:
            n, g = self.size(), plan.world * max(plan.workers, 1)
            raise DataError(f"the training set of {n} samples in {self.root} is smaller than one batch for each of "
                            f"its {g} reader(s) (ranks x workers) x --batch-size {plan.batch_size}; lower "
                            "--batch-size or --workers")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def subset(self, n: int, seed: int) -> "ShardStream":
        """A fixed random subset of `n` samples (as `loaders.limit` draws it)."""
        other = copy.copy(self)
        other.plan = replace(self.plan)
        g = torch.Generator().manual_seed(seed)
        other.keep = sorted(torch.randperm(self.size(), generator=g)[:n].tolist())
        return other

    def size(self) -> int:
        return len(self.keep) if self.keep is not None else self.total

    def per_worker(self) -> int:
        """Training: the samples each global worker reads in an epoch (whole batches)."""
        p = self.plan
        readers = p.world * max(p.workers, 1)
        return self.size() // (readers * p.batch_size) * p.batch_size

    def __len__(self) -> int:
        """The samples this rank reads in an epoch."""
        p = self.plan
        if p.training:
            return self.per_worker() * max(p.workers, 1)
        return sum(len(self._part(p.rank * max(p.workers, 1) + w)) for w in range(max(p.workers, 1)))

    # --------------------------------------------------------------------- order
    def _epoch_sequence(self) -> list[int]:
        """Global positions in this epoch's read order: shards (shuffled when training), then their samples."""
        order = list(range(len(self.source.shards)))
        if self.plan.training:
            random.Random(self.plan.seed + self.epoch).shuffle(order)
        keep = set(self.keep) if self.keep is not None else None
        seq = []
        for s in order:
            start = self.starts[s]
            positions = range(start, start + self.source.shards[s].length)
            seq.extend(positions if keep is None else [q for q in positions if q in keep])
        return seq

    def _part(self, reader: int) -> list[int]:
        """The contiguous part of the epoch's sequence that global reader `reader` reads."""
        seq, p = self._epoch_sequence(), self.plan
        readers = p.world * max(p.workers, 1)
        if p.training:
            n = self.per_worker()
            return seq[reader * n:(reader + 1) * n]
        return seq[reader * len(seq) // readers:(reader + 1) * len(seq) // readers]

    def emit_order(self, reader: int, n: int) -> list[int]:
        """Indices into the reader's part, in the order it delivers them."""
        if not self.plan.training:
            return list(range(n))
        rng = random.Random(f"{self.plan.seed}/{self.epoch}/{reader}")
        return buffer_order(n, self.plan.buffer_size, rng)

    def role(self, worker: int) -> int:
        """Which worker's part loader worker `worker` reads: the loader takes batch i from worker i mod workers,
        also after a resume, so the worker that gives the first batch after the skipped ones continues the part
        of the worker that would have given it."""
        workers = max(self.plan.workers, 1)
        return (worker + self.skip_samples // max(self.plan.batch_size, 1)) % workers if self.plan.training else worker

    def delivered(self, worker: int) -> int:
        """Samples the worker whose part is `worker` delivered before the skipped batches ended."""
        workers, batches = max(self.plan.workers, 1), self.skip_samples // max(self.plan.batch_size, 1)
        return (batches - worker + workers - 1) // workers * self.plan.batch_size if batches > worker else 0

    def resume_position(self, worker: int) -> tuple[str, int] | None:
        """(shard, offset) where the reader of part `worker` starts when `skip_samples` are already trained."""
        reader = self.plan.rank * max(self.plan.workers, 1) + worker
        part = self._part(reader)
        todo = self.emit_order(reader, len(part))[self.delivered(worker):]
        if not todo:
            return None
        q = part[min(todo)]
        s = _shard_of(self.starts, q)
        return self.source.shards[s].url, q - self.starts[s]

    # ------------------------------------------------------------------ reading
    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker = self.role(info.id if info is not None else 0)
        reader = self.plan.rank * max(self.plan.workers, 1) + worker
        part = self._part(reader)
        todo = self.emit_order(reader, len(part))[self.delivered(worker) if self.plan.training else 0:]
        if not todo:
            return
        wanted = set(todo)
        pending: dict[int, Any] = {}
        records = self._records(part, min(todo))
        for i in todo:
            while i not in pending:
                j, record = next(records)
                if j in wanted:
                    pending[j] = record
            yield self._decode(pending.pop(i), part[i])

    def _records(self, part: list[int], first: int) -> Iterator[tuple[int, Any]]:
        """(index in `part`, raw record) for part[first:], shard by shard, reading each shard from the first
        sample needed."""
        i = first
        while i < len(part):
            s = _shard_of(self.starts, part[i])
            shard, start = self.source.shards[s], self.starts[s]
            offsets = {}
            while i < len(part) and start <= part[i] < start + shard.length:
                offsets[part[i] - start] = i
                i += 1
            yield from self._shard_records(shard, offsets)

    def _shard_records(self, shard: Shard, offsets: dict[int, int]) -> Iterator[tuple[int, Any]]:
        last, seen = max(offsets), 0
        try:
            records = self._raw(shard.url)
            for offset, record in enumerate(records):
                seen = offset + 1
                if offset in offsets:
                    yield offsets[offset], record
                if offset == last:
                    break
            if last == shard.length - 1 and next(records, None) is not None:
                raise DataError(f"shard {shard.url} holds more samples than the {shard.length} its index says")
        except DataError:
            raise
        except Exception as e:  # a truncated or unreadable tar/arrow file
            raise DataError(f"cannot read shard {shard.url}: {error_reason(e)} (truncated or damaged; "
                            "pack it again)") from None
        if seen <= last:
            raise DataError(f"shard {shard.url} holds {seen} samples but its index says {shard.length}")

    def _raw(self, url: str) -> Iterator[Any]:
        if self.source.kind == "wds":
            return _wds_records(url)
        return _hf_records(url, self.source.image_key, self.source.label_key)

    def _decode(self, record: Any, position: int) -> Any:
        if self.source.kind == "wds":
            data, label, key = _wds_decode(record)
            key = f"{record.get('__url__', self.root)}:{key}"
        else:
            data, label, key = _image_bytes(record["image"]), record["label"], record["key"]
        if not self.plan.training:
            return decode(data, label, key, len(self.class_names), self.img_mode, self.transform)
        with sample_rng(self.plan.seed, self.epoch, position):  # augmentation: the same in any worker, on resume
            return decode(data, label, key, len(self.class_names), self.img_mode, self.transform)

    def _first_is_gray(self) -> bool:
        if not self.source.shards:
            return False
        record = next(iter(self._raw(self.source.shards[0].url)), None)
        if record is None:
            return False
        data = _wds_decode(record)[0] if self.source.kind == "wds" else _image_bytes(record["image"])
        return _is_gray(data)


@contextlib.contextmanager
def sample_rng(seed: int, epoch: int, position: int) -> Iterator[None]:
    """Python's, NumPy's and torch's random streams seeded by (seed, epoch, sample) inside, restored after: a
    sample's random augmentation does not depend on which worker reads it or on what was read before."""
    value = ((seed * 1_000_003 + epoch) * 1_000_000_007 + position) % 2**32
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.default_generator.get_state()
    torch.default_generator.manual_seed(value)  # the CPU generator only: torch.manual_seed also queues CUDA's
    random.seed(value)
    np.random.seed(value)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.default_generator.set_state(cpu)


def _shard_of(starts: list[int], q: int) -> int:
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= q:
            lo = mid
        else:
            hi = mid - 1
    return lo


# ------------------------------------------------------------------------------------------- public
def open_dataset(spec: str, split: str, img_mode: str = "L", class_names: Sequence[str] | None = None) -> Dataset:
    """The `split` ('train' or 'val') of a sharded source as a dataset: `HFImageDataset` for `hfds:`,
    `ShardStream` for `wds:` and `hfids:`."""
    source = open_split(spec, split)
    if class_names is not None and len(class_names) != len(source.class_names):
        raise DataError(f"{source.where} has {len(source.class_names)} classes, the training set "
                        f"{len(class_names)}")
    if source.kind == "hfds":
        ds: Dataset = HFImageDataset(source, img_mode)
    else:
        ds = ShardStream(source, img_mode)
    if class_names is not None:
        ds.class_names = list(class_names)
    if (len(ds) if source.kind == "hfds" else ds.total) == 0:
        raise DataError(f"the {split} set at {source.where} is empty")
    return ds


def describe_source(spec: str) -> dict[str, Any]:
    """Kind, splits ({split: {samples, shards}}) and classes of a sharded source."""
    kind = parse_spec(spec)[0]
    splits: dict[str, dict[str, int]] = {}
    classes: list[str] = []
    for split in (TRAIN_SPLIT, "val"):
        try:
            source = open_split(spec, split)
        except DataError as e:
            if "split" not in str(e):
                raise
            continue
        name = source.where.rsplit(":", 1)[-1] if kind != "wds" else (TRAIN_SPLIT if split == TRAIN_SPLIT
                                                                      else "validation")
        count = len(source.table) if source.table is not None else sum(s.length for s in source.shards)
        splits[name] = dict(samples=count, shards=len(source.shards) or len(source.table.cache_files or []) or 1)
        classes = classes or source.class_names
    if not splits:
        raise DataError(f"{spec} holds no train or evaluation split")
    return dict(kind=kind, splits=splits, classes=classes)
