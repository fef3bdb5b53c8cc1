"""Datasets, loaders and data generators, one module per job:

- `sources`: `resolve_dataset`, every source `--data` names (folders, idx files, shards, Hugging Face datasets).
- `images`: reading data: idx files and image files, the idx and image-folder datasets, `resolve_folder`,
  unreadable images (`BadImage`, `BadImageCounter`), `DataError`, `save_png`.
- `shards`: WebDataset shards and Hugging Face datasets, map-style or streamed in a resumable order.
- `loaders`: `build_loader` with its samplers and collation, `limit` / `Subset`.
- `classification`: timm's evaluation transform and normalisation values fitted to a model's channels.
- `segmentation`: the ADE20K / images+masks dataset and mmseg's joint transforms.
- `detection`: the COCO-layout dataset, its transform and collation.
- `scenes`: synthetic segmentation and detection scenes made of Fashion-MNIST garments.
- `samples`: Fashion-MNIST images as PNG files to try the commands on.

The names of `images`, `sources`, `shards`, `loaders` and `classification` are also importable from here.
"""
from lstmvision.constants import FASHION_MNIST_MEAN, FASHION_MNIST_STD, INTERPOLATIONS
from lstmvision.data.classification import check_eval_settings, create_eval_transform, fit_channels
from lstmvision.data.images import (
    DEBIAN_FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    IMAGE_EXTENSIONS,
    BadImage,
    BadImageCounter,
    DataError,
    IdxDataset,
    ImageFolderDataset,
    default_data_root,
    error_reason,
    find_idx_files,
    list_images,
    open_image,
    open_image_or_skip,
    read_idx,
    require_readable,
    save_png,
    to_mode,
)
from lstmvision.data.loaders import (
    ResumableSampler,
    ShardSampler,
    Subset,
    base_dataset,
    build_loader,
    collate_skip_bad,
    dataset_source,
    limit,
    num_samples,
    start_epoch,
)
from lstmvision.data.shards import HFImageDataset, ShardStream, describe_source, is_sharded
from lstmvision.data.sources import data_root, default_channels, resolve_dataset
from lstmvision.outputs import file_id

__all__ = [
    "DEBIAN_FASHION_MNIST", "FASHION_MNIST_CLASSES", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "IMAGE_EXTENSIONS",
    "INTERPOLATIONS", "BadImage", "BadImageCounter", "DataError", "IdxDataset", "ImageFolderDataset",
    "HFImageDataset", "ResumableSampler", "ShardSampler", "ShardStream", "Subset", "base_dataset", "build_loader", "check_eval_settings",
    "collate_skip_bad", "create_eval_transform", "data_root", "dataset_source", "default_channels", "describe_source", "default_data_root",
    "error_reason", "file_id", "is_sharded", "find_idx_files", "fit_channels", "limit", "list_images", "num_samples", "open_image",
    "open_image_or_skip", "read_idx", "require_readable", "resolve_dataset", "save_png", "start_epoch", "to_mode",
]
