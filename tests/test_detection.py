"""Detection through the training engine: every detector on every backbone family (Sequencer, ViL, timm), the
pyramid adapter, sizes and layer decay, and `lstmvision detect` train / resume / validate / predict on tiny
Fashion-MNIST scenes, with validate's AP equal to pycocotools' evaluation of predict's results file."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from timm.optim import create_optimizer_v2

from engine_helpers import write_idx_folder
from lstmvision import create_model
from lstmvision.cli import main
from lstmvision.cli.train import result_line
from lstmvision.data.scenes import make_detection_scenes
from lstmvision.models.detection import create_detector, pyramid_plan
from lstmvision.weights import save_pretrained

pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # pycocotools
              pytest.mark.usefixtures("one_thread")]

DETECTORS = ("fasterrcnn", "retinanet", "fcos", "maskrcnn")
BACKBONES = {  # name -> --model-kwargs: one per family, small
    "sequencer2d_tiny": [],
    "v_sequencer_tiny": [],
    "vil2_tiny": ["depth=2", "embed_dim=64"],
    "timm:resnet18": [],
}
SMALL = ["--img-size", "64", "--train-sizes", "48", "64", "--batch-size", "2", "--workers", "0", "--threads", "1",
         "--fpn-channels", "32", "--log-interval", "2", "--warmup-epochs", "0"]


def _kwargs(backbone: str) -> dict:
    return {k: yaml.safe_load(v) for k, v in (a.split("=") for a in BACKBONES[backbone])}


def _targets(masks: bool) -> list[dict]:
    boxes = torch.tensor([[5.0, 6.0, 40.0, 50.0], [30.0, 10.0, 60.0, 30.0]])
    full = dict(boxes=boxes, labels=torch.tensor([1, 3]))
    empty = dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64))  # an image without objects
    if masks:
        m = torch.zeros(2, 64, 64, dtype=torch.uint8)
        m[0, 6:50, 5:40] = 1
        m[1, 10:30, 30:60] = 1
        full["masks"], empty["masks"] = m, torch.zeros(0, 64, 64, dtype=torch.uint8)
    return [full, empty]


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("kind", DETECTORS)
def test_every_detector_trains_and_detects_on_every_family(kind, backbone):
    channels = 64 if kind == "fcos" else 32  # FCOS's GroupNorm(32) needs 2+ channels per group
    model = create_detector(backbone, kind, 10, img_size=64, fpn_channels=channels, model_kwargs=_kwargs(backbone))
    x = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    losses = model(x, _targets(kind == "maskrcnn"))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.detector.backbone.body.parameters())
    model.eval()
    with torch.no_grad():
        (out,) = model(x[:1])
    assert set(out) >= {"boxes", "labels", "scores"} and ("masks" in out) == (kind == "maskrcnn")
    assert len(model.features(x[:1])) == (4 if kind in ("fasterrcnn", "maskrcnn") else 5)


@pytest.mark.parametrize("kind", DETECTORS)
def test_validation_losses_are_the_training_losses_of_the_evaluation_pass(kind):
    """The same losses as training mode (a backbone without BatchNorm or dropout, training size = evaluation
    size, the same RoI sampling), the detections of evaluation mode, and the random state untouched."""
    model = create_detector("sequencer2d_tiny", kind, 10, img_size=64, train_sizes=[64],
                            fpn_channels=64 if kind == "fcos" else 32)
    x, y = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)], _targets(kind == "maskrcnn")
    rcnn = kind in ("fasterrcnn", "maskrcnn")
    if rcnn:  # training mode draws a size first: the RoI sampling starts from the same state either way
        model.detector.rpn.register_forward_pre_hook(lambda *_: torch.manual_seed(0) and None)
    with torch.no_grad():
        expected = model.train()(x, y)
        detections = model.eval()(x)
    state = torch.get_rng_state()
    losses, outputs = model.losses_and_detections(x, y)
    assert torch.equal(torch.get_rng_state(), state)
    assert set(losses) == set(expected)
    torch.testing.assert_close(losses, expected)
    assert len(outputs) == 2 and all(torch.equal(a[k], b[k]) for a, b in zip(outputs, detections) for k in a)


def test_validation_losses_leave_batchnorm_alone():
    model = create_detector("timm:resnet18", "fasterrcnn", 10, img_size=64, fpn_channels=32)
    x, y = [torch.rand(3, 64, 64)], _targets(False)[:1]
    model.train()(x, y)  # running statistics away from their initial values
    model.eval()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    with torch.no_grad():
        (detections,) = model(x)
    losses, (outputs,) = model.losses_and_detections(x, y)
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers()) and not model.training
    assert all(torch.equal(outputs[k], detections[k]) for k in detections)
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(RuntimeError, match="eval mode"):
        model.train().losses_and_detections(x, y)


def test_rcnn_sampling_settings_reach_torchvision():
    model = create_detector("sequencer2d_tiny", "maskrcnn", 3, img_size=64, fpn_channels=32,
                            rpn_pre_nms_top_n=[60, 30], rpn_post_nms_top_n=[40, 20], box_batch_size_per_image=16)
    rpn, heads = model.detector.rpn, model.detector.roi_heads
    assert (rpn._pre_nms_top_n, rpn._post_nms_top_n) == (dict(training=60, testing=30), dict(training=40, testing=20))
    assert heads.fg_bg_sampler.batch_size_per_image == 16
    default = create_detector("sequencer2d_tiny", "retinanet", 3, img_size=64, fpn_channels=32,
                              rpn_pre_nms_top_n=[60, 30])  # R-CNNs only: not kept for others
    assert default.detector_args["rpn_pre_nms_top_n"] is None
    with pytest.raises(ValueError, match="TRAIN TEST"):
        create_detector("sequencer2d_tiny", "fasterrcnn", 3, img_size=64, rpn_post_nms_top_n=[40])


def test_pyramid_levels_come_from_the_right_maps():
    assert pyramid_plan([4, 8]) == [(1, 8), (1, 8), (1, 8)]  # Sequencer2D tiny: stride 8, pooled
    assert pyramid_plan([7, 14, 14, 14]) == [(0, 8), (3, 16), (3, 16)]  # Sequencer2D-S: resampled to 8 / 16
    assert pyramid_plan([16] * 12) == [(11, 16)] * 3  # ViL: the last block, up / as is / pooled (ViTDet)
    assert pyramid_plan([2, 4, 8, 16, 32]) == [(2, 8), (3, 16), (4, 32)]  # ResNet: its own stages
    model = create_detector("sequencer2d_s", "retinanet", 3, img_size=96, fpn_channels=32)
    maps = model.features([torch.rand(3, 96, 96)])  # strides 7 / 14 land on the 8 / 16 / 32 / 64 / 128 grid
    assert [tuple(m.shape[-2:]) for m in maps] == [(12, 12), (6, 6), (3, 3), (2, 2), (1, 1)]


def test_images_are_resized_to_the_run_sizes_not_800():
    model = create_detector("sequencer2d_tiny", "fasterrcnn", 2, img_size=64, train_sizes=[48, 56])
    t = model.detector.transform
    assert (t.min_size, t.max_size) == ((48, 56), 107)
    model.eval()
    batch, _ = t([torch.rand(3, 40, 80)])
    assert batch.image_sizes == [(53, 107)]  # short side up to 64 but the long side capped at 107
    model.train()
    batch, _ = t([torch.rand(3, 64, 64)])
    assert batch.image_sizes[0][0] in (48, 56)


def test_layer_decay_reaches_the_backbone_only():
    model = create_detector("vil2_tiny", "fasterrcnn", 2, img_size=64, fpn_channels=32, model_kwargs=_kwargs("vil2_tiny"))
    opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    scales = {g["lr_scale"] for g in opt.param_groups}
    assert len(scales) > 2 and max(scales) == 1.0
    head = model.detector.roi_heads.box_predictor.cls_score.weight
    assert next(g["lr_scale"] for g in opt.param_groups if any(p is head for p in g["params"])) == 1.0


# ------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("det")
    source = write_idx_folder(root / "fmnist", 64, 32)
    out = root / "scenes"
    make_detection_scenes(out, n_train=8, n_val=4, size=64, seed=0, source=source, progress=False)
    return out


def _train(scenes: Path, out: Path, name: str, detector: str, backbone: str, *extra: str) -> Path:
    kwargs = ["--model-kwargs", *BACKBONES[backbone]] if BACKBONES[backbone] else []
    assert main(["detect", "train", "--data", str(scenes), "--detector", detector, "--model", backbone, *kwargs,
                 "--epochs", "1", "--output", str(out), "--experiment", name, *SMALL, *extra]) == 0
    return out / name


@pytest.fixture(scope="module")
def mask_run(scenes, tmp_path_factory) -> Path:
    """Mask R-CNN on Sequencer2D: one epoch, then resumed for a second (what they print: `../stdout.txt`)."""
    out = tmp_path_factory.mktemp("detruns")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run = _train(scenes, out, "mask", "maskrcnn", "sequencer2d_tiny")
        assert main(["detect", "train", "--resume", str(run), "--epochs", "2"]) == 0
    (out / "stdout.txt").write_text(printed.getvalue())
    return run


def _rows(run: Path) -> list[dict]:
    with open(run / "summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_and_resume_write_a_detection_run(mask_run, capsys):
    rows = _rows(mask_run)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert list(rows[0])[:9] == ["epoch", "train_loss", "val_loss", "bbox_mAP", "bbox_mAP_50", "bbox_mAP_75",
                                 "segm_mAP", "segm_mAP_50", "segm_mAP_75"]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert all(0 < float(r["val_loss"]) < 100 for r in rows)  # the validation loss, not NaN
    printed = (mask_run.parent / "stdout.txt").read_text()
    assert "nan" not in printed.lower()
    done = next(line for line in printed.splitlines() if "done in" in line)
    assert "bbox_mAP " in done and "segm_mAP " in done and "segm_mAP_75 " in done  # box and mask AP
    model = create_model(mask_run)
    cfg = model.pretrained_cfg
    assert (cfg["task"], cfg["detector"], cfg["category_ids"]) == ("detect", "maskrcnn", list(range(1, 11)))
    assert model.num_classes == 10 and model.class_names[0] == "T-shirt/top"
    assert model.detector.transform.eval_sizes == (64,)
    assert main(["validate", "--checkpoint", str(mask_run)]) == 2  # a classification command refuses it
    assert "is a detection model, not a classifier" in capsys.readouterr().err


def test_the_final_json_line_is_strict_json_without_a_validation_loss():
    """A metric that is not a number (NaN) does not break train's last line for a strict JSON parser."""
    line = result_line({"rank": 0, "final": {"bbox_mAP": 1.5, "loss": float("nan")}, "best": None, "epochs": 2})

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    assert json.loads(line, parse_constant=refuse) == {"final": {"bbox_mAP": 1.5, "loss": None}, "best": None,
                                                       "epochs": 2}


def _pycocotools(ann_file: Path, results_file: Path, iou_type: str) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(str(results_file)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [100 * v if v >= 0 else -1.0 for v in ev.stats[:6]]


def test_validate_equals_pycocotools_on_predicts_results(mask_run, scenes, tmp_path, capsys):
    val_json, val_csv, preds = tmp_path / "val.json", tmp_path / "val.csv", tmp_path / "preds.json"
    for results_file in (val_json, val_csv):
        assert main(["detect", "validate", "--checkpoint", str(mask_run), "--data", str(scenes),
                     "--results-file", str(results_file)]) == 0
    assert "| mAP_50 |" in capsys.readouterr().out
    result = json.loads(val_json.read_text())
    with open(val_csv) as f:
        assert next(csv.DictReader(f))["bbox_mAP"] == str(result["bbox_mAP"])
    assert main(["detect", "predict", "--checkpoint", str(mask_run), "--data", str(scenes), "--split", "val2017",
                 "--output", str(preds), "--save-vis", str(tmp_path / "vis")]) == 0
    entries = json.loads(preds.read_text())
    assert entries and result["detections"] == len(entries) and result["images"] == 4
    assert {e["category_id"] for e in entries} <= set(range(1, 11)) and "counts" in entries[0]["segmentation"]
    assert len(entries[0]["bbox"]) == 4 and sorted(p.name for p in (tmp_path / "vis").iterdir())[0] == \
        "000000000001.png"
    ann = scenes / "annotations" / "instances_val2017.json"
    for iou_type in ("bbox", "segm"):
        theirs = _pycocotools(ann, preds, iou_type)
        ours = [result[f"{iou_type}_{s}"] for s in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")]
        assert ours == pytest.approx([round(v, 4) for v in theirs], abs=1e-9)
    assert result["bbox_mAP_50"] > 0  # two epochs find something: the comparison is not between zeros
    # an existing output is refused without --overwrite, before any work
    assert main(["detect", "predict", "--checkpoint", str(mask_run), "--data", str(scenes), "-o", str(preds)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_unreadable_images_are_skipped_and_counted(mask_run, scenes, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(scenes, data)
    (data / "val2017" / "000000000002.jpg").write_bytes(b"broken")
    out = tmp_path / "r.json"
    assert main(["detect", "validate", "--checkpoint", str(mask_run), "--data", str(data), "--results-file",
                 str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["images"], result["skipped"]) == (3, 1)
    assert "skipping unreadable image" in capsys.readouterr().err
    assert main(["detect", "validate", "--checkpoint", str(mask_run), "--data", str(data), "--strict-images"]) == 2


def test_predict_image_files_never_replaces_an_input(mask_run, scenes, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("000000000001.jpg", "000000000003.jpg"):
        shutil.copy(scenes / "val2017" / name, folder / name)
    (folder / "broken.png").write_bytes(b"no")
    out = tmp_path / "p.json"
    assert main(["detect", "predict", str(folder), "--checkpoint", str(mask_run), "-o", str(out), "--save-vis",
                 str(tmp_path / "vis"), "--vis-threshold", "0"]) == 0
    entries = json.loads(out.read_text())
    assert {Path(e["file_name"]).name for e in entries} <= {"000000000001.jpg", "000000000003.jpg"}
    assert {e["image_id"] for e in entries} <= {1, 2}
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["000000000001.png", "000000000003.png"]
    assert "skipped 1 unreadable" in capsys.readouterr().err
    # a picture that would replace an input image is refused, --overwrite or not
    png = folder / "000000000001.png"
    shutil.copy(tmp_path / "vis" / "000000000001.png", png)
    assert main(["detect", "predict", str(png), "--checkpoint", str(mask_run), "--save-vis", str(folder),
                 "--overwrite"]) == 2
    assert "would replace the input" in capsys.readouterr().err
    assert main(["detect", "predict", str(folder), "--checkpoint", str(mask_run), "-o",
                 str(scenes / "annotations" / "x.txt")]) == 2


def _three_classes(scenes: Path, folder: Path) -> Path:
    """The scenes with the ten garment classes folded into three."""
    shutil.copytree(scenes, folder)
    for ann in (folder / "annotations").glob("instances_*.json"):
        coco = json.loads(ann.read_text())
        coco["categories"] = [dict(id=c, name=f"group{c}") for c in (1, 2, 3)]
        for a in coco["annotations"]:
            a["category_id"] = (a["category_id"] - 1) % 3 + 1
        ann.write_text(json.dumps(coco))
    return folder


def _weights(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}


@pytest.mark.slow
def test_fine_tuning_from_a_detector_checkpoint(mask_run, scenes, tmp_path, capsys):
    """Same classes: the whole detector; other classes: all but the class outputs; another detector, backbone or
    pyramid width: one line, exit 2."""
    base = ["detect", "train", "--data", str(scenes), "--epochs", "1", "--limit-train", "2", "--limit-val", "2",
            "--output", str(tmp_path), *SMALL]
    saved = create_model(mask_run)
    assert main([*base, "--detector", "maskrcnn", "--initial-checkpoint", str(mask_run / "best"),
                 "--experiment", "same"]) == 0
    assert "initial weights: the whole maskrcnn (backbone, FPN and heads)" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="a maskrcnn for 10 classes, this one has 3: loaded its backbone, FPN, RPN, "
                                         r"box head and mask head; the class outputs \(bbox_pred, cls_score, "
                                         r"mask_fcn_logits\) start new"):
        three = create_detector("sequencer2d_tiny", "maskrcnn", 3, img_size=64, fpn_channels=32, pretrained=mask_run)
    theirs, ours = _weights(saved), _weights(three)
    heads = [k for k in ours if "predictor" in k and ("cls_score" in k or "bbox_pred" in k or "logits" in k)]
    assert len(heads) == 6 and all(ours[k].shape != theirs[k].shape for k in heads)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k not in heads)
    assert main(["detect", "train", "--data", str(_three_classes(scenes, tmp_path / "data3")), "--epochs", "1",
                 "--limit-train", "2", "--limit-val", "2", "--output", str(tmp_path), *SMALL, "--detector", "maskrcnn",
                 "--initial-checkpoint", str(mask_run), "--experiment", "three"]) == 0
    assert "a maskrcnn for 10 classes, this one has 3" in capsys.readouterr().err
    for extra, message in ((["--detector", "fasterrcnn"], "is a maskrcnn on sequencer2d_tiny, this run a fasterrcnn "
                                                          "on sequencer2d_tiny"),
                           (["--detector", "maskrcnn", "--model", "v_sequencer_tiny"], "this run a maskrcnn on "
                                                                                       "v_sequencer_tiny"),
                           (["--detector", "maskrcnn", "--fpn-channels", "64"], "has --fpn-channels 32, this run 64")):
        assert main([*base, *extra, "--initial-checkpoint", str(mask_run), "--experiment", "refused"]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_classification_weights_and_weights_files_still_load(mask_run, tmp_path, capsys):
    classifier = create_model("sequencer2d_tiny", num_classes=10)
    save_pretrained(classifier, tmp_path / "cls")
    det = create_detector("sequencer2d_tiny", "fasterrcnn", 3, img_size=64, fpn_channels=32, pretrained=tmp_path / "cls")
    body = _weights(det, "detector.backbone.body.model.")
    own = classifier.state_dict()
    assert body and all(torch.equal(v, own[k.removeprefix("detector.backbone.body.model.")]) for k, v in body.items())
    shutil.copy(mask_run / "best" / "model.safetensors", tmp_path / "det.safetensors")  # a lone weights file
    det = create_detector("sequencer2d_tiny", "maskrcnn", 10, img_size=64, fpn_channels=32,
                          pretrained=tmp_path / "det.safetensors")
    theirs = _weights(create_model(mask_run))
    assert all(torch.equal(v, theirs[k]) for k, v in _weights(det).items())
    assert "the whole maskrcnn" in capsys.readouterr().err


CYCLES = [(d, b) for d in DETECTORS for b in ("sequencer2d_tiny", "vil2_tiny", "timm:resnet18")
          if (d, b) != ("maskrcnn", "sequencer2d_tiny")] + [("fasterrcnn", "v_sequencer_tiny")]


@pytest.mark.slow
@pytest.mark.parametrize("detector, backbone", CYCLES)
def test_cli_cycle_of_each_detector(detector, backbone, scenes, tmp_path, capsys):
    """Train (2 steps), resume for a second epoch, validate and predict: every detector on Sequencer2D, ViL and
    timm backbones (Mask R-CNN on Sequencer2D: `mask_run`), and a vanilla Sequencer."""
    channels = ["--fpn-channels", "64"] if detector == "fcos" else []
    sampling = ["--rpn-pre-nms-top-n", "50", "40", "--rpn-post-nms-top-n", "30", "20", "--box-batch-size-per-image",
                "16"] if (detector, backbone) == ("fasterrcnn", "sequencer2d_tiny") else []
    run = _train(scenes, tmp_path, "run", detector, backbone, "--limit-train", "4", *channels, *sampling)
    assert main(["detect", "train", "--resume", str(run), "--epochs", "2"]) == 0
    if sampling:  # the settings reach the detector and its checkpoint
        rebuilt = create_model(run).detector
        assert rebuilt.rpn._post_nms_top_n == dict(training=30, testing=20)
        assert rebuilt.roi_heads.fg_bg_sampler.batch_size_per_image == 16
    assert [r["epoch"] for r in _rows(run)] == ["0", "1"]
    assert main(["detect", "validate", "--checkpoint", str(run), "--data", str(scenes), "--limit-val", "2",
                 "--results-file", str(tmp_path / "v.json")]) == 0
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["images"] == 2 and result["detector"] == detector
    assert ("segm_mAP" in result) == (detector == "maskrcnn")
    assert main(["detect", "predict", "--checkpoint", str(run), "--data", str(scenes), "--limit", "2", "-o",
                 str(tmp_path / "p.json")]) == 0
    assert isinstance(json.loads((tmp_path / "p.json").read_text()), list)


def test_bad_detection_settings_are_one_line(scenes, tmp_path, capsys):
    base = ["detect", "train", "--data", str(scenes), "--output", str(tmp_path), *SMALL]
    for extra, message in ((["--detector", "fcos", "--fpn-channels", "48"], "multiple of 32"),
                           (["--mixup", "0.5"], "Mixup/CutMix"),
                           (["--train-split", "a/b"], "split name"),
                           (["--recipe", "sequencer-small"], "not a detection recipe"),
                           (["--rpn-post-nms-top-n", "300", "0"], "--rpn-post-nms-top-n must be in [1, inf)"),
                           (["--model", "timm:resnet18", "--pretrained"], "not supported by detect train")):
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert main(["detect", "train", "--recipe", "maskrcnn-coco-1x", "--data", str(scenes), "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["sched"], cfg["decay_milestones"], cfg["layer_decay"], cfg["detector"]) == \
        ("multistep", [8, 11], 0.9, "maskrcnn")
    assert main(["detect", "train", "--recipe", "detect-cpu", "--data", str(scenes), "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["rpn_pre_nms_top_n"], cfg["rpn_post_nms_top_n"], cfg["box_batch_size_per_image"]) == \
        ([600, 300], [600, 300], 128)
