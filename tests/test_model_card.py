"""The model card (`README.md`) of `lstmvision.save_for_hf`: front matter the Hub reads, the model's size and input,
a run's recipe and final metrics, and usage snippets for lstmvision, timm and transformers that run as written."""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

import lstmvision
from hub_server import StandInHub
from lstmvision.cli import main
from lstmvision.models import hub
from lstmvision.models.flops import count_params
from lstmvision.models.model_card import CARD_MARK, base_of, license_entries, run_datasets, tag_datasets
from lstmvision.models.upernet import create_segmenter

TINY_VIL = dict(embed_dim=32, depth=2, img_size=32)
CLASSES = ["ant", "bee", "cat"]


def _card(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def _snippets(body: str) -> dict[str, list[str]]:
    """The python code blocks under each '### ' heading."""
    out: dict[str, list[str]] = {}
    for section in re.split(r"^### ", body, flags=re.M)[1:]:
        name = section.split("\n", 1)[0].strip()
        out[name] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return out


def _fake_run(root: Path, model, settings: dict, rows: list[dict]) -> Path:
    """A run folder as `lstmvision train` leaves it: best/ (save_pretrained), config.yaml and summary.csv."""
    run = root / "runs" / "finetune"
    lstmvision.save_pretrained(model, run / "best")
    (run / "config.yaml").write_text(yaml.safe_dump(settings))
    with open(run / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return run


def test_front_matter_and_details(tmp_path):
    model = lstmvision.create_model("vil2_tiny", num_classes=3, **TINY_VIL)
    folder = lstmvision.save_for_hf(model, tmp_path / "vil", class_names=CLASSES)
    meta, body = _card(folder)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-classification"
    assert {"lstmvision", "timm", "vision-lstm", "image-classification"} <= set(meta["tags"])
    # ViL's released weights carry no license of their own: the Hub's `other` with the cfg's words
    assert meta["license"] == "other" and meta["license_name"] == "unspecified-model-code-apache-2-0"
    assert "datasets" not in meta and "base_model" not in meta  # random weights: no dataset, no base
    assert f"| parameters | {count_params(model) / 1e3:.2f}k |" in body and "at 32 x 32 |" in body
    assert "| classes | 3 (ant, bee, cat) |" in body and CARD_MARK in body
    assert {"lstmvision", "timm", "transformers"} <= set(_snippets(body))


def test_hub_fields_from_cfg_and_run_settings():
    assert license_entries("apache-2.0") == {"license": "apache-2.0"}
    assert license_entries(None) == {}
    assert tag_datasets("in1k_e400") == ["imagenet-1k"] and tag_datasets(None) == []
    assert run_datasets({"data": "/usr/share/datasets/fashion-mnist"}) == ["zalando-datasets/fashion_mnist"]
    assert run_datasets({"data": "hfds:acme/flowers:test"}) == ["acme/flowers"]
    assert run_datasets({"data": "hfds:./local-copy"}) == [] and run_datasets({"data": "data/folder"}) == []
    assert base_of({"pretrained": True, "model": "sequencer2d_s"}) == ("timm/sequencer2d_s.in1k", "sequencer2d_s.in1k")
    assert base_of({"pretrained": True, "model": "vil2_tiny.in1k_e400"}) == (None, "vil2_tiny.in1k_e400")
    assert base_of({"initial_checkpoint": "hf-hub:acme/seq@v1"}) == ("acme/seq", "hf-hub:acme/seq@v1")


@pytest.mark.slow
def test_a_runs_card_has_its_recipe_metrics_and_base(tmp_path):
    model = lstmvision.create_model("sequencer2d_s", num_classes=3, layers=(1, 1, 1, 1), embed_dims=(16, 16, 16, 16),
                                    img_size=32)
    settings = dict(model="sequencer2d_s", pretrained=True, data="/home/me/private/fashion-mnist", epochs=2, lr=0.001,
                    batch_size=8, opt="adamw", seed=7)
    rows = [dict(epoch=0, train_loss=1.5, val_loss=1.2, top1=40.0, top5=90.0, lr=0.001, img_s=50.0),
            dict(epoch=1, train_loss=1.1, val_loss=0.9, top1=61.3333, top5=100.0, lr=0.0001, img_s=52.0)]
    run = _fake_run(tmp_path, model, settings, rows)
    folder = lstmvision.save_for_hf(lstmvision.create_model(run), tmp_path / "export")
    meta, body = _card(folder)
    assert meta["base_model"] == "timm/sequencer2d_s.in1k" and meta["base_model_relation"] == "finetune"
    assert meta["datasets"] == ["zalando-datasets/fashion_mnist"] and meta["license"] == "apache-2.0"
    assert "| 1 | 1.1000 | 0.9000 | 61.33 | 100.00 |" in body  # the last epoch of summary.csv
    assert "| lr | 0.001 |" in body and "| seed | 7 |" in body and "| data | .../fashion-mnist |" in body
    assert "private" not in body  # local paths by their last component only
    assert "starting from sequencer2d_s.in1k" in body


@pytest.mark.slow
def test_card_overrides_and_hub_names(tmp_path):
    model = lstmvision.create_model("sequencer2d_tiny", num_classes=3)
    folder = lstmvision.save_for_hf(model, tmp_path / "m", repo_id="acme/seq-tiny", license="mit",
                                    datasets=["acme/photos"], base_model="acme/base")
    meta, body = _card(folder)
    assert (meta["license"], meta["datasets"], meta["base_model"]) == ("mit", ["acme/photos"], "acme/base")
    assert 'create_model("hf-hub:acme/seq-tiny", pretrained=True)' in body
    assert 'pipeline("image-classification", model="acme/seq-tiny", trust_remote_code=True)' in body


@pytest.mark.slow
def test_existing_folder_is_written_into_and_a_users_readme_is_kept(tmp_path):
    model = lstmvision.create_model("sequencer2d_tiny", num_classes=3)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    lstmvision.save_for_hf(model, folder)
    lstmvision.save_for_hf(model, folder)  # its own card is rewritten without a word
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "model.safetensors").is_file()
    (folder / "README.md").write_text("# my own card\n")
    with pytest.warns(UserWarning, match="was not written by lstmvision: kept"):
        lstmvision.save_for_hf(model, folder)
    assert (folder / "README.md").read_text() == "# my own card\n"


@pytest.mark.slow
def test_a_segmenter_card_names_its_task(tmp_path):
    model = create_segmenter("sequencer2d_tiny", 4, img_size=32, decoder_channels=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = lstmvision.save_for_hf(model, tmp_path / "seg")
    meta, body = _card(folder)
    assert meta["library_name"] == "lstmvision" and meta["pipeline_tag"] == "image-segmentation"
    assert "sequencer" in meta["tags"] and not (folder / "modeling_lstmvision.py").exists()
    assert list(_snippets(body)) == ["lstmvision"]
    code = _snippets(body)["lstmvision"][0]
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0 and "torch.Size([1, 4, 32, 32])" in out.stdout, out.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("library", ["lstmvision", "timm", "transformers"])
def test_card_snippets_run_on_the_saved_folder(tmp_path, monkeypatch, library):
    """Each snippet of the card, as written, in a fresh process in the folder's parent (the card names the folder
    as it was given: here relative, as a user saving into the working directory gives it)."""
    model = lstmvision.create_model("vil2_tiny", num_classes=3, **TINY_VIL)
    monkeypatch.chdir(tmp_path)
    folder = lstmvision.save_for_hf(model, "vil-card", class_names=CLASSES)
    snippets = _snippets(_card(folder)[1])[library]
    assert snippets
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "hf_modules")}
    for code in snippets:
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, f"{code}\n{out.stderr[-3000:]}"
        assert any(name in out.stdout for name in CLASSES) or "values=" in out.stdout, out.stdout


def test_push_to_hf_hub_uploads_the_save_for_hf_folder(monkeypatch):
    uploaded = {}

    class FakeApi:
        def create_repo(self, repo_id, private=False, exist_ok=False):
            uploaded["created"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, commit_message):
            folder = Path(folder_path)
            uploaded.update(files=sorted(p.name for p in folder.iterdir()), card=(folder / "README.md").read_text())
            return f"https://hub.example/{repo_id}/commit/1"

    monkeypatch.setattr(hub.huggingface_hub, "HfApi", FakeApi)
    model = lstmvision.create_model("sequencer2d_tiny", num_classes=3)
    assert lstmvision.push_to_hf_hub(model, "acme/seq", class_names=CLASSES) == "https://hub.example/acme/seq/commit/1"
    assert uploaded["created"] == ("acme/seq", False, True)
    assert uploaded["files"] == ["README.md", "config.json", "model.safetensors", "modeling_lstmvision.py"]
    assert 'create_model("hf-hub:acme/seq", pretrained=True)' in uploaded["card"]


@pytest.mark.slow
def test_card_snippets_run_against_a_hub_repo(tmp_path):
    """With `repo_id`, the card's snippets name `hf-hub:ORG/NAME` / `ORG/NAME`; served by the stand-in hub (the
    folder's files as the repo), each runs as written, trust_remote_code included."""
    model = lstmvision.create_model("vil2_tiny", num_classes=3, **TINY_VIL)
    folder = lstmvision.save_for_hf(model, tmp_path / "vil-card", class_names=CLASSES, repo_id="acme/vil-card")
    snippets = [code for codes in _snippets(_card(folder)[1]).values() for code in codes]
    assert len(snippets) == 4 and all("vil-card" in code for code in snippets)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    with StandInHub() as server:
        for path in folder.iterdir():
            server.add_repo_file("acme/vil-card", path.name, path)
        env.update(HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
        for code in snippets:
            out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=600)
            assert out.returncode == 0, f"{code}\n{out.stderr[-3000:]}"
            assert any(name in out.stdout for name in CLASSES) or "values=" in out.stdout, out.stdout


@pytest.mark.slow
def test_export_format_hf_writes_a_runs_hub_folder(tmp_path, capsys):
    """`lstmvision export --checkpoint RUN --format hf`: the run's card, the transformers files, checked by loading
    the folder back; an existing folder needs --overwrite, the run folder itself is refused."""
    model = lstmvision.create_model("sequencer2d_tiny", num_classes=3, img_size=28)
    settings = dict(model="sequencer2d_tiny", data="/data/fashion-mnist", epochs=1, lr=0.001, batch_size=8, seed=1)
    rows = [dict(epoch=0, train_loss=1.5, val_loss=1.2, top1=40.0, top5=90.0, lr=0.001, img_s=50.0)]
    run = _fake_run(tmp_path, model, settings, rows)
    out = tmp_path / "hub-folder"
    argv = ["export", "--checkpoint", str(run), "--format", "hf", "--output", str(out)]
    assert main(argv) == 0
    assert "ok: loaded back, max |Δ| 0.00e+00" in capsys.readouterr().out
    assert {"README.md", "config.json", "model.safetensors", "modeling_lstmvision.py"} <= {p.name for p in out.iterdir()}
    meta, body = _card(out)
    assert meta["pipeline_tag"] == "image-classification" and "| 0 | 1.5000 | 1.2000 | 40.00 | 90.00 |" in body
    assert main(argv) == 2 and "pass --overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    assert main([*argv[:-1], str(run / "best"), "--overwrite"]) == 2
