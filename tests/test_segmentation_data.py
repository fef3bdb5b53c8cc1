"""Segmentation data: ADE20K and generic layouts, bad masks, joint transforms, synthetic scenes."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lstmvision.data import DEBIAN_FASHION_MNIST, BadImage, DataError, find_idx_files
from lstmvision.data.scenes import make_scenes
from lstmvision.data.segmentation import IGNORE_INDEX, SegEvalTransform, SegmentationDataset, SegTrainTransform


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _image(h: int = 8, w: int = 10) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ade(root: Path, masks: dict, split: str = "training") -> Path:
    for name, mask in masks.items():
        _save(root / "images" / split / f"{name}.jpg", _image(*mask.shape))
        _save(root / "annotations" / split / f"{name}.png", mask.astype(np.uint8))
    return root


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _tiny_fmnist(folder: Path, n: int = 20) -> Path:
    """Garment-like blobs: a bright rectangle of random size per image, labels 0..9."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, k in (("train", n), ("t10k", n // 2)):
        images = np.zeros((k, 28, 28), np.uint8)
        for im in images:
            t, l = rng.integers(2, 10, 2)
            im[t:t + rng.integers(10, 18), l:l + rng.integers(10, 18)] = rng.integers(80, 256)
        (folder / f"{stem}-images-idx3-ubyte").write_bytes(_idx_bytes(images))
        (folder / f"{stem}-labels-idx1-ubyte").write_bytes(_idx_bytes(np.arange(k) % 10))
    assert find_idx_files(folder, "train") is not None
    return folder


# ------------------------------------------------------------------------------------------- dataset
def test_ade_reduce_zero_label_and_classes_txt(tmp_path):
    raw = np.array([[0, 1, 2, 3, 255], [3, 3, 2, 1, 0]], np.uint8)
    root = _ade(tmp_path, {"a": raw})
    (root / "classes.txt").write_text("wall\nsky\nfloor\n")
    ds = SegmentationDataset(root, "train")
    assert (ds.layout, ds.class_names, ds.num_classes, ds.ignore_index) == ("ade20k", ["wall", "sky", "floor"], 3, 255)
    img, mask = ds[0]
    assert img.mode == "RGB" and img.size == (5, 2) and mask.dtype == torch.long
    assert mask.tolist() == [[255, 0, 1, 2, 255], [2, 2, 1, 0, 255]]


def test_ade_class_names_from_object_info_and_default(tmp_path):
    root = _ade(tmp_path, {"a": np.full((4, 4), 150)})
    assert SegmentationDataset(root, "train").class_names == [str(i) for i in range(150)]
    (root / "objectInfo150.csv").write_text(
        "Idx,Ratio,Train,Val,Name\n2,0.1,1,1,building;edifice\n1,0.2,1,1,wall\n3,0.1,1,1,person;individual;someone\n")
    ds = SegmentationDataset(root, "train")
    assert ds.class_names == ["wall", "building", "person"]
    assert isinstance(ds[0], BadImage)  # 150 is out of range for 3 classes
    with pytest.raises(DataError, match="no val images"):
        SegmentationDataset(root, "val")


@pytest.mark.parametrize("val_name", ["val", "validation"])
def test_generic_layout(tmp_path, val_name):
    for split, mask_split in (("train", "train"), (val_name, "val" if val_name == "validation" else val_name)):
        _save(tmp_path / "images" / split / "sub" / "x.jpg", _image(4, 6))
        _save(tmp_path / "masks" / mask_split / "sub" / "x.png", np.array([[0, 1, 255, 1, 0, 0]] * 4, np.uint8))
    with pytest.raises(DataError, match="no classes.txt"):
        SegmentationDataset(tmp_path, "train")
    (tmp_path / "classes.txt").write_text("road\ncar\n\n")
    tr = SegmentationDataset(tmp_path, "train", img_mode="L")
    va = SegmentationDataset(tmp_path, "val", class_names=tr.class_names)
    assert tr.layout == "generic" and tr.class_names == ["road", "car"] and len(va) == 1
    img, mask = tr[0]
    assert img.mode == "L" and mask[0].tolist() == [0, 1, 255, 1, 0, 0]
    with pytest.raises(DataError, match="differ from the training classes"):
        SegmentationDataset(tmp_path, "val", class_names=["road", "bus"])


def test_unknown_layout(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="ADE20K layout.*masks/"):
        SegmentationDataset(tmp_path, "train")


def test_bad_masks_are_skipped_with_reason(tmp_path):
    root = _ade(tmp_path, {"a": np.ones((4, 6)), "b": np.array([[1, 12, 13, 2]] * 3)})
    (root / "classes.txt").write_text("".join(f"c{i}\n" for i in range(10)))
    _save(root / "annotations" / "training" / "a.png", np.ones((3, 6), np.uint8))  # 6x3 but image 6x4
    _save(root / "images" / "training" / "c.jpg", _image(4, 4))
    _save(root / "annotations" / "training" / "c.png", np.ones((4, 4, 3), np.uint8))
    ds = SegmentationDataset(root, "train")
    reasons = [ds[i].reason for i in range(3)]
    assert all(isinstance(ds[i], BadImage) for i in range(3)) and ds[1].path.endswith("b.png")
    assert reasons[0] == "mask 6x3 but image 6x4"
    assert reasons[1].startswith("mask labels 12, 13 out of range 1..10")
    assert "3 channels" in reasons[2]


def test_image_without_mask(tmp_path):
    root = _ade(tmp_path, {"a": np.ones((4, 4)), "b": np.ones((4, 4)), "c": np.ones((4, 4))})
    for name in ("b", "c"):
        (root / "annotations" / "training" / f"{name}.png").unlink()
    with pytest.raises(DataError, match=r"2 of 3 images .* no mask; the first: .*b\.jpg"):
        SegmentationDataset(root, "train")


# ---------------------------------------------------------------------------------------- transforms
def _pair(h: int, w: int, labels: np.ndarray | None = None) -> tuple[Image.Image, Image.Image]:
    cols = np.tile(np.arange(w, dtype=np.uint8) * 5, (h, 1))
    mask = (np.arange(w) * 3 // w).astype(np.uint8)[None].repeat(h, 0) if labels is None else labels
    return Image.fromarray(np.stack([cols] * 3, -1)), Image.fromarray(mask.astype(np.uint8))


def test_train_transform_shapes_padding_and_values():
    img, mask = _pair(20, 16)
    t = SegTrainTransform(32, base_size=(20, 16), ratio_range=(1, 1))
    x, y = t(img, mask)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y.shape == (32, 32) and y.dtype == torch.long
    assert (y[20:] == IGNORE_INDEX).all() and (y[:, 16:] == IGNORE_INDEX).all() and (x[:, 20:] == 0).all()
    for _ in range(5):  # random resize (up and down), crop, flip and photometric distortion
        x, y = SegTrainTransform(24, base_size=(40, 30))(img, mask)
        assert x.shape == (3, 24, 24) and set(y.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}
    with pytest.raises(ValueError, match="one value per image channel"):
        t(img.convert("L"), mask)


def test_train_transform_grayscale_and_seeding():
    img, mask = _pair(30, 30)
    t = SegTrainTransform(16, base_size=(30, 30), mean=(0.5,), std=(0.5,))
    torch.manual_seed(3)
    a = t(img.convert("L"), mask)
    torch.manual_seed(3)
    b = t(img.convert("L"), mask)
    assert a[0].shape == (1, 16, 16) and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_train_transform_flips_image_and_mask_together():
    img, mask = _pair(6, 10)
    t = SegTrainTransform(10, base_size=(10, 6), ratio_range=(1, 1), hflip=1.0, photometric=False,
                          mean=(0, 0, 0), std=(1, 1, 1), cat_max_ratio=1.0)
    x, y = t(img, mask)
    assert torch.equal((x[0, :6] * 255).round().long(), torch.arange(9, -1, -1).repeat(6, 1) * 5)
    assert torch.equal(y[:6], torch.from_numpy(np.array(mask, np.int64)[:, ::-1].copy()))


def test_cat_max_ratio_rejects_single_class_crops():
    labels = np.zeros((48, 48), np.uint8)
    labels[:24, :24] = 1
    img, mask = _pair(48, 48, labels)

    def balanced(ratio: float) -> float:
        t = SegTrainTransform(32, base_size=(48, 48), ratio_range=(1, 1), cat_max_ratio=ratio, hflip=0,
                              photometric=False)
        ok = 0
        for _ in range(40):
            counts = torch.bincount(t(img, mask)[1].flatten(), minlength=2)
            ok += bool(counts[1] > 0 and counts.max() / counts.sum() < 0.75)
        return ok / 40

    assert balanced(0.75) > 0.9 and balanced(1.0) < 0.75


def test_eval_transform_resizes_image_only():
    img, mask = _pair(40, 80)
    x, y = SegEvalTransform(base_size=(40, 20))(img, mask)
    assert x.shape == (3, 20, 40) and y.shape == (40, 80) and y.dtype == torch.long
    x, y = SegEvalTransform(base_size=None)(img, mask)
    assert x.shape == (3, 40, 80) and torch.equal(y, torch.from_numpy(np.array(mask, np.int64)))


# -------------------------------------------------------------------------------------------- scenes
def test_make_scenes(tmp_path):
    src = _tiny_fmnist(tmp_path / "fmnist")
    kw = dict(n_train=6, n_val=3, size=32, seed=1, source=src, progress=False)
    info = make_scenes(tmp_path / "a", **kw)
    make_scenes(tmp_path / "b", **kw)
    a, b = tmp_path / "a", tmp_path / "b"
    for rel in ("images/training/scene_000005.jpg", "annotations/validation/scene_000002.png"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert info["counts"] == {"training": 6, "validation": 3} and (a / "scenes.json").is_file()
    names = (a / "classes.txt").read_text().splitlines()
    assert names[:3] == ["background", "T-shirt/top", "Trouser"] and names[-1] == "Ankle boot" and len(names) == 11
    anns = [np.array(Image.open(p)) for p in sorted((a / "annotations").rglob("*.png"))]
    assert len(anns) == 9 and all(m.max() <= 11 for m in anns) and {0, 1} <= set(np.unique(np.stack(anns)))
    assert set(np.unique(np.stack(anns))) - {0, 1}  # garments present

    ds = SegmentationDataset(a, "val")
    assert ds.layout == "ade20k" and ds.num_classes == 11 and ds.class_names[0] == "background"
    assert set(ds[0][1].unique().tolist()) <= set(range(11)) | {IGNORE_INDEX}

    def stamps():
        return [(a / rel).stat().st_mtime_ns for rel in ("scenes.json", "images/training/scene_000000.jpg")]

    before = stamps()
    assert make_scenes(a, **kw) == info and stamps() == before
    with pytest.raises(DataError, match="other parameters: n_train=6 \\(asked 5\\)"):
        make_scenes(a, **{**kw, "n_train": 5})


def test_make_scenes_incomplete_and_foreign_folders(tmp_path):
    src = _tiny_fmnist(tmp_path / "fmnist")
    kw = dict(n_train=3, n_val=1, size=24, source=src, progress=False)
    out = tmp_path / "scenes"
    make_scenes(out, **{**kw, "n_train": 5})
    (out / "scenes.json").unlink()  # an interrupted run: regenerated, stale scenes removed
    make_scenes(out, **kw)
    assert len(list((out / "images" / "training").iterdir())) == 3
    (out / "scenes.json").unlink()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        make_scenes(out, **kw)


@pytest.mark.skipif(find_idx_files(DEBIAN_FASHION_MNIST, "train") is None, reason="Fashion-MNIST not installed")
def test_make_scenes_from_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.delenv("LSTMVISION_DATA", raising=False)
    info = make_scenes(tmp_path / "s", n_train=8, n_val=4, size=48, progress=False)
    assert info["source"] == DEBIAN_FASHION_MNIST and info["counts"] == {"training": 8, "validation": 4}
    x, y = SegmentationDataset(tmp_path / "s", "train")[0]
    assert x.size == (48, 48) and y.shape == (48, 48)
