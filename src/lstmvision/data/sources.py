"""Every classification source `--data` names, behind one function: folders and idx files (`data.images`),
WebDataset shards and Hugging Face datasets (`data.shards`, by the prefixes `wds:`, `hfds:`, `hfids:`)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset, IterableDataset

from lstmvision.data.images import BadImage, default_data_root, find_idx_files, resolve_folder, save_png
from lstmvision.data.shards import is_sharded, open_dataset, source_root


def resolve_dataset(path: str | os.PathLike | None, split: str, img_mode: str = "L",
                    class_names: Sequence[str] | None = None) -> Dataset:
    """The `split` ('train' or 'val') of the source at `path`: an ImageFolder tree or class folder, an idx
    folder, `wds:...`, `hfds:...` or `hfids:...`; None: the default Fashion-MNIST."""
    if is_sharded(path):
        return open_dataset(str(path), split, img_mode, class_names)
    return resolve_folder(path, split, img_mode, class_names)


def default_channels(path: str | os.PathLike | None) -> int:
    """Input channels the training data at `path` gives by default: 1 for grayscale data (idx files, or shards
    whose images are grayscale), else 3."""
    if is_sharded(path):
        return 1 if open_dataset(str(path), "train").grayscale else 3
    root = default_data_root() if path is None else Path(path)
    return 1 if find_idx_files(root, "train") is not None else 3


def data_root(path: str | os.PathLike | None) -> Path | None:
    """The local file or folder a source reads (None for a hub name)."""
    if is_sharded(path):
        return source_root(str(path))
    return default_data_root() if path is None else Path(path)


def to_image_folders(spec: str, folder: str | os.PathLike) -> Path:
    """A source (sharded, or any `resolve_dataset` reads) written once as an ImageFolder tree (`train/` and
    `test/`, PNG files in the images' own channels, class folders named `NNNN_<class>` so that their sorted order
    is the label order), for commands that need files (transfer's seeded subsets). Built aside and renamed into
    place; an existing tree is reused."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    train = resolve_dataset(spec, "train", img_mode="L")
    mode = "L" if train.grayscale else "RGB"  # the images' own channels
    train.img_mode = mode
    for split, ds in (("train", train), ("test", resolve_dataset(spec, "val", mode, train.class_names))):
        names = [f"{i:04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', c)}" for i, c in enumerate(train.class_names)]
        for name in names:
            (tmp / split / name).mkdir(parents=True, exist_ok=True)
        ds.transform = None
        items = iter(ds) if isinstance(ds, IterableDataset) else (ds[i] for i in range(len(ds)))
        for k, item in enumerate(items):
            if not isinstance(item, BadImage):
                save_png(tmp / split / names[item[1]] / f"{k:07d}.png", np.asarray(item[0]))
    os.replace(tmp, folder)
    return folder
