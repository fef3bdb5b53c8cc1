"""`lstmvision train --model timm:NAME`: any timm model trains with the same engine; its checkpoints load back."""
import csv
import json

import pytest
import torch

from engine_helpers import write_idx_folder
from lstmvision.cli import main
from lstmvision.data import build_loader, create_eval_transform, limit, resolve_dataset
from lstmvision.models.loading import create_model
from lstmvision.tasks.classify import evaluate
from lstmvision.weights import read_config


@pytest.mark.slow
def test_train_timm_resnet18_and_reload(tmp_path):
    data = write_idx_folder(tmp_path / "fashion-mnist", 64, 32)
    run = tmp_path / "runs" / "t"
    argv = ["train", "--data", str(data), "--output", str(tmp_path / "runs"), "--experiment", "t",
            "--model", "timm:resnet18", "--img-size", "32", "--epochs", "1", "--batch-size", "16", "--workers", "0",
            "--limit-train", "48", "--limit-val", "32", "--warmup-epochs", "0"]
    assert main(argv) == 0
    saved = json.loads((run / "best" / "config.json").read_text())  # timm's hub layout: timm can rebuild it
    assert saved["architecture"] == "resnet18" and saved["lstmvision"]["timm"] and saved["model_args"]["in_chans"] == 1
    assert read_config(run / "best")["architecture"] == "timm:resnet18"

    model = create_model(str(run / "best")).eval()
    cfg = model.pretrained_cfg
    assert tuple(cfg["input_size"]) == (1, 32, 32) and model.class_names[0] == "T-shirt/top"
    ds = limit(resolve_dataset(data, "val", img_mode="L", class_names=model.class_names), 32, 42)
    tf = create_eval_transform(tuple(cfg["input_size"]), cfg["mean"], cfg["std"], cfg["crop_pct"],
                               cfg["interpolation"])
    m = evaluate(model, build_loader(ds, tf, 16, training=False), torch.device("cpu"))
    row = next(csv.DictReader(open(run / "summary.csv")))
    assert m["count"] == 32 and abs(m["top1"] - float(row["top1"])) < 1e-3  # the weights the trainer validated
    results = run / "val.json"  # and the CLI's validate loads a timm run folder the same way
    assert main(["validate", "--checkpoint", str(run), "--data", str(data), "--limit-val", "32",
                 "--results-file", str(results)]) == 0
    assert abs(json.loads(results.read_text())["top1"] - float(row["top1"])) < 1e-3

    # a timm run resumes like any other: one more epoch on top of its last/
    assert main([*argv[:-6], "--epochs", "2", "--resume", str(run), "--workers", "0"]) == 0
    rows = list(csv.DictReader(open(run / "summary.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
