"""Small datasets for the engine tests: a Fashion-MNIST slice (synthetic if the Debian package is missing)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from lstmvision.data import read_idx

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def load_slice(n_train: int, n_val: int, seed: int = 0):
    if (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        xtr, ytr = read_idx(FMNIST / "train-images-idx3-ubyte.gz"), read_idx(FMNIST / "train-labels-idx1-ubyte.gz")
        xte, yte = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz"), read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")
        return xtr[:n_train], ytr[:n_train], xte[:n_val], yte[:n_val]
    rng = np.random.default_rng(seed)
    ytr, yte = rng.integers(0, 10, n_train), rng.integers(0, 10, n_val)
    base = rng.integers(0, 255, (10, 28, 28))

    def imgs(y):
        return np.clip(base[y] + rng.normal(0, 30, (len(y), 28, 28)), 0, 255).astype(np.uint8)

    return imgs(ytr), ytr.astype(np.uint8), imgs(yte), yte.astype(np.uint8)


def write_idx_folder(folder: Path, n_train: int = 256, n_val: int = 128, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    xtr, ytr, xte, yte = load_slice(n_train, n_val)
    for name, arr in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                      ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        data = _idx_bytes(arr)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def write_image_folder(root: Path, n_per_class: int = 6, classes=("bag", "coat", "shoe"), val_name: str = "val",
                       corrupt: int = 0) -> Path:
    xtr, ytr, xte, yte = load_slice(600, 300)
    for split, (x, y) in (("train", (xtr, ytr)), (val_name, (xte, yte))):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            idx = np.flatnonzero(y == ci)[:n_per_class]
            for j, i in enumerate(idx):
                Image.fromarray(x[i]).convert("RGB").save(d / f"{j}.png")
    for k in range(corrupt):
        (root / "train" / classes[0] / f"broken{k}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return root
