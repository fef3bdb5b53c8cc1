"""Datasets: idx (.gz and raw), ImageFolder detection, corrupt-image skipping, empty and missing data."""
import warnings

import numpy as np
import pytest
import torch

from engine_helpers import write_idx_folder, write_image_folder
from lstmvision.data import (
    BadImageCounter, DataError, IdxDataset, ImageFolderDataset, build_loader, default_data_root, limit, read_idx,
    resolve_dataset,
)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder(tmp_path, gz):
    root = write_idx_folder(tmp_path / "fashion-mnist", 64, 32, gz=gz)
    tr, va = resolve_dataset(root, "train"), resolve_dataset(root, "val")
    assert isinstance(tr, IdxDataset) and len(tr) == 64 and len(va) == 32
    assert tr.class_names[0] == "T-shirt/top" and len(tr.class_names) == 10  # 'fashion' in the path
    img, label = tr[0]
    assert img.mode == "L" and img.size == (28, 28) and 0 <= label < 10


def test_idx_digits_names_and_bad_file(tmp_path):
    root = write_idx_folder(tmp_path / "mnist", 64, 32)
    assert resolve_dataset(root, "train").class_names == [str(i) for i in range(10)]
    (root / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    with pytest.raises(DataError, match="truncated"):
        resolve_dataset(root, "val")
    with pytest.raises(DataError, match="not an unsigned-byte idx"):
        (tmp_path / "x").write_bytes(b"junk")
        read_idx(tmp_path / "x")


@pytest.mark.parametrize("val_name", ["val", "validation"])
def test_image_folder_tree(tmp_path, val_name):
    root = write_image_folder(tmp_path / "imgs", n_per_class=3, val_name=val_name)
    tr = resolve_dataset(root, "train", img_mode="RGB")
    va = resolve_dataset(root, "val", img_mode="RGB", class_names=tr.class_names)
    assert isinstance(tr, ImageFolderDataset) and tr.class_names == ["bag", "coat", "shoe"]
    assert len(tr) == 9 and len(va) == 9
    # a bare class folder is accepted for evaluation
    assert len(resolve_dataset(root / val_name, "val", img_mode="RGB")) == 9


def test_corrupt_images_skipped_and_counted(tmp_path):
    from timm.data import create_transform

    root = write_image_folder(tmp_path / "imgs", n_per_class=3, corrupt=2)
    ds = resolve_dataset(root, "train", img_mode="RGB")
    tf = create_transform((3, 28, 28), is_training=False, crop_pct=1.0)
    loader = build_loader(ds, tf, batch_size=4, training=False)
    bad, n = BadImageCounter(), 0
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for x, y, skipped in loader:
            bad(skipped)
            n += 0 if x is None else len(y)
    assert n == 9 and bad.count == 2
    assert any("broken0.png" in str(m.message) for m in w)
    strict = BadImageCounter(strict=True)
    with pytest.raises(DataError, match="unreadable image"):
        for _, _, skipped in build_loader(ds, tf, batch_size=4, training=False):
            strict(skipped)


def test_empty_and_missing_data(tmp_path, monkeypatch):
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="empty"):
        resolve_dataset(tmp_path / "empty", "train")
    with pytest.raises(FileNotFoundError):
        resolve_dataset(tmp_path / "nope", "train")
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="holds no train data"):
        resolve_dataset(tmp_path / "other", "train")
    monkeypatch.setenv("LSTMVISION_DATA", str(tmp_path / "other"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        default_data_root()


def test_limit_is_fixed_and_sampler_resumes(tmp_path):
    root = write_idx_folder(tmp_path / "d", 100, 10)
    ds = resolve_dataset(root, "train")
    a, b = limit(ds, 40, seed=3), limit(ds, 40, seed=3)
    assert len(a) == 40 and a.indices == b.indices
    from lstmvision.data import ResumableSampler

    s = ResumableSampler(ds, 1, 0, shuffle=True, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.skip_samples = 30
    assert list(s) == full[30:]
    x = torch.zeros(1)
    assert x.numel() == 1 and np.all(np.asarray(full) < 100)
