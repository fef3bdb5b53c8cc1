"""Every classification source `--data` names, behind one function: folders and idx files (`data.images`),
WebDataset shards and Hugging Face datasets (`data.shards`, by the prefixes `wds:`, `hfds:`, `hfids:`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from torch.utils.data import Dataset

from lstmvision.data.images import default_data_root, find_idx_files, resolve_folder
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
