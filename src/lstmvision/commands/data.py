"""`lstmvision data`: `pack` writes a classification source (image-class folders, idx files) as WebDataset shards
or a Hugging Face dataset (`lstmvision.data.packing`); `info` describes any source `--data` names
(`lstmvision.data.shards.describe_source`, `lstmvision.data.packing.describe_folder`)."""
from __future__ import annotations

import os
from pathlib import Path

from lstmvision.data.images import DataError
from lstmvision.data.packing import DEFAULT_SHARD_SIZE, INFO_FILE, PackReport, describe_folder, pack_dataset
from lstmvision.data.shards import describe_source, is_sharded

KINDS = {"idx": "MNIST-format idx files", "folder": "image-class folders", "wds": "WebDataset shards",
         "hfds": "Hugging Face dataset, map-style", "hfids": "Hugging Face dataset, streamed"}


def pack(src: str | os.PathLike, out: str | os.PathLike, format: str, shard_size: int = DEFAULT_SHARD_SIZE,
         overwrite: bool = False, strict_images: bool = False, workers: int = 4) -> PackReport:
    """`pack_dataset` with a progress bar: `src` packed into `out` as `format` ('wds' or 'hfds')."""
    return pack_dataset(src, out, format, shard_size, overwrite, strict_images, workers, progress=True)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def pack_summary(report: PackReport) -> str:
    """The done line: format and folder, per split the samples and shards, classes, skipped images, size, time."""
    splits = ", ".join(f"{split} {n:,} samples in {report.shards[split]} shard{'s' * (report.shards[split] != 1)}"
                       for split, n in report.samples.items())
    skipped = (f"; {report.skipped} unreadable image{'s' * (report.skipped != 1)} skipped" if report.skipped else "")
    read_as = f"{report.format}:{report.out}"
    return (f"data pack: wrote {read_as} ({splits}; {len(report.classes)} classes{skipped}; "
            f"{_size(report.bytes)} in {report.seconds:.1f} s)")


def _describe(spec: str) -> dict:
    try:
        return describe_source(spec) if is_sharded(spec) else describe_folder(spec)
    except DataError:
        path = Path(spec)
        if path.is_dir() and (path / INFO_FILE).is_file():
            raise DataError(f"{spec} holds WebDataset shards: give wds:{spec}") from None
        if path.is_dir() and (path / "dataset_dict.json").is_file():
            raise DataError(f"{spec} holds a Hugging Face dataset: give hfds:{spec} (or hfids:{spec})") from None
        raise


def info_lines(spec: str, classes: int = 10) -> list[str]:
    """What `data info` prints for the source `spec`: its kind, each split's samples and shards, the number of
    classes and the first `classes` names (0: all)."""
    desc = _describe(spec)
    kind = desc["kind"]
    lines = [f"{spec}: {KINDS.get(kind, kind)} ({kind})"]
    for split, counts in desc["splits"].items():
        shards = counts.get("shards")
        where = f" in {shards} shard{'s' * (shards != 1)}" if shards else ""
        lines.append(f"  {split}: {counts['samples']:,} samples{where}")
    names = list(desc["classes"])
    shown = names if classes == 0 else names[:classes]
    more = f", ... ({len(names) - len(shown)} more)" if len(shown) < len(names) else ""
    lines.append(f"  {len(names)} classes: {', '.join(shown)}{more}")
    return lines
