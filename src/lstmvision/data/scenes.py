"""Synthetic scene data sets: Fashion-MNIST garments, tinted and scaled, pasted on smooth random backgrounds.

- `make_scenes`: a semantic segmentation task in the ADE20K layout (annotation 0 = ignore on 1 px class
  outlines, 1 = background, 2..11 = garments).
- `make_detection_scenes`: a detection / instance segmentation task in the COCO 2017 layout, with boxes and RLE
  instance masks.

Both are deterministic from their seed (one random generator per scene) and write `scenes.json` last, so a
folder without it is incomplete; `existing_scenes` returns a finished folder made with the same parameters.
The pieces they share: `load_garments`, `background`, `tint`, `garment`.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image
from tqdm import tqdm

from lstmvision.data.detection import annotation_file
from lstmvision.data.images import FASHION_MNIST_CLASSES, DataError, default_data_root, find_idx_files, read_idx

SCENES_VERSION = 1
DET_SCENES_VERSION = 1
SCENE_CLASSES = ["background", *FASHION_MNIST_CLASSES]
GARMENT_THRESHOLD = 32  # garment pixels above this intensity are labelled
_OWN_FILE = re.compile(r"(classes\.txt|scenes\.json|\.scenes\.json\.tmp"
                       r"|images/(training|validation)/scene_\d{6,}\.jpg"
                       r"|annotations/(training|validation)/scene_\d{6,}\.png)")
_OWN_DIRS = {"images", "annotations", *(f"{a}/{b}" for a in ("images", "annotations")
                                        for b in ("training", "validation"))}
_COCO_SPLITS = {"train2017": "train", "val2017": "val"}  # COCO split -> idx split of the garments

Garments = tuple[np.ndarray, np.ndarray]  # (N, H, W) uint8 images, (N,) labels 0..9


# ------------------------------------------------------------------------------------------- shared
def existing_scenes(output: Path, params: dict, is_own: Callable[[str, bool], bool]) -> dict | None:
    """The scenes.json of a complete folder made with `params`; None when `output` is to be (re)written. A folder
    without scenes.json holding only files `is_own(relative path, is_dir)` accepts is an interrupted run: emptied."""
    if not output.exists():
        return None
    if not output.is_dir():
        raise DataError(f"scenes output {output} is a file, not a folder")
    meta = output / "scenes.json"
    if meta.is_file():
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {meta}: {e}; delete {output} to regenerate it") from None
        made = {k: info.get(k) for k in params}
        if made != params:
            diff = ", ".join(f"{k}={made[k]} (asked {v})" for k, v in params.items() if made[k] != v)
            raise DataError(f"{output} holds scenes made with other parameters: {diff}; choose another folder "
                            "or delete it")
        return info
    files = list(output.rglob("*"))
    foreign = [p for p in files if not is_own(p.relative_to(output).as_posix(), p.is_dir())]
    if foreign:
        raise DataError(f"{output} is not empty and holds no scenes.json (e.g. {foreign[0]}); choose an empty "
                        "or new folder")
    for p in sorted(files, key=lambda p: len(p.parts), reverse=True):  # an interrupted run: start over
        p.rmdir() if p.is_dir() else p.unlink()
    return None


def _write_info(output: Path, info: dict) -> None:
    tmp = output / ".scenes.json.tmp"
    tmp.write_text(json.dumps(info, indent=1), encoding="utf-8")
    os.replace(tmp, output / "scenes.json")  # last: a folder without scenes.json is incomplete


def load_garments(source: Path, split: str) -> Garments:
    """The Fashion-MNIST images and labels of `split` ('train' or 'val') in the idx folder `source`."""
    files = find_idx_files(source, split)
    if files is None:
        raise DataError(f"no Fashion-MNIST {split} idx files in {source} (train-images-idx3-ubyte[.gz], ...)")
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or len(images) != len(labels) or len(labels) == 0 or labels.max() >= 10:
        raise DataError(f"{files[0]} and {files[1]} are not Fashion-MNIST-like: expected N images (N, H, W) "
                        "with labels 0..9")
    return images, labels


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour gradient with low-frequency blotches and fine noise, as float (size, size, 3)."""
    c = rng.uniform(0, 255, (2, 2, 3))
    y, x = np.linspace(0, 1, size)[:, None, None], np.linspace(0, 1, size)[None, :, None]
    gradient = c[0, 0] * (1 - y) * (1 - x) + c[0, 1] * (1 - y) * x + c[1, 0] * y * (1 - x) + c[1, 1] * y * x
    blotches = np.stack([np.array(Image.fromarray(g.astype(np.float32)).resize((size, size), Image.BICUBIC))
                         for g in rng.normal(0, 24, (3, 4, 4))], axis=-1)
    return np.clip(gradient + blotches + rng.normal(0, 6, (size, size, 3)), 0, 255)


def tint(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """A random colour, redrawn a few times while it is too close to what lies under the garment."""
    under = region.reshape(-1, 3).mean(0)
    for _ in range(8):
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - under).max() >= 64:
            break
    return colour


def garment(image: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A garment image resized to `side` px as float intensities, and its opacity (side, side, 1): opaque from
    intensity 64 on, so that dark garments stay visible."""
    value = np.array(Image.fromarray(image).resize((side, side), Image.BILINEAR), np.float32)
    return value, np.clip((value - 16) / 48, 0, 1)[..., None]


def outline(ann: np.ndarray) -> np.ndarray:
    """`ann` with a 1 px band on every boundary between classes set to 0 (ignore): the pixel before each
    change along rows and columns."""
    out = ann.copy()
    edge = np.zeros(ann.shape, bool)
    edge[:, :-1] |= ann[:, :-1] != ann[:, 1:]
    edge[:-1, :] |= ann[:-1, :] != ann[1:, :]
    out[edge] = 0
    return out


# ------------------------------------------------------------------------------------- segmentation
def make_scenes(output: str | os.PathLike, n_train: int = 2000, n_val: int = 200, size: int = 96, seed: int = 0,
                source: str | os.PathLike | None = None, max_objects: int = 4, min_scale: float = 0.6,
                max_scale: float = 1.6, progress: bool = True) -> dict:
    """Write a segmentation task in the ADE20K layout to `output`: `size` px scenes of 1..`max_objects`
    tinted Fashion-MNIST garments (28 px * U(`min_scale`, `max_scale`)) on smooth random backgrounds; train
    scenes from the idx train split at `source` (default `default_data_root()`), val scenes from t10k.
    Annotations: 0 = ignore (1 px class outlines), 1 = background, 2..11 = garments. Deterministic from `seed`;
    an existing complete folder made with the same parameters is returned as is. Returns scenes.json."""
    params = _scene_params(n_train, n_val, size, seed, max_objects, min_scale, max_scale)
    output = Path(output)
    existing = existing_scenes(output, params, _is_own)
    if existing is not None:
        return existing
    source = default_data_root() if source is None else Path(source)
    splits = {"training": (n_train, load_garments(source, "train")),
              "validation": (n_val, load_garments(source, "val"))}
    output.mkdir(parents=True, exist_ok=True)
    (output / "classes.txt").write_text("".join(f"{c}\n" for c in SCENE_CLASSES), encoding="utf-8")
    info = {**params, "source": str(source), "layout": "ade20k", "classes": SCENE_CLASSES,
            "annotation_values": "0 = ignore (outlines), 1 = background, 2..11 = garments in class order",
            "counts": {}, "class_pixel_frequency": {}, "ignored_pixel_fraction": {}}
    with tqdm(total=n_train + n_val, desc="scenes", unit="img", disable=not progress) as bar:
        for k, (split, (n, garments)) in enumerate(splits.items()):
            counts = _write_split(output, split, n, garments, params, k, bar)
            labelled = counts[1:].sum()
            info["counts"][split] = n
            info["class_pixel_frequency"][split] = {
                c: round(float(counts[i + 1] / max(labelled, 1)), 6) for i, c in enumerate(SCENE_CLASSES)}
            info["ignored_pixel_fraction"][split] = round(float(counts[0] / max(counts.sum(), 1)), 6)
    _write_info(output, info)
    return info


def _scene_params(n_train, n_val, size, seed, max_objects, min_scale, max_scale) -> dict:
    if n_train < 1 or n_val < 0 or size < 8 or max_objects < 1 or not 0 < min_scale <= max_scale:
        raise ValueError("make_scenes needs n_train >= 1, n_val >= 0, size >= 8, max_objects >= 1 and "
                         f"0 < min_scale <= max_scale; got {n_train}, {n_val}, {size}, {max_objects}, "
                         f"{min_scale}, {max_scale}")
    return dict(version=SCENES_VERSION, n_train=int(n_train), n_val=int(n_val), size=int(size), seed=int(seed),
                max_objects=int(max_objects), min_scale=float(min_scale), max_scale=float(max_scale))


def _is_own(rel: str, is_dir: bool) -> bool:
    return rel in _OWN_DIRS if is_dir else _OWN_FILE.fullmatch(rel) is not None


def _write_split(output: Path, split: str, n: int, garments: Garments, params: dict, k: int, bar) -> np.ndarray:
    """Write `n` scenes of `split`; returns the pixel count of each annotation value 0..11."""
    img_dir, ann_dir = output / "images" / split, output / "annotations" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    counts = np.zeros(len(SCENE_CLASSES) + 1, np.int64)
    for i in range(n):
        rng = np.random.default_rng((params["seed"], k, i))  # per scene: independent of order
        img, ann = _scene(rng, garments, params)
        Image.fromarray(img).save(img_dir / f"scene_{i:06d}.jpg", quality=95)
        Image.fromarray(ann).save(ann_dir / f"scene_{i:06d}.png")
        counts += np.bincount(ann.ravel(), minlength=len(counts))[:len(counts)]
        bar.update()
    return counts


def _scene(rng: np.random.Generator, garments: Garments, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size, 3) uint8 image and its annotation (0 ignore, 1 background, 2..11 garments)."""
    size = params["size"]
    canvas, ann = background(rng, size), np.ones((size, size), np.uint8)
    images, labels = garments
    for _ in range(int(rng.integers(1, params["max_objects"] + 1))):
        j = int(rng.integers(len(images)))
        side = min(size, max(4, round(28 * rng.uniform(params["min_scale"], params["max_scale"]))))
        value, a = garment(images[j], side)
        top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
        region = canvas[top:top + side, left:left + side]
        shaded = tint(rng, region) * (0.5 + value[..., None] / 510)  # shaded by intensity: keeps the texture
        canvas[top:top + side, left:left + side] = a * shaded + (1 - a) * region
        ann[top:top + side, left:left + side][value > GARMENT_THRESHOLD] = labels[j] + 2
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), outline(ann)


# ---------------------------------------------------------------------------------------- detection
def make_detection_scenes(output: str | os.PathLike, n_train: int = 1000, n_val: int = 100, size: int = 128,
                          seed: int = 0, source: str | os.PathLike | None = None, max_objects: int = 4,
                          min_scale: float = 0.7, max_scale: float = 2.0, max_overlap: float = 0.2,
                          progress: bool = True) -> dict:
    """Write a detection / instance-segmentation task in the COCO 2017 layout to `output`: `size` px RGB scenes
    of up to `max_objects` tinted Fashion-MNIST garments (28 px * U(`min_scale`, `max_scale`); boxes overlap by
    IoU <= `max_overlap`) on noisy backgrounds, train2017 from the idx train split at `source` (default
    `default_data_root()`), val2017 from t10k. Categories 1..10 are the Fashion-MNIST classes; each instance's
    mask is its garment's pixels above the garment threshold that no later garment covers (compressed RLE), its
    box the mask's extent. Deterministic from `seed`; an existing folder made with the same parameters is
    returned as is. Returns scenes.json."""
    if n_train < 1 or n_val < 1 or size < 32 or max_objects < 1 or not 0 < min_scale <= max_scale:
        raise ValueError("make_detection_scenes needs n_train >= 1, n_val >= 1, size >= 32, max_objects >= 1 and "
                         f"0 < min_scale <= max_scale; got {n_train}, {n_val}, {size}, {max_objects}, {min_scale}, "
                         f"{max_scale}")
    params = dict(version=DET_SCENES_VERSION, n_train=int(n_train), n_val=int(n_val), size=int(size),
                  seed=int(seed), max_objects=int(max_objects), min_scale=float(min_scale),
                  max_scale=float(max_scale), max_overlap=float(max_overlap))
    output = Path(output)
    # a folder without scenes.json: any file in it is foreign (nothing is taken for an interrupted run)
    existing = existing_scenes(output, params, lambda rel, is_dir: False)
    if existing is not None:
        return existing
    source = default_data_root() if source is None else Path(source)
    garments = {split: load_garments(source, idx) for split, idx in _COCO_SPLITS.items()}
    info = {**params, "source": str(source), "layout": "coco", "classes": FASHION_MNIST_CLASSES, "counts": {}}
    with tqdm(total=n_train + n_val, desc="scenes", unit="img", disable=not progress) as bar:
        for k, (split, n) in enumerate((("train2017", n_train), ("val2017", n_val))):
            info["counts"][split] = _write_coco_split(output, split, n, garments[split], params, k, bar)
    _write_info(output, info)
    return info


def _write_coco_split(output: Path, split: str, n: int, garments: Garments, params: dict, k: int,
                      bar) -> dict[str, int]:
    """Write `n` scenes and `annotations/instances_<split>.json`; returns the image and instance counts."""
    img_dir = output / split
    img_dir.mkdir(parents=True, exist_ok=True)
    (output / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        rng = np.random.default_rng((params["seed"], k, i))  # per scene: independent of order
        canvas, instances = _detection_scene(rng, garments, params)
        name = f"{i + 1:012d}.jpg"
        Image.fromarray(canvas).save(img_dir / name, quality=95)
        images.append(dict(id=i + 1, file_name=name, width=params["size"], height=params["size"]))
        for label, mask in instances:
            annotations.append(_annotation(len(annotations) + 1, i + 1, label + 1, mask))
        bar.update()
    categories = [dict(id=c + 1, name=name, supercategory="garment") for c, name in enumerate(FASHION_MNIST_CLASSES)]
    coco = dict(info=dict(description="Fashion-MNIST detection scenes (lstmvision)", version=DET_SCENES_VERSION),
                images=images, annotations=annotations, categories=categories)
    path = annotation_file(output, split)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(coco), encoding="utf-8")
    os.replace(tmp, path)
    return dict(images=n, instances=len(annotations))


def _annotation(ann_id: int, image_id: int, category_id: int, mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    ys, xs = np.nonzero(mask)
    x1, y1 = int(xs.min()), int(ys.min())
    return dict(id=ann_id, image_id=image_id, category_id=category_id, iscrowd=0, area=int(mask.sum()),
                bbox=[x1, y1, int(xs.max()) + 1 - x1, int(ys.max()) + 1 - y1], segmentation=rle)


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area else 0.0


def _detection_scene(rng: np.random.Generator, garments: Garments, params: dict) -> tuple[np.ndarray, list]:
    """One (size, size, 3) uint8 image and its instances [(class, visible mask)], later garments on top."""
    size = params["size"]
    canvas = background(rng, size)
    images, labels = garments
    placed: list[tuple[int, np.ndarray, tuple[int, int, int, int]]] = []
    for _ in range(int(rng.integers(1, params["max_objects"] + 1))):
        j = int(rng.integers(len(images)))
        side = min(size, max(8, round(28 * rng.uniform(params["min_scale"], params["max_scale"]))))
        for _attempt in range(10):
            top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
            box = (left, top, left + side, top + side)
            if all(_box_iou(box, b) <= params["max_overlap"] for _, _, b in placed):
                break
        else:
            continue
        value, a = garment(images[j], side)
        region = canvas[top:top + side, left:left + side]
        canvas[top:top + side, left:left + side] = a * tint(rng, region) * (0.5 + value[..., None] / 510) + \
            (1 - a) * region
        mask = np.zeros((size, size), bool)
        mask[top:top + side, left:left + side] = value > GARMENT_THRESHOLD
        for _, earlier, _ in placed:
            earlier &= ~mask  # hidden under the new garment
        placed.append((int(labels[j]), mask, box))
    instances = [(label, mask) for label, mask, _ in placed if mask.any()]
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), instances
