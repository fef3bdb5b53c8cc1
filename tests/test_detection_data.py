"""Detection data: the COCO-layout dataset (category ids, degenerate boxes, empty images, masks, bad files), the
flip transform, the Fashion-MNIST detection scenes, and faster-coco-eval agreeing with pycocotools."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval

from engine_helpers import write_idx_folder
from lstmvision.cli import main
from lstmvision.data import DataError
from lstmvision.data.detection import CocoDetection, DetectionTransform, collate_detection
from lstmvision.data.scenes import make_detection_scenes
from lstmvision.tasks.detect import coco_metrics, coco_results, encode_mask, load_coco

# pycocotools' mask decoding under numpy 2 (harmless; the warning is pycocotools' own)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _write(root: Path, split: str, coco: dict, sizes: dict[int, tuple[int, int]]) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    for img in coco["images"]:
        w, h = sizes.get(img["id"], (img["width"], img["height"]))
        Image.new("RGB", (w, h), (90, 120, 30)).save(root / split / img["file_name"])
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return root


def _coco() -> dict:
    """Three images (the third has no annotations), categories with ids 90 and 7 (not contiguous, not sorted)."""
    poly = [[2, 2, 20, 2, 20, 14, 2, 14]]
    rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((5, 6), np.uint8), ((10, 17), (8, 18)))))
    rle["counts"] = rle["counts"].decode("ascii")
    anns = [
        dict(id=1, image_id=1, category_id=90, bbox=[2, 2, 18, 12], segmentation=poly, area=216, iscrowd=0),
        dict(id=2, image_id=1, category_id=7, bbox=[8, 10, 6, 5], segmentation=rle, area=30, iscrowd=0),
        dict(id=3, image_id=1, category_id=7, bbox=[20, 20, 0, 5], area=0, iscrowd=0),  # zero width: skipped
        dict(id=4, image_id=2, category_id=7, bbox=[25, 25, 20, 20], area=400, iscrowd=0),  # reaches out: clipped
        dict(id=5, image_id=2, category_id=90, bbox=[40, 40, 5, 5], area=25, iscrowd=0),  # outside: skipped
        dict(id=6, image_id=2, category_id=90, bbox=[1, 2, "x", 4], area=0, iscrowd=0),  # malformed: skipped
        dict(id=7, image_id=2, category_id=90, bbox=[0, 0, 10, 10], area=100, iscrowd=1),  # crowd: not a target
    ]
    images = [dict(id=i, file_name=f"im{i}.png", width=32, height=32) for i in (1, 2, 3)]
    return dict(images=images, annotations=anns, categories=[dict(id=90, name="ninety"), dict(id=7, name="seven")])


def test_coco_dataset_maps_categories_boxes_and_masks(tmp_path):
    root = _write(tmp_path, "train2017", _coco(), {})
    ds = CocoDetection(root, "train2017", masks=True)
    assert ds.category_ids == [7, 90] and ds.class_names == ["seven", "ninety"]
    assert len(ds) == 3 and (ds.skipped_boxes, ds.clipped_boxes) == (3, 1)
    _, t1 = ds[0]
    assert t1["labels"].tolist() == [2, 1] and t1["image_id"] == 1
    assert t1["boxes"].tolist() == [[2, 2, 20, 14], [8, 10, 14, 15]]
    assert t1["masks"].shape == (2, 32, 32) and int(t1["masks"][1].sum()) == 30
    assert t1["masks"][0, 5, 10] == 1 and t1["masks"][0, 20, 10] == 0
    _, t2 = ds[1]
    assert t2["boxes"].tolist() == [[25, 25, 32, 32]] and t2["masks"][0].sum() == 49  # no polygon: the box
    _, t3 = ds[2]  # kept without annotations
    assert t3["boxes"].shape == (0, 4) and t3["masks"].shape == (0, 32, 32)
    with pytest.raises(DataError, match="differ from"):
        CocoDetection(root, "train2017", category_ids=[7, 91])


def test_unreadable_and_mis_sized_images_are_bad_images(tmp_path):
    root = _write(tmp_path, "val2017", _coco(), {2: (16, 16)})
    (root / "val2017" / "im3.png").write_bytes(b"not an image")
    ds = CocoDetection(root, "val2017")
    ds.transform = DetectionTransform()
    x, y, bad = collate_detection([ds[i] for i in range(3)])
    assert len(x) == 1 and x[0].shape == (3, 32, 32) and len(bad) == 2
    assert "16x16" in bad[0].reason and bad[1].path.endswith("im3.png")


@pytest.mark.parametrize("text, why", [
    ("{not json", "not JSON"),
    ('{"images": [], "annotations": []}', "needs the lists"),
    ('{"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}', "images[0]"),
    ('{"images": [], "annotations": [{"image_id": 4}], "categories": [{"id": 1, "name": "a"}]}', "annotations[0]"),
])
def test_a_file_that_is_not_coco_is_one_error(tmp_path, text, why, capsys):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(text)
    with pytest.raises(DataError, match=re.escape(why)):
        CocoDetection(tmp_path, "val2017")
    (tmp_path / "train2017").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text(text)
    runs = tmp_path.parent / f"{tmp_path.name}-runs"  # not inside the data: a run never writes into its input
    assert main(["detect", "train", "--data", str(tmp_path), "--output", str(runs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a COCO instances file" in err[0]


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink", "symlinked folder"])
def test_image_file_names_stay_inside_the_data_folder(tmp_path, escape, capsys):
    outside = tmp_path / "secret"
    outside.mkdir()
    Image.new("RGB", (32, 32)).save(outside / "x.png")
    root = _write(tmp_path / "data", "train2017", _coco(), {})
    name = {"dotdot": "../../secret/x.png", "absolute": str(outside / "x.png"), "symlink": "link.png",
            "symlinked folder": "linked/x.png"}[escape]
    if escape == "symlink":
        (root / "train2017" / "link.png").symlink_to(outside / "x.png")
    if escape == "symlinked folder":
        (root / "train2017" / "linked").symlink_to(outside)
    coco = _coco()
    coco["images"][1]["file_name"] = name
    ann = root / "annotations" / "instances_train2017.json"
    ann.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=re.escape(f"{ann}: the image file_name {name!r} leads out of the data folder")):
        CocoDetection(root, "train2017")
    shutil.copytree(root / "train2017", root / "val2017", symlinks=True)
    shutil.copy(ann, root / "annotations" / "instances_val2017.json")
    assert main(["detect", "train", "--data", str(root), "--output", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "leads out of the data folder" in err[0] and "instances_train2017.json" in err[0]


def test_links_to_the_data_folder_and_inside_it_are_fine(tmp_path):
    root = _write(tmp_path / "store", "train2017", _coco(), {})
    (root / "train2017" / "im1-link.png").symlink_to(root / "train2017" / "im1.png")
    (tmp_path / "data").symlink_to(root)  # the data folder kept elsewhere
    coco = _coco()
    coco["images"][0]["file_name"] = "im1-link.png"
    coco["images"][1]["file_name"] = "../train2017/im2.png"  # '..' that stays inside
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(coco))
    ds = CocoDetection(tmp_path / "data", "train2017")
    assert [ds[i][0].size for i in range(3)] == [(32, 32)] * 3


def test_flip_moves_boxes_and_masks_with_the_image():
    torch.manual_seed(0)
    img = Image.fromarray(np.pad(np.full((4, 6), 255, np.uint8), ((2, 10), (1, 9))))  # 16x16, object at x 1..7
    masks = torch.from_numpy(np.asarray(img) > 0).to(torch.uint8)[None]
    target = dict(boxes=torch.tensor([[1.0, 2.0, 7.0, 6.0]]), labels=torch.tensor([1]), masks=masks)
    x, t = DetectionTransform(hflip=1.0)(img.convert("RGB"), target)
    assert t["boxes"].tolist() == [[9.0, 2.0, 15.0, 6.0]]
    ys, xs = torch.nonzero(t["masks"][0], as_tuple=True)
    assert (xs.min().item(), xs.max().item() + 1) == (9, 15) and torch.equal(x[0] > 0, t["masks"][0].bool())
    assert target["boxes"].tolist() == [[1.0, 2.0, 7.0, 6.0]]  # the dataset's own target untouched


def test_scenes_are_coco_with_masks_matching_boxes(tmp_path, capsys):
    source = write_idx_folder(tmp_path / "fmnist", 40, 20)
    out = tmp_path / "scenes"
    assert main(["detect", "scenes", "--output", str(out), "--source", str(source), "--train", "6", "--val", "3",
                 "--size", "64"]) == 0
    assert "train2017: 6 images" in capsys.readouterr().out
    coco = json.loads((out / "annotations" / "instances_train2017.json").read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, 11)) and coco["categories"][0]["name"] == "T-shirt/top"
    assert len(coco["images"]) == 6 and coco["annotations"]
    for ann in coco["annotations"]:
        mask = mask_utils.decode(ann["segmentation"])
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert ann["area"] == mask.sum() and mask.shape == (64, 64)
    again = make_detection_scenes(out, n_train=6, n_val=3, size=64, source=source, progress=False)
    assert again["counts"]["train2017"]["images"] == 6  # the finished folder is reused
    with pytest.raises(DataError, match="other parameters"):
        make_detection_scenes(out, n_train=7, n_val=3, size=64, source=source, progress=False)
    other = tmp_path / "again"
    make_detection_scenes(other, n_train=6, n_val=3, size=64, source=source, progress=False)
    assert (other / "annotations" / "instances_val2017.json").read_text() == \
        (out / "annotations" / "instances_val2017.json").read_text()  # seeded


def test_results_map_labels_back_to_category_ids():
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, 0, 1:4, 2:5] = 0.9
    out = dict(boxes=torch.tensor([[1.0, 2.0, 5.0, 4.0], [0.0, 0.0, 2.0, 2.0]]), labels=torch.tensor([2, 0]),
               scores=torch.tensor([0.8, 0.7]), masks=mask)
    (r,) = coco_results([out], [31], [7, 90])  # label 0 (background) is no result
    assert r["image_id"] == 31 and r["category_id"] == 90 and r["bbox"] == [1.0, 2.0, 4.0, 2.0]
    assert mask_utils.area(r["segmentation"]) == 9 and isinstance(r["segmentation"]["counts"], str)


def _synthetic(tmp_path: Path) -> tuple[Path, list[dict]]:
    """Ground truth of 6 images (boxes, RLE masks, a crowd region, an empty image) and noisy detections."""
    rng = np.random.default_rng(0)
    images, anns, results = [], [], []
    for i in range(1, 7):
        images.append(dict(id=i, file_name=f"{i}.png", width=96, height=80))
        for k in range(0 if i == 6 else int(rng.integers(1, 5))):
            w, h = (int(v) for v in rng.integers(6, 50, 2))
            x, y = int(rng.integers(0, 96 - w)), int(rng.integers(0, 80 - h))
            m = np.zeros((80, 96), np.uint8)
            m[y:y + h, x:x + w] = 1
            cat = int(rng.choice([3, 11, 42]))
            anns.append(dict(id=len(anns) + 1, image_id=i, category_id=cat, bbox=[x, y, w, h], area=w * h,
                             iscrowd=int(i == 2 and k == 0), segmentation=encode_mask(m)))
            for _ in range(3):  # jittered copies, sometimes the wrong class
                dx, dy = (int(v) for v in rng.integers(-4, 5, 2))
                dm = np.roll(m, (dy, dx), axis=(0, 1))
                results.append(dict(image_id=i, category_id=cat if rng.random() < 0.8 else 11,
                                    bbox=[x + dx, y + dy, w, h], score=float(rng.random()),
                                    segmentation=encode_mask(dm)))
    gt = dict(images=images, annotations=anns, categories=[dict(id=c, name=str(c)) for c in (3, 11, 42)])
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path, results


def test_faster_coco_eval_agrees_with_pycocotools(tmp_path):
    path, results = _synthetic(tmp_path)
    ids = list(range(1, 7))
    ours = coco_metrics(load_coco(str(path)), results, ids, ("bbox", "segm"))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = PyCOCO(str(path))
        dt = gt.loadRes(results)
        for iou_type in ("bbox", "segm"):
            ev = COCOeval(gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            for name, value in zip(("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l"), ev.stats[:6]):
                assert ours[f"{iou_type}_{name}"] == pytest.approx(100 * value if value >= 0 else -1.0, abs=1e-9)
    assert 0 < ours["bbox_mAP"] < 100 and 0 < ours["segm_mAP"] < 100
    assert coco_metrics(load_coco(str(path)), [], ids)["bbox_mAP"] == 0.0  # nothing detected
