"""Semantic segmentation through the training engine: metrics, loss, `lstmvision segment` train / resume /
validate / predict / scenes, bad inputs, NaN stop and 2-process DDP, on tiny Fashion-MNIST scenes."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine_helpers import write_idx_folder
from lstmvision import create_model, save_pretrained
from lstmvision.cli import main
from lstmvision.data.scenes import make_scenes
from lstmvision.tasks.segment import SegmentationLoss, confusion_scores
from lstmvision.weights import read_config

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--img-size", "32", "--seg-base-size", "192", "48", "--seg-stride", "16", "--batch-size", "8",
         "--workers", "0", "--decoder-channels", "16", "--log-interval", "2"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seg")
    source = write_idx_folder(root / "fmnist", 64, 32)
    out = root / "scenes"
    make_scenes(out, n_train=32, n_val=8, size=48, seed=0, source=source, progress=False)
    return out


@pytest.fixture(scope="module")
def trained(scenes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("segruns")
    assert main(["segment", "train", "--data", str(scenes), "--epochs", "1", "--output", str(out),
                 "--experiment", "seq", *SMALL]) == 0
    return out / "seq"


def test_confusion_scores_follow_mmseg():
    # rows: ground truth, columns: prediction; class 2 never occurs and is never predicted
    conf = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    s = confusion_scores(conf)
    iou0, iou1 = 3 / (4 + 5 - 3), 4 / (6 + 5 - 4)
    assert math.isclose(s["miou"], 100 * (iou0 + iou1) / 2)
    assert math.isclose(s["aacc"], 100 * 7 / 10)
    assert math.isclose(s["macc"], 100 * (3 / 4 + 4 / 6) / 2)
    assert math.isnan(s["iou"][2]) and s["pixels"] == 10


def test_loss_weights_aux_and_ignores():
    torch.manual_seed(0)
    main_logits, aux_logits = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    target = torch.randint(0, 4, (2, 5, 5))
    target[0, 0] = 255
    loss = SegmentationLoss(255, aux_weight=0.4)
    expect = F.cross_entropy(main_logits, target, ignore_index=255) + 0.4 * F.cross_entropy(aux_logits, target,
                                                                                             ignore_index=255)
    assert torch.allclose(loss((main_logits, aux_logits), target), expect)
    assert torch.allclose(loss(main_logits, target), F.cross_entropy(main_logits, target, ignore_index=255))


def _rows(run: Path) -> list[dict]:
    with open(run / "summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_writes_segmentation_run(trained):
    rows = _rows(trained)
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "miou", "aacc", "macc", "lr", "img_s"]
    config = read_config(trained / "best")  # whatever the saved layout
    assert config["architecture"] == "upernet:sequencer2d_tiny"
    assert config["pretrained_cfg"]["task"] == "segment" and config["num_classes"] == 11
    assert config["class_names"][0] == "background"
    assert 0 <= float(rows[0]["miou"]) <= 100 and (trained / "curves.png").is_file()


def test_validate_matches_trainer_and_draws(trained, scenes, tmp_path, capsys):
    out = tmp_path / "val"
    assert main(["segment", "validate", "--checkpoint", str(trained), "--data", str(scenes), "--output", str(out),
                 "--examples", "2"]) == 0
    result = json.loads((out / "segment_val.json").read_text())
    best = float(_rows(trained)[-1]["miou"])
    assert abs(result["miou"] - best) < 0.01  # the trainer's evaluation, rounded
    assert len(result["per_class"]) == 11 and result["images"] == 8
    assert Image.open(out / "examples.png").size[0] > 100
    assert "mIoU" in capsys.readouterr().out


@pytest.mark.slow
def test_validate_tta_and_predict(trained, scenes, tmp_path, capsys):
    assert main(["segment", "validate", "--checkpoint", str(trained), "--data", str(scenes), "--scales", "0.75",
                 "1.25", "--flip", "--limit-val", "4"]) == 0
    img = sorted((scenes / "images" / "validation").iterdir())[0]
    assert main(["segment", "predict", "--checkpoint", str(trained), str(img), "--output", str(tmp_path)]) == 0
    mask = np.array(Image.open(tmp_path / f"{img.stem}.png"))
    assert mask.shape == (48, 48) and mask.max() < 11
    assert (tmp_path / f"{img.stem}_color.png").is_file()
    assert "->" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_extends_the_run(trained, tmp_path):
    run = tmp_path / "seq"
    shutil.copytree(trained, run)
    assert main(["segment", "train", "--resume", str(run), "--epochs", "2"]) == 0
    assert [r["epoch"] for r in _rows(run)] == ["0", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("backbone, kwargs", [
    ("vil2_tiny", ["embed_dim=32", "depth=4", "patch_size=8"]),
    ("timm:convnext_atto", ["dims=[16,32,64,128]", "depths=[1,1,1,1]"]),
])
def test_other_backbones_train(scenes, tmp_path, backbone, kwargs):
    assert main(["segment", "train", "--data", str(scenes), "--epochs", "1", "--output", str(tmp_path),
                 "--experiment", "b", "--model", backbone, "--model-kwargs", *kwargs, "--limit-train", "16",
                 *SMALL]) == 0
    assert len(_rows(tmp_path / "b")) == 1


@pytest.mark.parametrize("argv, needle", [
    (["segment", "train", "--epochs", "1"], "segmentation needs --data"),
    (["segment", "train", "--mixup", "0.8"], "Mixup/CutMix"),
    (["segment", "train", "--seg-cat-max-ratio", "1.5"], "--seg-cat-max-ratio"),
    (["segment", "train", "--recipe", "sequencer-small"], "classification recipe"),
    (["segment", "scenes", "--output", "x", "--train", "0"], "--train must be a positive integer"),
    (["segment", "predict", "--checkpoint", "x", "missing.png", "-o", "y"], "image not found"),
])
def test_user_errors_are_one_line(scenes, argv, needle, capsys):
    if argv[1] == "train" and "--epochs" not in argv and "--recipe" not in argv:
        argv = [*argv, "--data", str(scenes)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


@pytest.mark.slow
def test_bad_mask_is_skipped_or_refused(scenes, tmp_path, capsys):
    data = tmp_path / "bad"
    shutil.copytree(scenes, data)
    first = sorted((data / "annotations" / "training").iterdir())[0]
    Image.new("L", (10, 10), 1).save(first)  # wrong size
    base = ["segment", "train", "--data", str(data), "--epochs", "1", "--output", str(tmp_path), *SMALL]
    assert main([*base, "--experiment", "skip"]) == 0
    assert "skipped 1 unreadable" in capsys.readouterr().out
    assert main([*base, "--experiment", "strict", "--strict-images"]) == 2
    assert "mask" in capsys.readouterr().err


@pytest.mark.slow
def test_nan_stops_with_last_good_checkpoint(scenes, tmp_path, capsys):
    assert main(["segment", "train", "--data", str(scenes), "--epochs", "2", "--output", str(tmp_path),
                 "--experiment", "nan", "--debug-nan-at-step", "6", *SMALL]) == 2
    err = capsys.readouterr().err
    assert "non-finite" in err or "nan" in err
    assert (tmp_path / "nan" / "last").is_dir() and len(_rows(tmp_path / "nan")) == 1


def test_validate_refuses_a_classifier(tmp_path, scenes, capsys):
    save_pretrained(create_model("sequencer2d_tiny", num_classes=10, in_chans=3), tmp_path / "clf")
    assert main(["segment", "validate", "--checkpoint", str(tmp_path / "clf"), "--data", str(scenes)]) == 2
    assert "not a segmentation model" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_process_gloo(scenes, tmp_path):
    out = tmp_path / "runs"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "lstmvision", "segment", "train", "--data", str(scenes), "--output", str(out), "--experiment", "d",
           "--epochs", "1", "--device", "cpu", *SMALL]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "world 2" in res.stdout and res.stdout.count("segment train: run folder:") == 1
    rows = _rows(out / "d")
    assert len(rows) == 1
    # the distributed evaluation (4 images per rank, confusion matrices summed) equals one process over all 8
    assert main(["segment", "validate", "--checkpoint", str(out / "d"), "--data", str(scenes), "--output",
                 str(tmp_path / "val")]) == 0
    single = json.loads((tmp_path / "val" / "segment_val.json").read_text())
    assert abs(single["miou"] - float(rows[0]["miou"])) < 0.01 and single["images"] == 8
