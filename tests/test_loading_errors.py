"""One line for each way a model spec or its weights can be wrong: a name that is no Hugging Face Hub repo id is
refused before any cache or network lookup, missing downloads are said once and short with their fix, and a
weights file where a saved model folder is expected names the folder to give instead (in every command)."""
from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
import torch

import lstmvision
from engine_helpers import write_idx_folder
from lstmvision.cli import main
from lstmvision.data.scenes import make_detection_scenes
from lstmvision.models import create_model
from lstmvision.models.registry import list_pretrained

NOT_REPO_IDS = ["", "..", "../../etc", "/etc/passwd", "acme/x/y", "acme/a b", "acme/x--y", "-acme/x", "../../etc@main"]


@pytest.fixture
def no_hub_lookup(monkeypatch):
    """Any cache or network lookup of the Hub client fails the test."""
    def lookup(*args, **kwargs):
        raise AssertionError(f"the Hub was asked for {args}")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lookup)


@pytest.mark.parametrize("repo", NOT_REPO_IDS)
def test_an_invalid_hub_repo_id_is_refused_before_any_lookup(repo, no_hub_lookup):
    for pretrained in (True, False):
        with pytest.raises(ValueError) as e:
            create_model(f"hf-hub:{repo}", pretrained=pretrained)
        message = str(e.value)
        assert message.startswith(f"hf-hub:{repo} does not name a Hugging Face Hub repo: expected hf-hub:ORG/NAME")
        assert "\n" not in message and "no weights" not in message and "download" not in message


def test_an_invalid_hub_repo_id_in_an_overlay_or_the_cli_is_one_line(no_hub_lookup, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"^hf-hub:\.\./x does not name a Hugging Face Hub repo"):
        create_model("sequencer2d_s", pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id="../x"))
    assert main(["export", "--model", "hf-hub:../../etc", "--pretrained", "--output", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lstmvision export: error: hf-hub:../../etc does not name a Hugging Face Hub repo: expected "
                   "hf-hub:ORG/NAME[@REVISION] (letters, digits, '-', '_', '.'; at most one '/'; no '..' or '--'; "
                   "at most 96 characters)"]


def test_local_dir_without_a_folder_is_one_line(tmp_path):
    for spec in ("local-dir:", "local-dir:  "):
        with pytest.raises(ValueError, match=r"^local-dir:\s* names no folder: give local-dir:PATH"):
            create_model(spec, pretrained=True)
    with pytest.raises(FileNotFoundError, match=r"no such folder$"):
        create_model(f"local-dir:{tmp_path / 'absent'}", pretrained=True)
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        create_model(f"local-dir:{tmp_path}", pretrained=True)


# --------------------------------------------------------------------------------------------- offline
OFFLINE = {  # name -> what the message must name: what was looked for, and the fix
    "sequencer2d_m.in1k": ["timm/sequencer2d_m.in1k (HF Hub) and sequencer2d_m.pth (github.com) are not cached",
                           "run `lstmvision download sequencer2d_m.in1k` with network access",
                           "pretrained=PATH (CLI: --initial-checkpoint PATH)"],
    "vil2_tiny": ["no weights for vil2_tiny.in1k_e800: vil2_tiny16_e800_in1k.th (ml.jku.at) is not cached",
                  "`lstmvision download vil2_tiny.in1k_e800`"],
    "hf-hub:acme/absent": ["acme/absent (HF Hub) is not cached", "run `hf download acme/absent` with network access",
                           "local-dir:FOLDER"],
    "hf-hub:acme/absent@v2": ["`hf download acme/absent --revision v2`"],
}


def _offline_error(name: str, **kwargs) -> str:
    with pytest.raises(lstmvision.WeightsError) as e:
        create_model(name, pretrained=True, **kwargs)
    return str(e.value)


def _says_once(message: str) -> None:
    assert "\n" not in message and len(message) < 300, (len(message), message)
    assert message.count("downloads are off (HF_HUB_OFFLINE=1)") == 1 and message.count("cached") == 1
    assert message.count("no weights for") == 1 and "Internet connection" not in message


@pytest.mark.parametrize("name", list(OFFLINE))
def test_offline_missing_weights_say_each_thing_once(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    message = _offline_error(name)
    _says_once(message)
    assert message.startswith(f"no weights for {name.replace('vil2_tiny', 'vil2_tiny.in1k_e800')}: ")
    for needle in OFFLINE[name]:
        assert needle in message


def test_offline_messages_of_every_release_and_of_an_own_source_are_short(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    lengths = []
    for tag in list_pretrained():
        message = _offline_error(tag)
        assert message.count("downloads are off") == 1 and f"`lstmvision download {tag}`" in message
        lengths.append(len(message))
    assert max(lengths) <= 310  # the longest file names (vil_smallplus16_e400_in1k_stride8.th) just over 300
    # an overlay's own source: `lstmvision download` would fetch the release, not this file
    message = _offline_error("vil2_tiny", pretrained_cfg_overlay=dict(url="http://example.org/w/mine.th"))
    _says_once(message)
    assert "mine.th (example.org) is not cached" in message and "lstmvision download" not in message


# ------------------------------------------------------------------------ a weights file as --checkpoint
@pytest.fixture(scope="module")
def detect_run(tmp_path_factory) -> tuple[Path, Path]:
    """A Faster R-CNN run (2 steps on 64 px scenes) and its data."""
    root = tmp_path_factory.mktemp("det")
    make_detection_scenes(root / "scenes", n_train=4, n_val=2, size=64, seed=0, progress=False,
                          source=write_idx_folder(root / "fmnist", 64, 32))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["detect", "train", "--data", str(root / "scenes"), "--detector", "fasterrcnn", "--model",
                     "sequencer2d_tiny", "--epochs", "1", "--output", str(root / "runs"), "--experiment", "r",
                     "--img-size", "64", "--train-sizes", "64", "--batch-size", "2", "--workers", "0",
                     "--threads", "1", "--fpn-channels", "32", "--warmup-epochs", "0"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "runs" / "r", root / "scenes"


@pytest.mark.slow
def test_detect_validate_with_a_weights_file_names_the_folder_that_works(detect_run, capsys):
    run, scenes = detect_run
    common = ["--data", str(scenes), "--limit-val", "2", "--device", "cpu"]
    assert main(["detect", "validate", "--checkpoint", str(run / "last" / "model.safetensors"), *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lstmvision detect: error: {run / 'last' / 'model.safetensors'} is a weights file and does not "
                   f"say which architecture it holds: give the folder that holds it, {run / 'last'}, a saved model "
                   "(config.json + weights)"]
    assert main(["detect", "validate", "--checkpoint", str(run / "last"), *common]) == 0
    assert "mAP" in capsys.readouterr().out
