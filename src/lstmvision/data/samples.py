"""Sample images to try the commands on: the first images of a Fashion-MNIST (or any MNIST-format) split written
as PNG files named after their split, index and class, `OUTPUT/test_0000_ankle_boot.png`, so that a prediction
can be checked against the name."""
from __future__ import annotations

import os
import re
from pathlib import Path

from tqdm import tqdm

from lstmvision.data.images import DataError, IdxDataset, default_data_root, find_idx_files, save_png
from lstmvision.outputs import check_output_folder, check_outputs

SPLITS = {"test": "val", "train": "train"}  # sample split -> the idx reader's split (t10k-* is "val")


def sample_name(split: str, index: int, class_name: str, width: int) -> str:
    """`test_0042_ankle_boot.png`: split, zero-padded index in the split, class name in lower case with every run
    of other characters as one underscore (`T-shirt/top` -> `t_shirt_top`)."""
    slug = re.sub(r"[^a-z0-9]+", "_", class_name.lower()).strip("_") or "class"
    return f"{split}_{index:0{width}d}_{slug}.png"


def _split_of(source: Path, split: str) -> IdxDataset:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if find_idx_files(source, SPLITS[split]) is None:
        stem = "t10k" if split == "test" else "train"
        raise DataError(f"no {split} idx files in {source} (expected {stem}-images-idx3-ubyte[.gz] and "
                        f"{stem}-labels-idx1-ubyte[.gz])")
    return IdxDataset.from_folder(source, SPLITS[split])


def write_samples(output: str | os.PathLike, count: int = 10, split: str = "test",
                  source: str | os.PathLike | None = None, overwrite: bool = False,
                  progress: bool = True) -> list[Path]:
    """Write the first `count` images of `split` ('test' or 'train') of the idx folder `source` (default: the
    Fashion-MNIST folder of `default_data_root`) into `output` as PNG files named by `sample_name`; returns
    their paths. Checked before anything is written: an existing file is replaced only with `overwrite`, and
    `output` may not lie inside `source`."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    source = default_data_root() if source is None else Path(source)
    output = check_output_folder(output, "--output", reads=[source])
    ds = _split_of(source, split)
    if count > len(ds):
        raise ValueError(f"{count} samples asked, but the {split} split in {source} has {len(ds)} images")
    width = len(str(len(ds) - 1))
    paths = [output / sample_name(split, i, ds.class_names[ds.labels[i]], width) for i in range(count)]
    check_outputs(paths, [source], overwrite)
    for i, path in enumerate(tqdm(paths, desc="samples", unit="img", leave=False, disable=None if progress else True)):
        save_png(path, ds.images[i])
    return paths
