"""The Python API at its boundary: every wrong argument of `create_model` is one clear ValueError (no
AttributeError, ZeroDivisionError or torch error from deep inside), unknown names get close suggestions, and a
weights file holding arbitrary objects is refused without being unpickled."""
import os
from pathlib import Path

import pytest
import torch

import lstmvision
from lstmvision import create_model
from lstmvision.engine.checkpoint import load_state
from lstmvision.errors import first_line
from lstmvision.weights import WeightsError, read_state_dict


@pytest.mark.parametrize("args, kwargs, needle", [
    ((5,), {}, "model_name must be a model name (str) or a path, got int 5"),
    ((b"sequencer2d_tiny",), {}, "model_name must be"),
    (("sequencer2d_tiny",), dict(in_chans=0), "in_chans must be an int >= 1, got 0"),
    (("sequencer2d_tiny",), dict(in_chans=2.0), "in_chans must be an int >= 1"),
    (("sequencer2d_tiny",), dict(num_classes="10"), "num_classes must be an int >= 0"),
    (("sequencer2d_tiny",), dict(num_classes=-1), "num_classes must be an int >= 0"),
    (("sequencer2d_tiny",), dict(num_classes=True), "num_classes must be an int >= 0"),
    (("sequencer2d_tiny",), dict(pretrained=3), "pretrained must be True/False or a path"),
    (("sequencer2d_tiny",), dict(img_size=0), "img_size=0: Sequencer needs an int or (h, w) pair of at least 8"),
    (("sequencer2d_tiny",), dict(img_size=(32, -1)), "img_size=(32, -1): Sequencer needs an int or (h, w) pair"),
    (("sequencer2d_tiny",), dict(layers=[2, 0]), "layers must be a positive int"),
    (("sequencer2d_tiny",), dict(embed_dims=[64, -64]), "embed_dims must be a positive int"),
    (("sequencer2d_tiny",), dict(mlp_ratios=0), "mlp_ratios must be a positive number"),
    (("vil2_tiny",), dict(embed_dim=-1), "embed_dim must be a positive int, got -1"),
    (("vil2_tiny",), dict(depth=0), "depth must be a positive int, got 0"),
    (("vil2_tiny",), dict(num_heads=0), "num_heads must be a positive int"),
    (("vil2_tiny",), dict(patch_size=1.5), "patch_size must be a positive int"),
    (("timm:resnet18",), dict(num_classes=-2), "num_classes must be an int >= 0"),
])
def test_bad_arguments_are_one_clear_value_error(args, kwargs, needle):
    with pytest.raises(ValueError) as info:
        create_model(*args, **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_zero_classes_is_a_headless_model_as_in_timm():
    model = create_model("sequencer2d_tiny", num_classes=0, img_size=32).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert model.num_classes == 0 and out.shape == (1, model.num_features)


def test_unknown_names_suggest_close_ones_and_timm():
    with pytest.raises(ValueError) as info:
        create_model("sequencer2d_tinny")
    assert "Similar: sequencer2d_tiny," in str(info.value)
    with pytest.raises(ValueError) as info:
        create_model("Sequencer2D_Tiny")  # case
    assert "sequencer2d_tiny" in str(info.value)
    with pytest.raises(ValueError) as info:
        create_model("resnet18")
    assert "timm:resnet18" in str(info.value)
    with pytest.raises(ValueError) as info:
        create_model("resnet18.a1_in1k")
    assert "timm:resnet18.a1_in1k" in str(info.value)
    with pytest.raises(ValueError) as info:
        create_model("no_such_net_at_all")
    assert "timm:no_such" not in str(info.value) and "lstmvision models" in str(info.value)


class _Payload:
    """Runs a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_payload_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    torch.save({"head.fc.weight": torch.zeros(10, 8), "x": _Payload(marker)}, path)
    for load in (lambda: read_state_dict(path), lambda: create_model("sequencer2d_tiny", pretrained=path)):
        with pytest.raises(WeightsError) as info:
            load()
        text = str(info.value)
        assert "\n" not in text and str(path) in text, text
        assert "not plain tensors" in text and "not unpickled for safety" in text and "system" in text, text
        assert "weights_only" not in text and "trust" not in text and "\x1b" not in text, text
    # a training state.pth with a payload: the same refusal, naming the file
    folder = tmp_path / "last"
    folder.mkdir()
    torch.save({"epoch": 1, "x": _Payload(marker)}, folder / "state.pth")
    with pytest.raises(ValueError) as info:
        load_state(folder)
    assert str(folder / "state.pth") in str(info.value) and "weights_only" not in str(info.value)
    assert not marker.exists()  # nothing was run


def test_unknown_argument_still_names_itself():
    with pytest.raises(TypeError) as info:
        lstmvision.create_model("sequencer2d_tiny", no_such_argument=1)
    assert "no_such_argument" in first_line(info.value)
