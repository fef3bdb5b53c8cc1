"""transformers (the [hf] extra) on folders written by `lstmvision.save_for_hf`, offline: AutoModelForImageClassification,
AutoImageProcessor and pipeline("image-classification") agree with lstmvision's model, eval transform and Classifier
for both families, the vanilla Sequencer, a ViL ablation and a training run's export; the folder also loads with
trust_remote_code=True in a process that never imports lstmvision itself; TimmBackbone / AutoBackbone give
forward_intermediates' feature maps, and UperNetForSemanticSegmentation trains on a vil2_tiny backbone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lstmvision
from engine_helpers import write_image_folder
from lstmvision.cli import main

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AutoBackbone,
    AutoImageProcessor,
    AutoModelForImageClassification,
    TimmBackbone,
    TimmBackboneConfig,
    UperNetConfig,
    UperNetForSemanticSegmentation,
    pipeline,
)

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
# the families, the vanilla (1-D) Sequencer and a ViL ablation, each narrow, at 32 px
MODELS = {
    "sequencer2d_tiny": dict(img_size=32),
    "v_sequencer_tiny": dict(img_size=32),
    "vil2_tiny": dict(embed_dim=32, depth=2, img_size=32),
    "vil_tiny_pool_avg": dict(embed_dim=32, depth=2, img_size=32),
}
CLASSES = ["ant", "bee", "cat", "dog", "eel", "fox"]


def _perturbed_head(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Distinct logits per class (a fresh head is zero for some families)."""
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
        head.bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed + 1))
    return model.eval()


def _image(seed: int = 0, size: tuple[int, int] = (45, 38)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (model, folder written by save_for_hf); 'run' is a one-epoch training run's export."""
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for i, (name, kwargs) in enumerate(MODELS.items()):
        model = _perturbed_head(lstmvision.create_model(name, num_classes=len(CLASSES), **kwargs), seed=i)
        model.class_names = CLASSES
        out[name] = model, lstmvision.save_for_hf(model, root / name)
    return out


@pytest.fixture(scope="module")
def run_export(tmp_path_factory):
    """A sequencer2d_tiny run (1 epoch on 18 images at 32 px) and the export of its best/ checkpoint."""
    root = tmp_path_factory.mktemp("run")
    data = write_image_folder(root / "data")
    assert main(["train", "--data", str(data), "--model", "sequencer2d_tiny", "--epochs", "1", "--img-size", "32",
                 "--batch-size", "8", "--workers", "0", "--output", str(root / "runs"), "--experiment", "tiny"]) == 0
    model = lstmvision.create_model(root / "runs" / "tiny").eval()
    return model, lstmvision.save_for_hf(model, root / "tiny-hf")


def _cases(saved, run_export):
    return [*saved.values(), run_export]


@pytest.mark.slow
def test_auto_model_gives_lstmvision_logits(saved, run_export):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for model, folder in _cases(saved, run_export):
        hf = AutoModelForImageClassification.from_pretrained(folder).eval()
        assert type(hf).__name__ == "TimmWrapperForImageClassification"
        with torch.no_grad():
            assert (hf(x).logits - model(x)).abs().max() <= 1e-5, folder.name
        assert list(hf.config.id2label.values()) == list(model.class_names)


@pytest.mark.slow
def test_image_processor_gives_lstmvision_eval_transform(saved, run_export):
    for model, folder in _cases(saved, run_export):
        processor = AutoImageProcessor.from_pretrained(folder)
        image = _image()
        ours = lstmvision.Classifier(model).transform(image).unsqueeze(0)
        theirs = processor(image, return_tensors="pt")["pixel_values"]
        assert theirs.shape == ours.shape and torch.equal(theirs, ours), folder.name


@pytest.mark.slow
def test_pipeline_gives_classifier_top5(saved, run_export):
    for model, folder in _cases(saved, run_export):
        classify = pipeline("image-classification", model=str(folder))
        image = _image(1)
        theirs = classify(image, top_k=5)
        ours = lstmvision.Classifier(model).predict(image, top_k=5).top_k
        assert [t["label"] for t in theirs] == [label for label, _, _ in ours], folder.name
        assert np.allclose([t["score"] for t in theirs], [p for _, _, p in ours], atol=1e-6)


def _fresh(code: str, cwd: Path, block_lstmvision: bool = False) -> subprocess.CompletedProcess:
    """`code` in a new process (offline) that imports nothing of lstmvision itself; with `block_lstmvision`, as if
    lstmvision were not installed."""
    block = textwrap.dedent("""
        import importlib.abc, sys
        class _NotInstalled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "lstmvision" or name.startswith("lstmvision."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, _NotInstalled())
    """) if block_lstmvision else ""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(cwd / "hf_modules")}
    return subprocess.run([sys.executable, "-c", block + textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_trust_remote_code_loads_in_a_process_without_lstmvision_imported(saved, tmp_path):
    model, folder = saved["vil_tiny_pool_avg"]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.save(dict(x=x, ref=model(x)), tmp_path / "ref.pt")
    out = _fresh(f"""
        import json, sys, torch
        from transformers import AutoModelForImageClassification, pipeline
        loaded = torch.load("ref.pt")
        m = AutoModelForImageClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            diff = (m(loaded["x"]).logits - loaded["ref"]).abs().max().item()
        top = pipeline("image-classification", model={str(folder)!r}, trust_remote_code=True)
        print(json.dumps(dict(diff=diff, cls=type(m).__module__, labels=list(m.config.id2label.values()))))
    """, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["diff"] <= 1e-5 and result["labels"] == CLASSES
    assert result["cls"].startswith("transformers_modules.") and result["cls"].endswith("modeling_lstmvision")


@pytest.mark.slow
def test_trust_remote_code_pipeline_gives_a_grayscale_model_one_channel(tmp_path):
    """The pipeline converts images to RGB; the folder's image processor gives a one-channel model ('L') input, as
    lstmvision's Classifier does."""
    model = _perturbed_head(lstmvision.create_model("sequencer2d_tiny", num_classes=3, in_chans=1, img_size=28), 5)
    model.class_names = CLASSES[:3]
    folder = lstmvision.save_for_hf(model, tmp_path / "gray")
    _image(2, (30, 33)).save(tmp_path / "photo.png")
    ours = lstmvision.Classifier(model).predict(str(tmp_path / "photo.png"), top_k=3).top_k
    out = _fresh(f"""
        import json
        from transformers import pipeline
        classify = pipeline("image-classification", model={str(folder)!r}, trust_remote_code=True)
        print(json.dumps(classify("photo.png", top_k=3)))
    """, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    assert [t["label"] for t in theirs] == [label for label, _, _ in ours]
    assert np.allclose([t["score"] for t in theirs], [p for _, _, p in ours], atol=1e-6)


@pytest.mark.slow
def test_trust_remote_code_without_lstmvision_says_pip_install(saved, tmp_path):
    _, folder = saved["vil2_tiny"]
    out = _fresh(f"""
        from transformers import AutoModelForImageClassification
        AutoModelForImageClassification.from_pretrained({str(folder)!r}, trust_remote_code=True)
    """, tmp_path, block_lstmvision=True)
    assert out.returncode != 0 and "pip install lstmvision" in out.stderr.strip().splitlines()[-1]


def test_saved_folder_carries_the_transformers_files(saved):
    _, folder = saved["vil2_tiny"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "timm_wrapper" and config["architecture"] == "vil2_tiny"
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_lstmvision.LstmVisionForImageClassification"
    assert config["image_processor_type"] == "TimmWrapperImageProcessor"  # without remote code
    remote = (folder / "modeling_lstmvision.py").read_text()
    assert remote == (SRC / "lstmvision" / "models" / "hf_remote.py").read_text()
    assert "\nimport lstmvision\n" in remote  # transformers checks it: a missing package is `pip install lstmvision`


# ------------------------------------------------------------------------------------------ backbones
@pytest.mark.parametrize("name,kwargs,indices", [
    ("vil2_tiny", dict(embed_dim=32, depth=4), (0, 1, 2, 3)),
    ("sequencer2d_tiny", {}, (0, 1)),
])
def test_timm_backbone_gives_forward_intermediates(name, kwargs, indices):
    backbone = TimmBackbone(TimmBackboneConfig(backbone=name, out_indices=indices), **kwargs).eval()
    model = lstmvision.create_model(name, **kwargs).eval()
    # the feature model drops what comes after the last feature map (final norm, head)
    assert not model.load_state_dict(backbone._backbone.model.state_dict(), strict=False).unexpected_keys
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        theirs = backbone(x).feature_maps
        ours = model.forward_intermediates(x, indices=list(indices), intermediates_only=True)
    assert len(theirs) == len(ours) == len(indices)
    assert all(torch.equal(a, b) for a, b in zip(theirs, ours))
    assert backbone.channels == [f.shape[1] for f in ours]


def test_auto_backbone_builds_our_names():
    backbone = AutoBackbone.from_config(TimmBackboneConfig(backbone="sequencer2d_tiny", out_indices=(0, 1)))
    maps = backbone(torch.randn(1, 3, 32, 32)).feature_maps
    assert type(backbone).__name__ == "TimmBackbone" and [tuple(m.shape) for m in maps] == [(1, 48, 8, 8),
                                                                                              (1, 96, 4, 4)]


@pytest.mark.slow
def test_upernet_trains_on_a_vil2_tiny_backbone():
    torch.manual_seed(0)
    config = UperNetConfig(backbone_config=TimmBackboneConfig(backbone="vil2_tiny", out_indices=(5, 11, 17, 23)),
                           num_labels=3, hidden_size=32, auxiliary_channels=16)
    model = UperNetForSemanticSegmentation(config).train()
    assert type(model.backbone._backbone.model).__module__ == "lstmvision.models.vil"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    out = model(pixel_values=x, labels=y)
    assert out.logits.shape == (2, 3, 32, 32) and torch.isfinite(out.loss)
    before = model.backbone._backbone.model.patch_embed.proj.weight.detach().clone()
    out.loss.backward()
    opt.step()
    assert not torch.equal(before, model.backbone._backbone.model.patch_embed.proj.weight)
