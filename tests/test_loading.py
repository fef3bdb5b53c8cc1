"""lstmvision.models.loading: one create_model for every kind of model spec, one checkpoint finder, one timing loop, and the
CLI vocabulary built on them (--checkpoint / --initial-checkpoint / --pretrained / --model mean the same in every
command)."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine_helpers import write_idx_folder
from lstmvision.cli import main
from lstmvision.device import time_steps
from lstmvision.engine.checkpoint import save_checkpoint
from lstmvision.models import create_model
from lstmvision.weights import find_checkpoint, save_pretrained

# a Sequencer2D small enough for CPU tests: 1-channel 32 px input, 10 classes (the idx data's)
TINY = dict(img_size=32, layers=(1, 1), patch_sizes=(4, 2), embed_dims=(16, 32), hidden_sizes=(8, 16), mlp_ratios=2.0)


def tiny(seed: int = 0, num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = create_model("sequencer2d_s", num_classes=num_classes, in_chans=1, **TINY)
    torch.nn.init.normal_(m.head.fc.weight, std=0.5)  # heads start at zero: make the two seeds differ there too
    m.pretrained_cfg = {**m.pretrained_cfg, "mean": (0.5,), "std": (0.5,), "input_size": (1, 32, 32)}
    return m.eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def models():
    return tiny(0), tiny(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, models):
    """A training run folder as the engine writes it: best/ (model 0) and last/ (model 1), each with state.pth."""
    run = tmp_path_factory.mktemp("runs") / "fmnist"
    run.mkdir()
    save_checkpoint(run, "best", models[0], {"epoch": 3}, None)
    save_checkpoint(run, "last", models[1], {"epoch": 5}, None)
    return run


@pytest.fixture(scope="module")
def last_only(tmp_path_factory, models):
    run = tmp_path_factory.mktemp("runs") / "unfinished"
    run.mkdir()
    save_checkpoint(run, "last", models[1], {"epoch": 1}, None)
    return run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_idx_folder(tmp_path_factory.mktemp("idx"), n_train=8, n_val=12)


# ------------------------------------------------------------------------------------------ find_checkpoint
def test_find_checkpoint_prefers_best_or_last(run_dir, capsys):
    assert find_checkpoint(run_dir, prefer="best") == run_dir / "best"
    assert find_checkpoint(run_dir, prefer="last") == run_dir / "last"
    assert find_checkpoint(run_dir) == run_dir / "last"  # the engine's resume: the default
    assert find_checkpoint(run_dir / "best") == run_dir / "best"  # a checkpoint folder is itself
    assert find_checkpoint(run_dir / "last" / "state.pth") == run_dir / "last"  # a file: its folder
    assert capsys.readouterr().err == ""  # no fallback, nothing said


def test_find_checkpoint_fallbacks_are_said(last_only, tmp_path, capsys):
    assert find_checkpoint(last_only, prefer="best") == last_only / "last"
    assert "has no best/ checkpoint; using" in capsys.readouterr().err
    # a save interrupted mid-swap leaves the previous checkpoint as .last.old
    run = tmp_path / "run"
    (run / ".last.old").mkdir(parents=True)
    save_pretrained(tiny(), run / ".last.old")
    assert find_checkpoint(run, prefer="last") == run / ".last.old"
    assert "has no last/ checkpoint" in capsys.readouterr().err


def test_find_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        find_checkpoint(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        find_checkpoint(tmp_path, prefer="best")
    with pytest.raises(ValueError, match="prefer"):
        find_checkpoint(tmp_path, prefer="first")


# ---------------------------------------------------------------------------------------------- create_model
def test_create_model_registered_name():
    m = create_model("sequencer2d_s", num_classes=3, in_chans=1, **TINY).eval()
    assert m.label == "sequencer2d_s" and m.num_classes == 3 and not m.training
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 3)


def test_create_model_saved_folder(models, tmp_path):
    save_pretrained(models[0], tmp_path / "saved")
    m = create_model(tmp_path / "saved").eval()
    assert m.label == "saved" and same_weights(m, models[0]) and not m.training


def test_create_model_run_folder_uses_best(run_dir, models, capsys):
    m = create_model(str(run_dir)).eval()
    assert m.label == "fmnist" and same_weights(m, models[0])
    assert capsys.readouterr().err == ""


def test_create_model_run_folder_with_only_last_says_so(last_only, models, capsys):
    m = create_model(str(last_only)).eval()
    assert same_weights(m, models[1]) and m.label == "unfinished"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no best/ checkpoint" in err[0] and str(last_only / "last") in err[0]


def test_create_model_weights_file_with_name(models, run_dir, tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in models[0].state_dict().items()}, str(path))
    m = create_model("sequencer2d_s", pretrained=path, in_chans=1, **TINY).eval()
    assert m.num_classes == 10 and same_weights(m, models[0])  # classes taken from the file's classifier
    # a run folder as pretrained weights works as its best/ does
    m = create_model("sequencer2d_s", pretrained=run_dir).eval()
    assert same_weights(m, models[0])
    with pytest.raises(ValueError, match="no config.json beside it, so it does not say which architecture"):
        create_model(path).eval()
    with pytest.raises(ValueError, match=f"give the folder that holds it, {run_dir / 'best'}, a saved model"):
        create_model(run_dir / "best" / "model.safetensors").eval()
    with pytest.raises(ValueError, match="either"):
        create_model(run_dir, pretrained=path).eval()


def test_create_model_timm(tmp_path):
    m = create_model("timm:resnet18", num_classes=4, in_chans=1).eval()
    assert m.label == "resnet18" and m.num_classes == 4 and m.model_name == "timm:resnet18" and not m.training
    path = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    again = create_model("timm:resnet18", pretrained=path, in_chans=1).eval()
    assert again.num_classes == 4 and same_weights(again, m)
    save_pretrained(m, tmp_path / "saved_timm")  # a timm model saved as a folder comes back as timm
    back = create_model(tmp_path / "saved_timm").eval()
    assert back.model_name == "timm:resnet18" and same_weights(back, m)


def test_create_model_unknown_names():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("no_such_model").eval()
    with pytest.raises(ValueError, match="unknown timm model"):
        create_model("timm:no_such_model").eval()
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        create_model("runs/no/such/run").eval()


# --------------------------------------------------------------------------------------------------- timing
def test_time_steps_counts_only_timed_calls():
    calls = []
    seconds = time_steps(lambda: calls.append(1), 3, torch.device("cpu"), warmup=2)
    assert len(calls) == 5 and seconds >= 0


# ----------------------------------------------------------------------------------------- CLI vocabulary
def test_validate_initial_checkpoint_run_and_results_file(run_dir, data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["validate", "--model", "sequencer2d_s", "--initial-checkpoint", str(run_dir), "--data", str(data),
            "--limit-val", "6", "--device", "cpu", "--workers", "0"]
    assert main(argv) == 0
    assert "images" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # nothing written without --results-file
    assert main(argv + ["--results-file", "out/val.json"]) == 0
    result = json.loads((tmp_path / "out" / "val.json").read_text())
    assert result["images"] == 6 and result["checkpoint"] == str(run_dir) and result["model"] == "sequencer2d_s"
    # --limit is still accepted (hidden) for --limit-val; --checkpoint RUN is the same model as
    # --initial-checkpoint RUN
    assert main(["validate", "--checkpoint", str(run_dir), "--data", str(data), "--limit", "6", "--device", "cpu",
                 "--workers", "0", "--results-file", "b.json"]) == 0
    other = json.loads(Path("b.json").read_text())
    assert other["images"] == 6 and other["top1"] == result["top1"] and other["loss"] == result["loss"]


def test_validate_checkpoint_weights_file_names_its_folder(run_dir, data, tmp_path, monkeypatch, capsys):
    """A weights file given to --checkpoint: the one line names the folder to give instead, which then works."""
    monkeypatch.chdir(tmp_path)
    common = ["--data", str(data), "--limit-val", "2", "--device", "cpu", "--workers", "0"]
    assert main(["validate", "--checkpoint", str(run_dir / "last" / "model.safetensors"), *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lstmvision validate: error: ")
    assert f"give the folder that holds it, {run_dir / 'last'}, a saved model" in err[0]
    assert "--initial-checkpoint" not in err[0]  # a flag not every command has
    assert main(["validate", "--checkpoint", str(run_dir / "last"), *common]) == 0


def test_validate_last_only_run_says_it_uses_last(last_only, data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--checkpoint", str(last_only), "--data", str(data), "--limit-val", "4",
                 "--device", "cpu", "--workers", "0"]) == 0
    assert "no best/ checkpoint; using" in capsys.readouterr().err


def test_export_checkpoint_and_initial_checkpoint_run_folder(run_dir, models, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["export", "--checkpoint", str(run_dir), "--output", str(out)]) == 0
    assert out.is_file() and capsys.readouterr().out.strip().splitlines()[-1].startswith("ok")
    assert main(["export", "--model", "sequencer2d_s", "--initial-checkpoint", str(run_dir), "--output",
                 str(tmp_path / "p.pt")]) == 0
    assert "random weights" not in "".join(capsys.readouterr())
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in models[0].state_dict().items()}, str(weights))
    assert main(["export", "--checkpoint", str(weights), "--output", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--model NAME --initial-checkpoint" in err[0]
