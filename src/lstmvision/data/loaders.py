"""DataLoaders of every task: (distributed, resumable) sampling, unreadable images set apart, fixed subsets.

- `build_loader`: a DataLoader of (inputs, targets, unreadable images) batches; training batches come from a
  `ResumableSampler`, evaluation batches from a `ShardSampler` (every sample exactly once across ranks); a
  streamed source (`ShardStream`) orders and splits its samples itself.
- `start_epoch`: the epoch's order, with the samples already trained in it skipped (resume).
- `collate_skip_bad`: stacked tensors, with the `BadImage`s set apart.
- `limit` / `Subset`: a fixed random subset of a dataset; `base_dataset` and `dataset_source` see through it.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from lstmvision.data.images import BadImage, DataError, require_readable
from lstmvision.data.shards import Plan, ShardStream


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
    """(inputs, targets, unreadable): the readable samples stacked (class labels or dense masks)."""
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


def build_loader(dataset: Dataset, transform, batch_size: int, training: bool, workers: int = 0,
                 world_size: int = 1, rank: int = 0, seed: int = 0, pin_memory: bool = False,
                 drop_last: bool = False, collate_fn: Callable = collate_skip_bad) -> DataLoader:
    """A DataLoader of (inputs, targets, unreadable images) batches (`collate_fn`: tensors stacked by default;
    detection keeps lists)."""
    dataset.transform = transform
    if isinstance(dataset, ShardStream):  # workers are started per epoch: they must see the epoch and the skip
        dataset.assign(Plan(training, world_size, rank, seed, batch_size, workers))
        return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_fn,
                          pin_memory=pin_memory, drop_last=drop_last)
    if training:
        sampler: Sampler = ResumableSampler(dataset, world_size, rank, shuffle=True, seed=seed)
    else:
        sampler = ShardSampler(len(dataset), world_size, rank)
    kw: dict[str, Any] = dict(persistent_workers=True) if workers > 0 else {}
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_fn, pin_memory=pin_memory, drop_last=drop_last, **kw)


def start_epoch(loader: DataLoader, epoch: int, skip_samples: int) -> None:
    """Set the training loader's `epoch` (its shuffle) and the samples of it this rank already trained on."""
    order = loader.dataset if isinstance(loader.dataset, ShardStream) else loader.sampler
    order.set_epoch(epoch)
    order.skip_samples = skip_samples


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
    if isinstance(dataset, ShardStream):
        return dataset if n is None or n >= dataset.size() else dataset.subset(n, seed)
    if n is None or n >= len(dataset):
        return dataset
    g = torch.Generator().manual_seed(seed)
    subset = Subset(dataset, sorted(torch.randperm(len(dataset), generator=g)[:n].tolist()))
    require_readable(subset, f"the {n} images chosen from {getattr(dataset, 'root', 'the data')}")
    return subset


def num_samples(ds: Dataset) -> int:
    """The samples in a dataset (a stream's whole split, not the part one rank reads)."""
    return ds.size() if isinstance(ds, ShardStream) else len(ds)


def base_dataset(ds: Dataset) -> Dataset:
    """The dataset under any `limit` subsets."""
    while hasattr(ds, "dataset"):
        ds = ds.dataset
    return ds


def dataset_source(dataset: Dataset) -> str:
    """Where a (possibly subset) dataset reads from, for messages."""
    root = getattr(base_dataset(dataset), "root", None)
    return str(root) if root is not None else "the evaluation data"
