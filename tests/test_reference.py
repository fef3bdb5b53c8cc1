"""Numerical parity with the official implementations, through the loading path users take.

Every `*.safetensors` in $LSTMVISION_REFERENCE_DIR (default tests/fixtures/reference, copied from the official implementations) is checked: the equivalent
lstmvision model is built from the official constructor arguments, the official state dict is written to a
checkpoint file and loaded with `create_model(..., pretrained=file)`, and the logits must match within 1e-4.
"""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import REFERENCE_DIR
from official_convert import OFFICIAL_FAMILIES, model_from_official

# Families that must never be skipped: a fixture of these that fails to match is a failure.
REQUIRED_FAMILIES = {
    "official_sequencer2d", "official_vanilla_sequencer",
    "official_vil1", "official_vil2", "official_vil1_released", "official_vil2_released",
}

FIXTURES = sorted(REFERENCE_DIR.glob("*.safetensors"))


def test_reference_dir_has_fixtures():
    assert FIXTURES, f"no reference fixtures in {REFERENCE_DIR} (set LSTMVISION_REFERENCE_DIR)"


def _read_fixture(path):
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    state = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    return meta, tensors["input"], tensors["logits"], state


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_official_parity(path, tmp_path):
    meta, x, logits, state = _read_fixture(path)
    family = meta["family"]
    if family not in OFFICIAL_FAMILIES:
        assert family not in REQUIRED_FAMILIES, f"{family} must be implemented"
        pytest.skip(f"family {family} is not implemented yet")
    checkpoint = tmp_path / "official.pth"
    torch.save({"state_dict": state}, checkpoint)  # how the official training code stores checkpoints
    model = model_from_official(family, json.loads(meta["kwargs"]), pretrained=checkpoint).eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == logits.shape
    err = (out - logits).abs().max().item()
    assert err <= 1e-4, f"{path.name}: max |Δlogit| = {err:.3g}"


@pytest.mark.parametrize("path", FIXTURES[:1], ids=[p.stem for p in FIXTURES[:1]])
def test_parity_through_safetensors(path, tmp_path):
    """The same weights given as a .safetensors file load the same way."""
    meta, x, logits, state = _read_fixture(path)
    if meta["family"] not in OFFICIAL_FAMILIES:
        pytest.skip("family not implemented")
    file = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(file))
    model = model_from_official(meta["family"], json.loads(meta["kwargs"]), pretrained=file).eval()
    with torch.no_grad():
        assert (model(x) - logits).abs().max().item() <= 1e-4
