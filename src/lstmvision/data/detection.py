"""Object detection and instance segmentation data in the COCO 2017 layout: the dataset and its transform.

- `CocoDetection`: `DATA/annotations/instances_<split>.json` with the images in `DATA/<split>/` (split
  `train2017`, `val2017` or any other name). Category ids (any integers) map to contiguous labels 1..K in id
  order (`category_ids[label - 1]` maps back); images without annotations are kept; crowd regions are left out
  of the training targets (COCO's evaluation ignores them). Boxes reaching outside their image are clipped and
  boxes with no area left (or malformed ones) are skipped, both counted (`clipped_boxes`, `skipped_boxes`).
  Items are `(PIL image, target)` with target `boxes` (N, 4) xyxy float, `labels` (N,) int64, `image_id`
  and with `masks=True` `masks` (N, H, W) uint8 decoded from polygons or RLE by pycocotools; an unreadable
  image (or one whose size differs from its annotations) is a `BadImage`, skipped and counted by the caller.
  A file that is not COCO JSON is one `DataError`, and so is a `file_name` leading out of DATA (an absolute
  name, `..` past it, a symbolic link out of it; DATA and `DATA/<split>` themselves may be links): the
  annotation file decides which files are read, never one outside the data folder.
- `DetectionTransform`: image to a float tensor in [0, 1] and a random horizontal flip of image, boxes and
  masks together. Resizing (and multi-scale training) is the detector's own transform
  (`lstmvision.models.detection.SizedTransform`), which resizes boxes and masks with the image.
- `collate_detection`: lists of images and of targets (images of different sizes), unreadable ones set apart.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pycocotools.mask as mask_utils
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from lstmvision.data.images import BadImage, DataError, error_reason, open_image

LAYOUT = "DATA/annotations/instances_<split>.json with the images in DATA/<split>/"


# ---------------------------------------------------------------------------------------- COCO files
def annotation_file(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / "annotations" / f"instances_{split}.json"


def _not_coco(path: Path, why: str) -> DataError:
    return DataError(f"{path} is not a COCO instances file: {why}")


def read_coco_file(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed COCO instances JSON at `path`, its structure checked (images, annotations and categories, with
    the fields detection reads); anything else is one DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no COCO annotations at {path} (expected {LAYOUT})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _not_coco(path, f"not JSON ({error_reason(e)})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                      "categories")):
        raise _not_coco(path, "it needs the lists 'images', 'annotations' and 'categories'")
    for k, img in enumerate(data["images"]):
        if not (isinstance(img, dict) and _is_int(img.get("id")) and isinstance(img.get("file_name"), str)
                and _is_int(img.get("width")) and _is_int(img.get("height")) and img["width"] > 0
                and img["height"] > 0):
            raise _not_coco(path, f"images[{k}] needs an integer id, a file_name and positive width and height")
    for k, cat in enumerate(data["categories"]):
        if not (isinstance(cat, dict) and _is_int(cat.get("id")) and isinstance(cat.get("name"), str)):
            raise _not_coco(path, f"categories[{k}] needs an integer id and a name")
    image_ids = {img["id"] for img in data["images"]}
    category_ids = {cat["id"] for cat in data["categories"]}
    if len(image_ids) != len(data["images"]) or len(category_ids) != len(data["categories"]):
        raise _not_coco(path, "image or category ids repeat")
    if not category_ids:
        raise _not_coco(path, "it lists no categories")
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or ann.get("image_id") not in image_ids:
            raise _not_coco(path, f"annotations[{k}] names no image of the file (image_id "
                                  f"{ann.get('image_id') if isinstance(ann, dict) else None!r})")
        if ann.get("category_id") not in category_ids:
            raise _not_coco(path, f"annotations[{k}] has category_id {ann.get('category_id')!r}, which "
                                  "'categories' does not list")
    return data


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def clip_box(bbox: Any, width: int, height: int) -> tuple[list[float] | None, bool]:
    """A COCO [x, y, w, h] box as xyxy clipped to the image, and whether clipping changed it; None for a
    malformed box or one with no area inside the image."""
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
        return None, False
    x, y, w, h = (float(v) for v in bbox)
    box = [max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))]
    if box[2] <= box[0] or box[3] <= box[1]:
        return None, False
    return box, box != [x, y, x + w, y + h]


# --------------------------------------------------------------------------------------------- dataset
@dataclass
class CocoImage:
    id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) xyxy float32, crowd regions left out
    labels: np.ndarray  # (N,) int64, 1..K
    segmentations: list[Any]  # COCO polygons or RLE of each box (None: none given)


class CocoDetection(Dataset):
    """The `split` of the COCO-layout data at `root` (see the module docstring). `category_ids`: the training
    set's, which this split must list too (same ids, same order of labels)."""

    def __init__(self, root: str | os.PathLike, split: str = "train2017", img_mode: str = "RGB",
                 masks: bool = False, category_ids: Sequence[int] | None = None):
        self.data_root, self.split, self.img_mode, self.masks = Path(root), split, img_mode, masks
        if not self.data_root.is_dir():
            raise FileNotFoundError(f"data not found: {self.data_root} (expected {LAYOUT})")
        self.annotation_file = annotation_file(root, split)
        self.root = self.data_root / split  # where the images are (for messages)
        if not self.root.is_dir():
            raise FileNotFoundError(f"no image folder {self.root} (expected {LAYOUT})")
        coco = read_coco_file(self.annotation_file)
        cats = sorted(coco["categories"], key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in cats]
        self.class_names = [str(c["name"]) for c in cats]
        if category_ids is not None and list(category_ids) != self.category_ids:
            raise DataError(f"the categories of {self.annotation_file} (ids {_ids(self.category_ids)}) differ from "
                            f"the model's / training set's (ids {_ids(category_ids)})")
        self.clipped_boxes = self.skipped_boxes = 0
        self.samples = self._samples(coco)
        self.transform: Callable | None = None
        self.grayscale = False

    def _samples(self, coco: dict[str, Any]) -> list[CocoImage]:
        label = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        anns: dict[int, list[dict]] = {img["id"]: [] for img in coco["images"]}
        for ann in coco["annotations"]:
            anns[ann["image_id"]].append(ann)
        names = {img["id"]: img["file_name"] for img in coco["images"]}
        paths = dict(zip(names, image_paths(self.data_root, self.root, list(names.values()), self.annotation_file)))
        samples = []
        for img in sorted(coco["images"], key=lambda im: im["id"]):
            boxes, labels, segs = [], [], []
            for ann in anns[img["id"]]:
                box, clipped = clip_box(ann.get("bbox"), img["width"], img["height"])
                if box is None:
                    self.skipped_boxes += 1
                    continue
                if ann.get("iscrowd", 0):
                    continue
                self.clipped_boxes += clipped
                boxes.append(box)
                labels.append(label[ann["category_id"]])
                segs.append(ann.get("segmentation") or None)
            samples.append(CocoImage(int(img["id"]), paths[img["id"]], img["width"], img["height"],
                                     np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                                     segs))
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        try:
            img = open_image(s.path, self.img_mode)
        except Exception as e:  # any decoder error: the image is unusable
            return BadImage(str(s.path), error_reason(e))
        if img.size != (s.width, s.height):
            return BadImage(str(s.path), f"image {img.width}x{img.height} but its annotations are for "
                                         f"{s.width}x{s.height}")
        target: dict[str, Any] = dict(boxes=torch.from_numpy(s.boxes.copy()), labels=torch.from_numpy(s.labels.copy()),
                                      image_id=s.id)
        if self.masks:
            try:
                target["masks"] = torch.from_numpy(decode_masks(s.segmentations, s.boxes, s.height, s.width))
            except Exception as e:  # pycocotools' errors for malformed polygons / RLE
                return BadImage(str(self.annotation_file),
                                f"unreadable segmentation of image {s.id}: {error_reason(e)}")
        if self.transform is None:
            return img, target
        return self.transform(img, target)


def image_paths(data_root: Path, root: Path, names: Sequence[str], annotation_file: Path) -> list[Path]:
    """`root / name` for each image file name of `annotation_file`; a DataError naming the file and the name
    when it leads out of `data_root`: an absolute name, `..` past it, or a symbolic link out of it. `data_root`
    and the image folder `root` themselves may be links (a dataset kept elsewhere); what lies under them counts
    by where it really is."""
    inside = tuple(os.path.join(os.path.realpath(d), "") for d in (data_root, root))
    real_dirs: dict[str, str] = {}  # folders resolved once (COCO's images share one); strings: 118k names
    paths = []
    for name in names:
        path = os.path.join(root, name)
        folder, base = os.path.split(path)
        if folder not in real_dirs:
            real_dirs[folder] = os.path.realpath(folder)
        real = os.path.join(real_dirs[folder], base)
        if base in ("", ".", "..") or os.path.islink(real):
            real = os.path.realpath(real)
        if not os.path.join(real, "").startswith(inside):
            raise DataError(f"{annotation_file}: the image file_name {name!r} leads out of the data folder "
                            f"{data_root} (to {real}); image files must lie inside it")
        paths.append(Path(path))
    return paths


def _ids(ids: Sequence[int]) -> str:
    ids = list(ids)
    return ", ".join(map(str, ids[:6])) + (", ..." if len(ids) > 6 else "")


def decode_masks(segmentations: Sequence[Any], boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, height, width) uint8 instance masks from COCO polygons or RLE; an instance without a segmentation
    gets its box filled."""
    out = np.zeros((len(segmentations), height, width), np.uint8)
    for k, (seg, box) in enumerate(zip(segmentations, boxes)):
        rle = to_rle(seg, height, width)
        if rle is None:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            out[k, y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)] = 1
        else:
            out[k] = mask_utils.decode(rle)
    return out


def to_rle(seg: Any, height: int, width: int) -> dict | None:
    """One compressed RLE for a COCO segmentation (polygons, uncompressed or compressed RLE); None if empty."""
    if isinstance(seg, list):
        polygons = [p for p in seg if isinstance(p, list) and len(p) >= 6]
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)) if polygons else None
    if isinstance(seg, dict) and "counts" in seg:
        return mask_utils.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) else seg
    return None


# ------------------------------------------------------------------------------------------ transforms
class DetectionTransform:
    """PIL image -> float tensor (C, H, W) in [0, 1]; with probability `hflip` image, boxes and masks are
    mirrored together (torch's RNG: seeded by the engine and the DataLoader workers)."""

    def __init__(self, hflip: float = 0.0):
        self.hflip = float(hflip)

    def __call__(self, img: Image.Image, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        x = pil_to_tensor(img).float().div_(255)
        if self.hflip and torch.rand(()).item() < self.hflip:
            x = x.flip(-1)
            target = dict(target)
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = x.shape[-1] - target["boxes"][:, [2, 0]]
            target["boxes"] = boxes
            if "masks" in target:
                target["masks"] = target["masks"].flip(-1)
        return x, target


def collate_detection(batch: list) -> tuple[list | None, list | None, list[BadImage]]:
    """(images, targets, unreadable): lists, since detection images differ in size."""
    bad = [b for b in batch if isinstance(b, BadImage)]
    good = [b for b in batch if not isinstance(b, BadImage)]
    if not good:
        return None, None, bad
    return [g[0] for g in good], [g[1] for g in good], bad
