"""End-to-end: a tiny train on a Fashion-MNIST slice, then validate and predict, the run folder, NaN handling."""
import csv
import json

import pytest
import torch
import yaml
from timm.data import ImageNetInfo

import lstmvision
from engine_helpers import write_idx_folder, write_image_folder
from lstmvision.cli import main
from lstmvision.data import FASHION_MNIST_CLASSES
from lstmvision.engine.run import resolve_lr

TINY = ["--model", "sequencer2d_tiny", "--epochs", "2", "--batch-size", "32", "--workers", "0",
        "--log-interval", "4", "--warmup-epochs", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine")
    data = write_idx_folder(tmp / "fashion-mnist", 256, 128)
    rc = main(["train", "--data", str(data), "--output", str(tmp / "runs"), "--experiment", "tiny", *TINY])
    assert rc == 0
    return tmp, data, tmp / "runs" / "tiny"


@pytest.mark.slow
def test_run_folder(trained):
    _, _, run = trained
    for f in ("config.yaml", "summary.csv", "curves.png", "best/model.safetensors", "best/config.json",
              "best/state.pth", "last/model.safetensors", "last/state.pth"):
        assert (run / f).is_file(), f
    assert list((run / "tb").glob("events.out.tfevents.*"))
    rows = list(csv.DictReader(open(run / "summary.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert set(rows[0]) == {"epoch", "train_loss", "val_loss", "top1", "top5", "lr", "img_s"}
    state = torch.load(run / "last" / "state.pth", weights_only=True)
    assert state["epoch"] == 2 and state["global_step"] == 16 and state["class_names"][0] == "T-shirt/top"
    assert {"optimizer", "scheduler", "scaler", "ema", "rng"} <= set(state)
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no leftovers of atomic writes


def test_checkpoint_loads_with_create_model(trained):
    model = lstmvision.create_model(pretrained=trained[2] / "best")
    assert model.class_names[1] == "Trouser" and tuple(model.pretrained_cfg["input_size"]) == (1, 28, 28)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_validate_json(trained, capsys):
    tmp, data, run = trained
    out = tmp / "val.json"
    assert main(["validate", "--checkpoint", str(run), "--data", str(data), "--results-file", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["images"] == 128 and 0 <= res["top1"] <= res["top5"] <= 100 and res["model"] == "sequencer2d_tiny"
    best = list(csv.DictReader(open(run / "summary.csv")))
    assert any(abs(float(r["top1"]) - res["top1"]) < 1e-6 for r in best)  # same numbers as the trainer
    assert "top1" in capsys.readouterr().out


def test_predict_with_class_names(trained, capsys):
    tmp, _, run = trained
    imgs = write_image_folder(tmp / "pred", n_per_class=2, corrupt=1)
    rc = main(["predict", "--checkpoint", str(run / "best"), str(imgs / "train"), "--json", "--topk", "3"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["results"]) == 6 and res["skipped"] == 1
    p = res["results"][0]["predictions"]
    assert len(p) == 3 and p[0]["prob"] >= p[1]["prob"]

    assert all(q["label"] in FASHION_MNIST_CLASSES for r in res["results"] for q in r["predictions"])
    assert main(["predict", "--checkpoint", str(run), str(imgs / "train"), "--strict-images"]) == 2


def test_predict_imagenet_names(tmp_path, capsys):
    model = lstmvision.create_model("sequencer2d_tiny", num_classes=1000)
    lstmvision.save_pretrained(model, tmp_path / "w")
    imgs = write_image_folder(tmp_path / "i", n_per_class=1, classes=("a",))
    assert main(["predict", "--model", "sequencer2d_tiny", "--initial-checkpoint", str(tmp_path / "w"),
                 str(imgs / "val"), "--json", "--topk", "1", "--img-size", "32"]) == 0
    res = json.loads(capsys.readouterr().out)

    info = ImageNetInfo()
    names = {info.index_to_description(i) for i in range(1000)}
    assert res["results"][0]["predictions"][0]["label"] in names


@pytest.mark.slow
def test_nan_loss_keeps_last_good_checkpoint(trained, capsys):
    tmp, data, _ = trained
    args = ["train", "--data", str(data), "--output", str(tmp / "runs"), "--experiment", "nan", *TINY,
            "--debug-nan-at-step", "11"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "global step 11" in err[0] and "last good checkpoint" in err[0]
    state = torch.load(tmp / "runs" / "nan" / "last" / "state.pth", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 8  # epoch 0 was saved, nothing after

    model = lstmvision.create_model(pretrained=tmp / "runs" / "nan" / "last")
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_image_folder_training_rgb_and_ema(tmp_path):
    root = write_image_folder(tmp_path / "imgs", n_per_class=8)
    assert main(["train", "--data", str(root), "--output", str(tmp_path / "r"), "--experiment", "x",
                 "--model", "sequencer2d_tiny", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                 "--img-size", "32", "--ema", "--grad-accum", "2", "--clip-grad", "1.0",
                 "--aa", "rand-m9-mstd0.5-inc1-mmax9", "--mixup", "0.8", "--cutmix", "1.0", "--reprob", "0.25",
                 "--amp", "bf16", "--channels-last"]) == 0
    saved = lstmvision.create_model(tmp_path / "r" / "x" / "best")  # whatever the saved layout
    assert saved.class_names == ["bag", "coat", "shoe"] and saved.num_classes == 3
    assert tuple(saved.pretrained_cfg["input_size"]) == (3, 32, 32)


def test_config_yaml_and_recipe_override(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("recipe: sequencer-imagenet\nepochs: 3\nbatch-size: 64\n")
    assert main(["train", "--config", str(cfg), "--epochs", "5", "--print-config"]) == 0

    out = yaml.safe_load(capsys.readouterr().out)
    assert out["epochs"] == 5 and out["batch_size"] == 64 and out["lr_base"] == 2e-3 and out["lr_base_size"] == 2048
    assert out["warmup_epochs"] == 20 and out["mixup"] == 0.8 and out["model"] == "sequencer2d_s"

    assert resolve_lr(dict(out, batch_size=256), world=8) == pytest.approx(2e-3)


@pytest.mark.parametrize("extra, needle", [
    (["--model", "no_such_model"], "unknown model"),
    (["--amp", "fp16", "--device", "cpu"], "fp16 needs a CUDA GPU"),
    (["--mixup", "0.8", "--batch-size", "31"], "even --batch-size"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--recipe", "nope"], "unknown recipe"),
    (["--resume", "/no/such/run"], "checkpoint not found"),
])
def test_train_user_errors(trained, capsys, extra, needle):
    tmp, data, _ = trained
    rc = main(["train", "--data", str(data), "--output", str(tmp / "runs"), "--experiment", "err", *TINY, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err


def test_other_user_errors(trained, tmp_path, capsys):
    tmp, data, run = trained
    cases = [
        (["validate", "--model", "sequencer2d_small32", "--checkpoint", str(run), "--data", str(data)], "holds a"),
        (["validate", "--data", str(data)], "--checkpoint"),
        (["validate", "--checkpoint", str(run), "--initial-checkpoint", str(run), "--data", str(data)], "not both"),
        (["predict", "--checkpoint", str(run), str(tmp_path / "none")], "no such image"),
        (["train", "--data", str(tmp_path)], "holds no train data"),
        (["train", "--data", str(data), "--output", str(tmp / "runs"), "--experiment", "tiny", *TINY],
         "already holds a run"),
    ]
    for argv, needle in cases:
        rc = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0], (argv, err)
    # nothing already saved was lost
    assert (run / "best" / "model.safetensors").is_file() and (run / "last" / "state.pth").is_file()


def test_checkpoint_of_another_architecture(trained, tmp_path, capsys):
    other = lstmvision.create_model("sequencer2d_small32", num_classes=10, in_chans=1)
    lstmvision.save_pretrained(other, tmp_path / "o")
    (tmp_path / "o" / "model.safetensors").rename(tmp_path / "w.safetensors")
    rc = main(["validate", "--model", "sequencer2d_tiny", "--in-chans", "1", "--initial-checkpoint",
               str(tmp_path / "w.safetensors"), "--data", str(trained[1])])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "another architecture" in err[0]


@pytest.mark.slow
def test_progress_bar_mode(tmp_path, monkeypatch, capsys):
    data = write_idx_folder(tmp_path / "d", 64, 32)
    monkeypatch.setenv("LSTMVISION_PROGRESS", "bar")
    assert main(["train", "--data", str(data), "--output", str(tmp_path / "r"), "--experiment", "bar",
                 "--model", "sequencer2d_tiny", "--epochs", "1", "--batch-size", "16", "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert "epoch 0" in err and "img_s=" in err and "loss=" in err
