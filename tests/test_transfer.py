"""`lstmvision transfer`: the VTAB-1K protocol on two tiny tasks (an idx slice with too few images, an
ImageFolder with a test/ split), a reduced protocol (80 train / 20 val, 2 lrs, 1 epoch) and a tiny backbone."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
import yaml
from PIL import Image

from engine_helpers import write_idx_folder, write_image_folder
from lstmvision.cli import main
from lstmvision.commands.transfer import Backbone, Protocol, TransferTask, backbone_from_folder, pick_lr, run_config
from lstmvision.data import resolve_dataset
from lstmvision.models import create_model
from lstmvision.tasks.classify import build_transforms
from lstmvision.weights import save_pretrained

LRS = ["1e-5", "1e-2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    small = write_idx_folder(root / "fmnist_small", n_train=90, n_val=40)  # < 80 + 20: uses what exists
    folder = write_image_folder(root / "shapes", n_per_class=40, val_name="test")
    model = create_model("sequencer2d_tiny", num_classes=10, in_chans=1)
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(1, 28, 28), mean=(0.286,), std=(0.353,))
    ckpt = save_pretrained(model, root / "ckpt")
    return root, [str(small), str(folder)], str(ckpt)


@pytest.fixture(scope="module")
def first_run(setup):
    root, tasks, ckpt = setup
    out = root / "out"
    argv = _argv(tasks, ckpt, out)
    assert main(argv) == 0
    return out, argv


def _result(out: Path) -> dict:
    return json.loads((out / "transfer.json").read_text())


@pytest.mark.slow
def test_table_lists_every_task_and_mean(first_run):
    out, _ = first_run
    result = _result(out)
    assert [t["task"] for t in result["tasks"]] == ["fmnist_small", "shapes"]
    small, shapes = result["tasks"]
    assert small["n_classes"] == 10 and shapes["n_classes"] == 3
    assert (small["n_train"], small["n_val"]) == (72, 18) and "fewer than" in small["warning"]
    assert (shapes["n_train"], shapes["n_val"]) == (80, 20) and shapes["warning"] is None
    for t in result["tasks"]:
        assert set(t["val_top1"]) == {"1e-05", "0.01"}
        assert 0 <= t["test_top1"] <= 100
    assert result["mean_test_top1"] == pytest.approx(np.mean([t["test_top1"] for t in result["tasks"]]))
    md = (out / "transfer.md").read_text()
    for name in ("| fmnist_small | 10 | 72 / 18 |", "| shapes | 3 | 80 / 20 |", "val@1e-05", "val@0.01"):
        assert name in md
    assert md.strip().splitlines()[-1] == "| **mean** |  |  |  |  |  | **%.2f** |" % result["mean_test_top1"]


def test_best_lr_is_argmax_of_val(first_run):
    out, _ = first_run
    for t in _result(out)["tasks"]:
        assert t["val_top1"][f"{t['best_lr']:g}"] == max(t["val_top1"].values())
        # the val numbers are those of the sweep runs' last epochs
        for tag, score in t["val_top1"].items():
            rows = (out / t["task"] / f"sweep_lr{tag}_seed0" / "summary.csv").read_text().splitlines()
            assert float(rows[-1].split(",")[3]) == pytest.approx(score)
    assert pick_lr([1e-3, 1e-4, 5e-4], {"0.001": 50.0, "0.0001": 70.0, "0.0005": 70.0}) == 1e-4
    assert pick_lr([1e-3, 1e-4], {"0.001": 50.0, "0.0001": 50.0}) == 1e-3


def test_final_model_trained_on_train_plus_val(first_run):
    out, _ = first_run
    for t in _result(out)["tasks"]:
        split = json.loads((out / t["task"] / "split.json").read_text())
        assert not set(split["train"]) & set(split["val"])
        final = out / t["task"] / f"final_lr{t['best_lr']:g}_seed0"
        cfg = yaml.safe_load((final / "config.yaml").read_text())
        sweep = yaml.safe_load((out / t["task"] / f"sweep_lr{t['best_lr']:g}_seed0" / "config.yaml").read_text())
        n = t["n_train"] + t["n_val"]
        assert t["final_train_images"] == n
        assert len(resolve_dataset(cfg["data"], "train")) == n
        assert len(resolve_dataset(sweep["data"], "train")) == t["n_train"]
        assert len(resolve_dataset(sweep["data"], "val")) == t["n_val"]
        # protocol settings reached the engine: layer decay, no augmentation, lr at batch 64, the full new head
        assert cfg["layer_decay"] == 0.65 and cfg["no_aug"] and cfg["hflip"] == 0 and cfg["lr_resolved"] == t["best_lr"]
        assert cfg["num_classes"] == t["n_classes"] and cfg["img_size"] == 28
        test = json.loads((final / "test.json").read_text())
        assert test["top1"] == pytest.approx(t["test_top1"])
    # the final train set is exactly the sweep's train + val images (idx task: compare the pixels)
    small = out / "fmnist_small"
    sweep = [resolve_dataset(small / "data_sweep", split).images for split in ("train", "val")]
    final = resolve_dataset(small / "data_final", "train").images
    assert sorted(a.tobytes() for a in np.concatenate(sweep)) == sorted(a.tobytes() for a in final)
    shapes = _result(out)["tasks"][1]
    test = json.loads((out / "shapes" / f"final_lr{shapes['best_lr']:g}_seed0" / "test.json").read_text())
    assert test["count"] == len(list(Path(shapes["data"], "test").rglob("*.png")))  # test/, not the drawn val


def test_rerun_skips_finished_and_resumes_unfinished(first_run, capsys):
    out, argv = first_run
    before = _result(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*_seed0/last/model.safetensors")}
    assert len(stamps) == 6  # 2 tasks x (2 sweep lrs + 1 final)
    unfinished = out / "shapes" / f"final_lr{before['tasks'][1]['best_lr']:g}_seed0"
    (unfinished / "summary.csv").unlink()  # as if it stopped between its checkpoint and its summary
    swapped = out / "fmnist_small" / "sweep_lr1e-05_seed0"
    (swapped / "last").rename(swapped / ".last.old")  # as if killed between the two renames of a commit
    capsys.readouterr()
    assert main(argv) == 0
    log = capsys.readouterr().out
    assert log.count("finished before; skipped") == 4 and "transfer: fit 6/6: " in log
    assert f"resuming {unfinished}" in log and f"resuming {swapped}" in log
    assert "epoch 0 [" not in log  # nothing was trained again
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (unfinished / "summary.csv").is_file() and not (swapped / ".last.old").exists()
    assert _result(out)["tasks"] == before["tasks"]


def _argv(tasks: list[str], ckpt: str, out: Path, **change) -> list[str]:
    """The reduced-protocol command line; `change` replaces flags (dashes as underscores; None drops one)."""
    flags = {"--initial-checkpoint": [ckpt], "--data": tasks, "--output": [str(out)], "--epochs": ["1"],
             "--train-size": ["80"], "--val-size": ["20"], "--lrs": LRS, "--workers": ["0"], "--device": ["cpu"]}
    for key, value in change.items():
        flags["--" + key.replace("_", "-")] = value
    return ["transfer"] + [x for k, v in flags.items() if v is not None for x in (k, *v)]


@pytest.mark.parametrize("change, message", [
    (dict(data=["/nonexistent/task"]), "not found"),
    (dict(lrs=["1e-3", "-1"]), "positive"),
    (dict(lrs=["1e-3", "1e-3"]), "twice"),
    (dict(seeds=["0"]), "--seeds"),
    (dict(initial_checkpoint=None, model=["no_such_model"]), "unknown model"),
    (dict(initial_checkpoint=["sequencer2d_tiny"]), "use --model sequencer2d_tiny"),
    (dict(initial_checkpoint=None, pretrained=[]), "--pretrained fine-tunes the released weights of --model"),
    (dict(model=["sequencer2d_tiny"]), "not both"),
    (dict(initial_checkpoint=None, model=["sequencer2d_tiny"], pretrained=[]), "has no released weights"),
])
def test_bad_input_exits_2(setup, tmp_path, capsys, change, message):
    _, tasks, ckpt = setup
    capsys.readouterr()
    assert main(_argv(tasks, ckpt, tmp_path / "out", **change)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out" / "transfer.json").exists()


def test_too_small_task_and_changed_settings_exit_2(setup, first_run, tmp_path, capsys):
    _, tasks, ckpt = setup
    tiny = write_idx_folder(tmp_path / "tiny", n_train=2, n_val=4)
    capsys.readouterr()
    assert main(_argv([str(tiny)], ckpt, tmp_path / "o")) == 2
    assert "only 2 training images" in capsys.readouterr().err
    out, _ = first_run
    assert main(_argv(tasks, ckpt, out, epochs=["3"])) == 2  # into the folder of the 1-epoch runs
    assert "other settings (epochs)" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("how", ["scratch", "run-folder"])
def test_scratch_baseline_and_run_folder_weights(setup, first_run, tmp_path, how):
    _, tasks, ckpt = setup
    if how == "scratch":  # a registered name without weights; channels and normalisation from the data
        change = dict(initial_checkpoint=None, model=["sequencer2d_tiny"], img_size=["28"])
    else:  # a training run folder: its best/
        change = dict(initial_checkpoint=[str(first_run[0] / "shapes" / "sweep_lr0.01_seed0")])
    out = tmp_path / "out"
    assert main(_argv(tasks[:1], ckpt, out, lrs=["1e-3"], **change)) == 0
    result = _result(out)
    final = yaml.safe_load((out / "fmnist_small" / "final_lr0.001_seed0" / "config.yaml").read_text())
    if how == "scratch":
        assert result["backbone"]["weights"] is None and final["initial_checkpoint"] is None
        assert final["pretrained"] is False
        assert final["in_chans"] == 1 and final["img_size"] == 28
    else:
        assert result["backbone"]["weights"].endswith("sweep_lr0.01_seed0/best")
        assert final["initial_checkpoint"] == result["backbone"]["weights"] and final["num_classes"] == 10
        assert final["pretrained"] is False
    assert result["tasks"][0]["test_top1"] >= 0


def test_fits_resize_without_augmentation(tmp_path):
    """The fits' train and eval transforms are the protocol's plain resize (any aspect ratio), no flip or crop."""
    backbone = Backbone("sequencer2d_tiny", None, 28, 3, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], "bicubic")
    task = TransferTask("t", tmp_path, ["a", "b"], 10)
    cfg = run_config(backbone, Protocol(), task, tmp_path, 1e-3, 0, tmp_path / "run")
    train_tf, eval_tf = build_transforms(cfg, 3)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 50, 3), dtype=np.uint8))
    want = TF.normalize(TF.to_tensor(TF.resize(img, [28, 28], TF.InterpolationMode.BICUBIC)), cfg["mean"], cfg["std"])
    for tf in (train_tf, eval_tf, train_tf):
        torch.testing.assert_close(tf(img), want)


@pytest.mark.slow
def test_scratch_from_checkpoint_keeps_its_architecture(setup, tmp_path):
    """`--initial-checkpoint CKPT --scratch`: the checkpoint's architecture (narrowed model arguments, channels, input
    size, normalisation) with random weights; the same checkpoint fine-tuned builds the same architecture."""
    _, tasks, _ = setup
    narrow = dict(embed_dim=32, depth=2, patch_size=4)
    model = create_model("vil2_tiny", num_classes=10, in_chans=1, img_size=28, **narrow)
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(1, 28, 28), mean=(0.25,), std=(0.5,),
                                interpolation="bilinear")
    ckpt = save_pretrained(model, tmp_path / "vil_ckpt")
    scratch, tuned = backbone_from_folder(ckpt, scratch=True), backbone_from_folder(ckpt)
    assert scratch.weights is None and tuned.weights == str(Path(ckpt).resolve())
    assert scratch.model_kwargs == tuned.model_kwargs == narrow  # no img_size/in_chans: set per fit
    assert (scratch.img_size, scratch.in_chans, scratch.mean, scratch.std, scratch.interpolation) == \
        (28, 1, [0.25], [0.5], "bilinear")

    out = tmp_path / "out"
    assert main(_argv(tasks[:1], str(ckpt), out, lrs=["1e-3"], scratch=[])) == 0
    result = _result(out)
    assert result["backbone"]["weights"] is None and result["backbone"]["model_kwargs"] == narrow
    assert "# Transfer: vil2_tiny (embed_dim=32 depth=2 patch_size=4) (weights: none (from scratch))" in \
        (out / "transfer.md").read_text()
    final = out / "fmnist_small" / "final_lr0.001_seed0"
    cfg = yaml.safe_load((final / "config.yaml").read_text())
    assert cfg["initial_checkpoint"] is None and cfg["pretrained"] is False and cfg["model_kwargs"] == narrow
    assert (cfg["img_size"], cfg["in_chans"], cfg["mean"], cfg["std"]) == (28, 1, [0.25], [0.5])
    trained = create_model(pretrained=final / "last")
    assert trained.model_kwargs == dict(narrow, in_chans=1, img_size=28)
    assert sum(p.numel() for p in trained.parameters()) == sum(p.numel() for p in model.parameters())
