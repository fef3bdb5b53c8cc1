"""Datasets: idx (.gz and raw), ImageFolder detection, corrupt-image skipping, empty and missing data."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

import lstmvision
from deploy_helpers import tiny_model
from engine_helpers import write_idx_folder, write_image_folder
from lstmvision.data import (
    BadImageCounter,
    DataError,
    IdxDataset,
    ImageFolderDataset,
    ResumableSampler,
    Subset,
    build_loader,
    default_data_root,
    limit,
    open_image,
    read_idx,
    require_readable,
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

    s = ResumableSampler(ds, 1, 0, shuffle=True, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.skip_samples = 30
    assert list(s) == full[30:]
    x = torch.zeros(1)
    assert x.numel() == 1 and np.all(np.asarray(full) < 100)


def _gradient() -> np.ndarray:
    return (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)


def _write_twins(folder, kinds=("8", "16", "16B", "F")):
    """The same gradient as an 8-bit PNG, a 16-bit PNG, a big-endian 16-bit TIFF and a float TIFF."""

    g = _gradient()
    folder.mkdir(parents=True, exist_ok=True)
    made = {
        "8": (Image.fromarray(g), "g8.png"),
        "16": (Image.fromarray(g.astype(np.uint16) * 257), "g16.png"),
        "16B": (Image.fromarray((g.astype(np.uint16) * 257).astype(">u2")), "g16b.tif"),
        "F": (Image.fromarray(g.astype(np.float32) / 255), "gf.tif"),
    }
    paths = {}
    for kind in kinds:
        img, name = made[kind]
        img.save(folder / name)
        paths[kind] = folder / name
    return paths


def test_wide_images_are_scaled_not_clipped(tmp_path):
    paths = _write_twins(tmp_path)
    assert Image.open(paths["16"]).mode == "I;16"  # what the test is about: PIL's convert('L') clips these
    ref = np.asarray(open_image(paths["8"], "L"), dtype=np.int32)
    for kind in ("16", "16B", "F"):
        for mode in ("L", "RGB"):
            got = np.asarray(open_image(paths[kind], mode), dtype=np.int32)
            want = ref if mode == "L" else np.stack([ref] * 3, -1)
            assert np.abs(got - want).max() <= 1, (kind, mode)


def test_training_data_and_classifier_read_16_bit_like_8_bit(tmp_path):
    root = tmp_path / "tree"
    _write_twins(root / "train" / "a", kinds=("8",))
    _write_twins(root / "train" / "b", kinds=("16",))
    (root / "val" / "a").mkdir(parents=True)
    ds = resolve_dataset(root, "train", img_mode="L")
    ds.transform = create_transform((1, 32, 32), is_training=False, crop_pct=1.0, mean=(0.5,), std=(0.5,))
    (x8, _), (x16, _) = ds[0], ds[1]
    assert (x8 - x16).abs().max().item() <= (1 / 255) / 0.5 + 1e-6  # within 1/255 of a pixel, normalised by std 0.5
    clf = lstmvision.Classifier(tiny_model("sequencer2d_tiny", in_chans=1), device="cpu")
    a, _ = clf.preprocess(str(ds.samples[0][0]))
    b, _ = clf.preprocess(str(ds.samples[1][0]))
    assert (a - b).abs().max().item() <= (1 / 255) / min(clf.data_config["std"]) + 1e-6
    assert torch.equal(clf.logits(str(ds.samples[0][0])).argmax(-1), clf.logits(str(ds.samples[1][0])).argmax(-1))


def test_all_corrupt_data_is_an_error(tmp_path):
    root = write_image_folder(tmp_path / "imgs", n_per_class=3, corrupt=2)
    for split in ("train", "val"):
        for img in (root / split).rglob("*.png"):
            img.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    for split in ("train", "val"):
        with pytest.raises(DataError, match="no readable images in .*" + split):
            resolve_dataset(root, split, img_mode="RGB")
    # readable files mixed with broken ones are fine (the broken ones are skipped later), but a subset that
    # happens to hold only broken files is not
    good = write_image_folder(tmp_path / "mixed", n_per_class=1, corrupt=3)
    ds = resolve_dataset(good, "train", img_mode="RGB")
    assert len(ds) == 6
    broken = [i for i, (p, _) in enumerate(ds.samples) if "broken" in p.name]

    with pytest.raises(DataError, match="no readable images"):
        require_readable(Subset(ds, broken), "the subset")
    require_readable(Subset(ds, [0, *broken]), "the subset")


def test_limit_must_be_positive(tmp_path):
    ds = resolve_dataset(write_idx_folder(tmp_path / "d", 20, 10), "train")
    assert limit(ds, None) is ds and len(limit(ds, 5)) == 5
    for n in (0, -1):
        with pytest.raises(DataError, match="at least 1"):
            limit(ds, n)
